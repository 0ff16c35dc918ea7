"""Results are data: one JSON file per run in `docs/results/`, and Markdown sections of `docs/RESULTS.md`
regenerated from them. Every record carries the command, commit and config that made it.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from .files import atomic_write

# keys every result file has (other tools read them)
REQUIRED_KEYS = ("dataset", "preset", "model", "seed", "commit", "epochs", "train_seconds", "accuracy_hard",
                 "accuracy_soft", "test_flops_per_image", "params", "latency_ms_batch1", "images_per_s_batch256",
                 "config")


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10)
        # the code must be committed; docs/ is where results are published, so its changes are not the code's
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/",
                                ":(exclude,top)docs"], capture_output=True,
                               text=True, cwd=Path(__file__).parent, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def command_line(argv: list[str] | None = None) -> str:
    """This process's command line as results record it: absolute paths cut to their last part (or made
    relative to the working folder), so no path of this machine is published."""
    def shown(arg: str) -> str:
        key, eq, value = arg.partition("=")
        if eq and os.path.isabs(value):
            return f"{key}={shown_path(value)}"
        return shown_path(arg) if os.path.isabs(arg) else arg

    return " ".join(["multiglance", *(shown(a) for a in (sys.argv[1:] if argv is None else argv))])


def shown_path(path: str | os.PathLike) -> str:
    """`path` as results show it: relative to the working folder, or its last part (no path of this machine)."""
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    try:
        return p.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return p.name


def require_clean(allow_dirty: bool = False) -> None:
    """Results are published from a committed tree only: UserError on uncommitted changes unless allowed."""
    if git_commit().endswith("-dirty") and not allow_dirty:
        from .errors import UserError

        raise UserError("the working tree has uncommitted changes; commit them first so the results name the "
                        "code that made them (or pass --allow-dirty, which marks the JSON as -dirty)")


def write_result(folder: Path, name: str, record: dict[str, Any]) -> Path:
    """Write docs/results/NAME.json with the command line and commit added; checks the required keys."""
    missing = [k for k in REQUIRED_KEYS if k not in record]
    assert not missing, f"result {name} lacks {missing}"
    record = {"command": command_line(), **record}
    record.setdefault("commit", git_commit())
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    text = (json.dumps(record, indent=1, sort_keys=False) + "\n").encode()
    atomic_write(path, lambda f: f.write(text))
    return path


def read_results(folder: Path, pattern: str = "*.json") -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) | {"file": p.name} for p in sorted(Path(folder).glob(pattern))]


def replace_section(markdown: Path, section: str, text: str) -> None:
    """Replace the block between `<!-- BEGIN section -->` and `<!-- END section -->` (appended if absent)."""
    markdown = Path(markdown)
    doc = markdown.read_text() if markdown.exists() else "# Results\n"
    begin, end = f"<!-- BEGIN {section} -->", f"<!-- END {section} -->"
    block = f"{begin}\n{text.strip()}\n{end}"
    if begin in doc and end in doc:
        doc = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, doc, flags=re.S)
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    atomic_write(markdown, lambda f: f.write(doc.encode()))
