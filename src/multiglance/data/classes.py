"""Class folders (`ROOT/SPLIT/CLASS/**/*.jpg`, or a flat `ROOT/CLASS/**/*.jpg`): which images each class has,
whether the class sets of train/ and a test or validation split agree, and a test split for trees without one.

`list_split(tree, split)` is what both class-folder loaders (the in-memory `sources.load_folder` and the
streaming `stream.StreamSplit`) read, so both see the same files, labels, classes and warnings:

- `ROOT/train/CLASS/` with `ROOT/test/CLASS/` (or `val/`): "train" is train/, "test" is test/ (else val/).
- `ROOT/train/CLASS/` alone, or a flat `ROOT/CLASS/` tree (no train/, test/ or val/ folder): "test" is
  `split.holdout(labels, TEST_FRACTION, seed=TEST_SEED)` of all the training images (a seeded, stratified 10%)
  and "train" is the rest, with one warning saying so. The registry then takes "val" from that rest with the
  validation seed (`split.holdout(rest, val_fraction)`, seed 0), so test, val and train never share an image.

`check_class_sets` turns the image counts per class into warnings (an empty class folder, a class a split
lacks) and refuses a split holding classes that train/ lacks, since the label indices would shift.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError
from .archive import Tree
from .split import holdout

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
TEST_FRACTION = 0.1  # trees without test/ or val/: the share of the training images held out for testing
TEST_SEED = 1  # ... chosen with this seed (validation uses split.VAL_SEED = 0 on what remains)
SPLIT_DIRS = ("train/", "test/", "val/")


def natural(name: str) -> list:
    """Sort key that puts 'img_2.jpg' before 'img_10.jpg'."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def class_files(names: Sequence[str]) -> dict[str, dict[str, list[str]]]:
    """{split folder: {class: [image names]}} of the names `SPLIT/CLASS/**`; a class folder that holds files
    but no image maps to []."""
    by_dir: dict[str, dict[str, list[str]]] = {}
    for name in names:
        parts = name.split("/")
        if len(parts) >= 3:
            files = by_dir.setdefault(parts[0], {}).setdefault(parts[1], [])
            if name.lower().endswith(IMAGE_EXTENSIONS):
                files.append(name)
    return by_dir


def check_class_sets(train: dict[str, int], split: dict[str, int] | None, where: str, *, split_name: str = "test",
                     classes: Sequence[str] | None = None, report_train: bool = True) -> list[str]:
    """Warnings (one line each) about the class folders of a tree, given {class: image count} of train/ and
    of the split (None: check train/ alone); `classes`: a fixed label order (CIFAR-10's), else the train/
    folders that hold images, sorted. Refuses (DataError) a split holding classes outside that set: the
    label indices of a model trained on train/ would not match them."""
    known = list(classes) if classes is not None else sorted(c for c, n in train.items() if n)
    notes = []
    if report_train:
        empty = sorted(c for c, n in train.items() if not n)
        if empty:
            notes.append(f"{where}: class folder(s) {', '.join(f'train/{c}/' for c in empty)} hold no images; "
                         "they are left out of the classes (add images or remove the folders)")
        absent = [c for c in known if not train.get(c)] if classes is not None else []
        if absent:
            notes.append(f"{where}: train/ has no images of class(es) {', '.join(absent)}; the model cannot "
                         "learn them")
    if split is None:
        return notes
    extra = sorted(c for c, n in split.items() if n and c not in known)
    if extra:
        raise DataError(f"{where}: {split_name}/ has class folder(s) {', '.join(extra)} that train/ lacks (or holds "
                        f"no images in); the label indices would shift against the classes {known}: add their "
                        "training images, or rename or remove those folders")
    empty = sorted(c for c, n in split.items() if not n)
    if empty:
        notes.append(f"{where}: class folder(s) {', '.join(f'{split_name}/{c}/' for c in empty)} hold no images")
    missing = [c for c in known if not split.get(c)]
    if missing:
        notes.append(f"{where}: {split_name}/ has no images of class(es) {', '.join(missing)}; their accuracy "
                     "cannot be measured (None in per-class accuracy)")
    return notes


