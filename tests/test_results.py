"""What a reviewer is promised about `docs/`: every published result JSON was made from a clean commit, selected
on the validation split, and says how many images it trained and validated on; no page or JSON names a path of
the machine that made it."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
RESULTS = sorted((DOCS / "results").rglob("*.json"))


def records(d: dict) -> list[dict]:
    """The trained results in one JSON: the file itself, or its nested per-model records (large-scenes)."""
    nested = [v for v in d.values() if isinstance(v, dict) and "accuracy_hard" in v]
    return nested or [d]


@pytest.mark.parametrize("path", RESULTS, ids=[str(p.relative_to(DOCS / "results")) for p in RESULTS])
def test_published_result_is_clean_and_validation_selected(path: Path) -> None:
    d = json.loads(path.read_text())
    assert not d["commit"].endswith("-dirty") and re.fullmatch(r"[0-9a-f]{7,40}", d["commit"]), d["commit"]
    assert d["selection"] == "val"
    for r in records(d):
        assert r["val_images"] > 0 and r["train_images"] > 0, path.name


def test_docs_name_no_machine_path() -> None:
    machine = re.compile(r"(?<![\w.])/(work|home|root|tmp|Users)/")
    offenders = [str(p.relative_to(DOCS)) for p in DOCS.rglob("*") if p.suffix in (".md", ".json")
                 and machine.search(p.read_text())]
    assert not offenders, offenders
