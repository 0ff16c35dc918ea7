"""Name -> loader. `load_split("cifar10", root, "train")` is how the rest of the package gets data.

Splits are "train", "val" and "test". "test" is the labelled evaluation split (Tiny ImageNet's `val/`, a
class-folder tree's `test/` or `val/`; for a tree with neither, or a flat one, a seeded 10% held out of its
training images by the loader, `classes.list_split`), read once per published number. "val" is held out from
the training images (`split.holdout`: a seeded, stratified `val_fraction`, 10% by default) and "train" is the rest, so
model selection never sees a test image; generated data sets build their "val" canvases from held-out source
images instead (their loaders take split="val" themselves). A `root` of None means the data set's default place:
the embedded generators need none, the real data sets are looked for in `$MULTIGLANCE_DATA`, then
`../shared/data` and `shared/data` (the project's read-only copies).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from ..errors import DataError
from .split import VAL_FRACTION, holdout

# name -> (loader module attribute, default file or folder under a data root, or None when generated)
DATASETS: dict[str, tuple[str, str | None]] = {
    "cluttered-digits": ("synthetic:load_cluttered_digits", None),
    "cifar10": ("sources:load_cifar10", "cifar10/cifar10-jpeg.zip"),
    "tiny-imagenet": ("sources:load_tiny_imagenet", "tiny-imagenet-200.zip"),
    "mnist": ("sources:load_mnist", "mnist"),
    "folder": ("sources:load_folder", None),
    "folder-stream": ("stream:load_folder_stream", None),  # decoded batch by batch: options size, width, channels
    "mnist-translated-60": ("canvases:load_mnist_translated_60", "mnist"),
    "mnist-cluttered-60": ("canvases:load_mnist_cluttered_60", "mnist"),
    "mnist-cluttered-100": ("canvases:load_mnist_cluttered_100", "mnist"),
    "megapixel-mnist": ("megapixel:load_megapixel_mnist", "mnist"),
    "megapixel-mnist-easy": ("megapixel:load_megapixel_mnist_easy", "mnist"),
    "scenes-cifar10-512": ("scenes:load_scenes_cifar10_512", "cifar10/cifar10-jpeg.zip"),  # + ../tiny-imagenet-200.zip
    "scenes-cifar10-256": ("scenes:load_scenes_cifar10_256", "cifar10/cifar10-jpeg.zip"),  # curriculum steps
    "scenes-cifar10-128": ("scenes:load_scenes_cifar10_128", "cifar10/cifar10-jpeg.zip"),
}


def data_roots() -> list[Path]:
    roots = [os.environ.get("MULTIGLANCE_DATA"), "../shared/data", "shared/data"]
    return [Path(r) for r in roots if r]


def default_root(name: str) -> Path | None:
    """The first existing default location of data set `name`, or None if it is generated or absent."""
    rel = DATASETS[name][1]
    if rel is None:
        return None
    for base in data_roots():
        if (base / rel).exists():
            return base / rel
    return None


def reads_files(name: str) -> bool:
    """Whether data set `name` reads a file or folder (`--data`); the embedded generators read none."""
    return name not in DATASETS or DATASETS[name][1] is not None or name in ("folder", "folder-stream")


def is_generated_canvases(name: str) -> bool:
    """True for the MNIST canvas data sets, whose loaders draw `n` canvases with a `seed` (any number, any seed)."""
    return name in DATASETS and DATASETS[name][0].startswith("canvases:")


def _loader(name: str) -> Callable:
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of: {', '.join(DATASETS)}")
    module, func = DATASETS[name][0].split(":")
    import importlib

    return getattr(importlib.import_module(f"{__package__}.{module}"), func)


# generated data sets: their loaders make "val" canvases from held-out source images themselves
OWN_VALIDATION = ("synthetic:", "canvases:", "megapixel:", "scenes:")


def has_own_validation(name: str) -> bool:
    return name in DATASETS and DATASETS[name][0].startswith(OWN_VALIDATION)


def load_split(name: str, root: str | os.PathLike | None, split: str, *, val_fraction: float = VAL_FRACTION,
               **options):
    """Load split "train", "val" or "test" of data set `name` (a `Split`, or a lazily decoded split)."""
    if split not in ("train", "val", "test"):
        raise DataError(f"unknown split {split!r}; use 'train', 'val' or 'test'")
    loader = _loader(name)
    if root is None and DATASETS[name][1] is not None:
        root = default_root(name)
        if root is None:
            where = " or ".join(str(b / DATASETS[name][1]) for b in data_roots())
            raise DataError(f"data set {name!r} not found at {where}; pass --data PATH to where it is")
    if root is not None and not Path(root).exists():
        raise DataError(f"data path {str(root)!r} does not exist; check --data")
    if split == "test" or has_own_validation(name):
        return loader(root, split, **options)
    full = loader(root, "train", **options)
    train_idx, val_idx = holdout(full.labels, val_fraction)
    return full.subset(train_idx if split == "train" else val_idx)