def _subfolders(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")) \
        if folder.is_dir() else []


def folders_on_disk(tree: Tree, *, flat: bool = False) -> dict[str, list[str]]:
    """The class folders of a folder tree as they are on disk, empty ones included (a Tree lists only files):
    {split folder: [class folders]}; a flat tree's class folders are listed under "train"."""
    base = Path(tree.path) / tree.prefix
    if not Path(tree.path).is_dir():
        return {}
    if flat:
        return {"train": _subfolders(base)}
    return {s: _subfolders(base / s) for s in ("train", "test", "val") if (base / s).is_dir()}


def flat_root(top: Tree) -> Tree | None:
    """The view of a flat `CLASS/**/*.jpg` tree: `top`, or the folder below a chain of single folders (a zip
    of `photos/CLASS/...`); None if no folder below it holds images."""
    names = top.names()
    prefix = ""
    for _ in range(4):
        below = [n[len(prefix):] for n in names if n.startswith(prefix)]
        dirs = {n.split("/", 1)[0] for n in below if "/" in n}
        loose = [n for n in below if "/" not in n and n.lower().endswith(IMAGE_EXTENSIONS)]
        if len(dirs) != 1 or loose:
            break
        prefix += dirs.pop() + "/"
    if not any(n.startswith(prefix) and "/" in n[len(prefix):] and n.lower().endswith(IMAGE_EXTENSIONS)
               for n in names):
        return None
    if not prefix:
        return top
    classes = {n[len(prefix):].split("/", 1)[0] + "/" for n in names if n.startswith(prefix) and "/" in n[len(prefix):]}
    found = top.find_root(*classes, max_depth=prefix.count("/"))  # the shallowest folder holding them: `prefix`
    return found if found.prefix == top.prefix + prefix else None


@dataclass
class Listing:
    """One split of a class-folder tree, before any pixel is read."""

    tree: Tree  # the view rooted where train/ (or a flat tree's class folders) lies
    files: list[str]  # image names relative to `tree`, by class, then in natural order
    labels: np.ndarray  # (N,) int64
    classes: list[str]
    notes: list[str] = field(default_factory=list)  # warnings for the user, one line each


def list_split(top: Tree, split: str, *, classes: Sequence[str] | None = None, holdout_test: bool = True) -> Listing:
    """The files of split "train" or "test" of a class-folder tree (see the module docstring for the layouts).
    `classes`: a fixed label order (CIFAR-10's), else the train/ folders holding images, sorted.
    `holdout_test`: a tree without test/ or val/ (or a flat one) gets its test split held out from train/;
    False refuses such a tree, as for a published data set."""
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; use 'train' or 'test'")
    hint = "expected ROOT/train/CLASS/*.jpg and ROOT/test/..., or ROOT/CLASS/*.jpg"
    flat = False
    try:
        tree = top.find_root(*SPLIT_DIRS, hint=hint)
    except DataError:
        found = flat_root(top) if holdout_test else None
        if found is None:
            raise
        tree, flat = found, True
    by_dir = {"train": {}} if flat else class_files(tree.names())
    if flat:
        for name in tree.names():
            if "/" in name:
                files = by_dir["train"].setdefault(name.split("/", 1)[0], [])
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    files.append(name)
    for d, folders in folders_on_disk(tree, flat=flat).items():
        for c in folders:
            by_dir.setdefault(d, {}).setdefault(c, [])
    where = tree.where("").rstrip("/:")
    test_dirs = [d for d in ("test", "val") if any(by_dir.get(d, {}).values())]
    held_out = not test_dirs and holdout_test
    dirs = ["train"] if split == "train" or held_out else test_dirs
    if not dirs or not any(by_dir.get(dirs[0], {}).values()):
        want = ["train"] if split == "train" or held_out else ["test", "val"]
        raise DataError(f"{where}: no images in {' or '.join(d + '/CLASS/' for d in want)}; "
                        f"expected ROOT/{want[0]}/CLASS/*.jpg")
    groups = by_dir[dirs[0]]
    counts = {c: len(f) for c, f in by_dir.get("train", groups).items()}
    notes = check_class_sets(counts, None if dirs == ["train"] else {c: len(f) for c, f in groups.items()}, where,
                             split_name=dirs[0], classes=classes, report_train=split == "train" or held_out)
    classes = sorted(c for c, n in counts.items() if n) if classes is None else list(classes)
    names = [sorted(groups.get(c, []), key=natural) for c in classes]  # per class, in file order
    files = [n for per_class in names for n in per_class]
    labels = np.asarray([label for label, per_class in enumerate(names) for _ in per_class], np.int64)
    if held_out:
        rest, test = holdout(labels, TEST_FRACTION, seed=TEST_SEED)
        source = "its class folders" if flat else "train/"
        what = " (a flat ROOT/CLASS/ tree)" if flat else ""
        notes.append(f"no test/ split in {where}{what}: testing on a seeded {TEST_FRACTION:.0%} of {source} "
                     f"({len(test)} images), held out from training")
        keep = (test if split == "test" else rest).numpy()
        files, labels = [files[i] for i in keep], labels[keep]
        if split == "test":
            missing = [c for i, c in enumerate(classes) if not (labels == i).any()]
            if missing:
                notes.append(f"{where}: the held-out test split has no images of class(es) {', '.join(missing)} "
                             "(too few images); their accuracy cannot be measured (None in per-class accuracy)")
    return Listing(tree, files, labels, classes, notes)
