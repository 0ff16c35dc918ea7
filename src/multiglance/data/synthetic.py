"""Cluttered digits: the embedded default data set, built from scikit-learn's bundled 8x8 digits.

Each canvas holds one digit, enlarged to 16x16, at a random place on a 48x48 black canvas, plus a few
pieces of clutter (random 6x6 crops of other enlarged digits). The object sits in one part of the
image, so a model that looks at the right patch wins. Deterministic by seed; no download. Training
canvases use only the training digits and test canvases only the held-out ones; validation canvases use a
held-out 10% of the training digits, which training canvases never use.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import Split
from .split import source_indices

CANVAS, DIGIT, CLUTTER_SIZE, N_CLUTTER = 48, 16, 6, 4
N_TRAIN_DIGITS = 1400  # of scikit-learn's 1797; the rest are held out for the test canvases
SIZES = {"train": 6000, "val": 1000, "test": 1000}
SPLIT_STREAM = {"train": 0, "test": 1, "val": 2}  # the generator's stream per split


def _source_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The split's source digits, enlarged: (n, 16, 16) uint8 and (n,) labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    idx = order[N_TRAIN_DIGITS:] if split == "test" else order[:N_TRAIN_DIGITS]
    if split != "test":  # validation canvases use held-out training digits that training canvases never do
        idx = idx[source_indices(digits.target[idx], split)]
    small = torch.from_numpy(digits.images[idx] / 16.0).float()[:, None]  # (n, 1, 8, 8) in [0, 1]
    big = F.interpolate(small, size=(DIGIT, DIGIT), mode="bilinear", align_corners=False)  # (n, 1, 16, 16)
    return (big[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy(), digits.target[idx].astype(np.int64)


def _paste(canvas: np.ndarray, pieces: np.ndarray, y: np.ndarray, x: np.ndarray) -> None:
    """canvas[n, y[n]:y[n]+h, x[n]:x[n]+w] = max(canvas, pieces[n]) for all n at once (no Python loop)."""
    n, h, w = pieces.shape
    rows = y[:, None, None] + np.arange(h)[None, :, None]  # (n, h, 1)
    cols = x[:, None, None] + np.arange(w)[None, None, :]  # (n, 1, w)
    idx = np.arange(n)[:, None, None]
    canvas[idx, rows, cols] = np.maximum(canvas[idx, rows, cols], pieces)


def make_cluttered_digits(split: str, n: int | None = None, seed: int = 0) -> Split:
    """`n` canvases (default 6000 train / 1000 test) of 1x48x48 uint8 with the digit's box."""
    n = SIZES[split] if n is None else n
    digits, labels = _source_digits(split)
    rng = np.random.default_rng([seed, SPLIT_STREAM[split]])
    pick = rng.integers(0, len(digits), n)
    canvas = np.zeros((n, CANVAS, CANVAS), np.uint8)
    for _ in range(N_CLUTTER):  # clutter first, the digit drawn over it
        src = digits[rng.integers(0, len(digits), n)]
        cy, cx = rng.integers(0, DIGIT - CLUTTER_SIZE + 1, (2, n))
        rows = cy[:, None, None] + np.arange(CLUTTER_SIZE)[None, :, None]
        cols = cx[:, None, None] + np.arange(CLUTTER_SIZE)[None, None, :]
        crops = src[np.arange(n)[:, None, None], rows, cols]  # (n, 6, 6)
        _paste(canvas, crops, *rng.integers(0, CANVAS - CLUTTER_SIZE + 1, (2, n)))
    y, x = rng.integers(0, CANVAS - DIGIT + 1, (2, n))
    _paste(canvas, digits[pick], y, x)
    boxes = np.stack([x, y, x + DIGIT, y + DIGIT], axis=1)
    return Split(
        images=torch.from_numpy(canvas)[:, None],  # (n, 1, 48, 48)
        labels=torch.from_numpy(labels[pick]),
        classes=[str(d) for d in range(10)],
        boxes=torch.from_numpy(boxes).long(),
    )


def load_cluttered_digits(root, split: str, **options) -> Split:
    """Registry entry: `root` is ignored (the data is generated)."""
    return make_cluttered_digits(split, **options)
