"""Shipped weights: the headline runs re-checked in seconds, without training.

    multiglance weights                                       # the shipped files, their published numbers
    multiglance eval --weights cifar10__one-s2__seed0         # re-derive that run's published test accuracy
    multiglance weights --export runs/paper/cifar10__one-s2__seed0 --result docs/results/cifar10__one-s2__seed0.json

A weights file `docs/weights/NAME.pt` is `{format, name, model, config, classes, published}`: the state dict
(float32), the run's resolved config with the inference options of the published number applied, the class
names, and `published` (the result JSON's file, commit, split and accuracy). `docs/weights/SHA256SUMS` lists
every file's SHA-256 (`sha256sum -c` reads it); a file is loaded only after its digest matched the list, and
with `torch.load(weights_only=True)`, so it cannot run code.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from .config import RunConfig, apply_inference_overrides, from_dict, to_dict
from .errors import CheckpointError, UserError
from .files import atomic_write
from .runs import _first_line, build_trained, load_classes, load_run

FORMAT = "multiglance-weights-1"
SUMS = "SHA256SUMS"
SHIPPED = Path(__file__).resolve().parents[2] / "docs" / "weights"  # the repository's docs/weights


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_sums(folder: Path) -> dict[str, str]:
    """{file name: sha256} from `folder/SHA256SUMS` (the `sha256sum` format); {} when there is none."""
    path = Path(folder) / SUMS
    if not path.is_file():
        return {}
    sums = {}
    for line in path.read_text().splitlines():
        digest, _, name = line.strip().partition("  ")
        if digest and name:
            sums[name] = digest
    return sums


def write_sums(folder: Path, sums: dict[str, str]) -> None:
    text = "".join(f"{d}  {n}\n" for n, d in sorted(sums.items())).encode()
    atomic_write(Path(folder) / SUMS, lambda f: f.write(text))


def resolve(name_or_path: str, folder: Path = SHIPPED) -> Path:
    """A shipped name (`cifar10__one-s2__seed0`) or a path to a .pt file."""
    path = Path(name_or_path)
    if path.suffix == ".pt" and path.is_file():
        return path
    shipped = Path(folder) / f"{name_or_path}.pt"
    if shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in Path(folder).glob("*.pt"))) or "none"
    raise UserError(f"no weights named {name_or_path!r}; shipped: {names} (or pass a .pt file)")


def load_weights(name_or_path: str, folder: Path = SHIPPED) -> tuple[torch.nn.Module, RunConfig, dict[str, Any]]:
    """The model (eval mode), its config and the file's record (`published`, `classes`, `name`). The file's
    SHA-256 must match the SHA256SUMS beside it; a file with no list beside it is loaded unchecked only if it
    is not in a folder of shipped weights."""
    path = resolve(name_or_path, folder)
    sums = read_sums(path.parent)
    if sums or path.parent.resolve() == Path(folder).resolve():
        want = sums.get(path.name)
        if want is None:
            raise CheckpointError(f"{str(path)!r} is not listed in {SUMS} beside it; add it with "
                                  "`multiglance weights --export` or remove it")
        if sha256(path) != want:
            raise CheckpointError(f"{str(path)!r} does not match its SHA-256 in {SUMS} (changed or damaged); "
                                  "restore it from git (`git checkout -- docs/weights`)")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - damaged bytes raise many types
        raise CheckpointError(f"{str(path)!r} is not a readable weights file ({_first_line(e, 100)})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a multiglance weights file; for a run folder use "
                              "`multiglance eval RUN`")
    cfg = from_dict(record["config"])
    return build_trained(cfg, record, f"the weights in {str(path)!r}").eval(), cfg, record


def export(run_dir: str | Path, result: str | Path, *, name: str | None = None, overrides: list[str] = (),
           folder: Path = SHIPPED) -> Path:
    """Write `folder/NAME.pt` from a finished run and its published result JSON, and list it in SHA256SUMS.
    `overrides` are the inference options of the published number (as given to `eval --set`)."""
    model, cfg = load_run(run_dir)
    apply_inference_overrides(cfg, list(overrides))
    cfg.data.root = None  # the data's place on the machine that trained it is not part of the model
    try:
        rec = json.loads(Path(result).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read the result JSON {str(result)!r} ({e}); pass the run's docs/results file") \
            from None
    if "-dirty" in str(rec.get("commit", "")) or rec.get("selection") != "val":
        raise UserError(f"{str(result)!r} is not a publishable result (commit {rec.get('commit')!r}, selection "
                        f"{rec.get('selection')!r}); ship weights of clean, validation-selected runs only")
    name = name or Path(result).stem
    published = {"result": Path(result).name, "commit": rec["commit"], "split": "test",
                 "accuracy_hard": rec["accuracy_hard"], "test_images": rec.get("test_images"),
                 "overrides": list(overrides)}
    record = {"format": FORMAT, "name": name,
              "model": {k: v.detach().float().contiguous() if v.is_floating_point() else v
                        for k, v in model.state_dict().items()},
              "config": to_dict(cfg), "classes": load_classes(Path(run_dir)), "published": published}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.pt"
    atomic_write(path, lambda f: torch.save(record, f))
    write_sums(folder, read_sums(folder) | {path.name: sha256(path)})
    return path


def listing(folder: Path = SHIPPED) -> list[dict[str, Any]]:
    """One row per shipped file: name, size, whether its digest matches, the published number."""
    sums, rows = read_sums(folder), []
    for path in sorted(Path(folder).glob("*.pt")):
        ok = sums.get(path.name) == sha256(path)
        pub = torch.load(path, map_location="cpu", weights_only=True).get("published", {}) if ok else {}
        rows.append({"name": path.stem, "kb": round(path.stat().st_size / 1024), "sha256_ok": ok,
                     "accuracy_hard": pub.get("accuracy_hard"), "result": pub.get("result")})
    return rows
