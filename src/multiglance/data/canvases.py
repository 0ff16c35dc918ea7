"""Translated and cluttered MNIST, the standard glimpse benchmark (Mnih et al. 2014; DeepMind's mnist-cluttered).

    mnist-translated-60   one 28x28 digit at a random place on a 60x60 black canvas
    mnist-cluttered-60    the same plus 4 pieces of clutter
    mnist-cluttered-100   a 100x100 canvas with 8 pieces of clutter

A piece of clutter is a random 8x8 crop of another random digit of the same split, at a random place; pieces
and the digit are added and the sum clipped to 255. The digit always lies fully inside the canvas, and its box
(x0, y0, x1, y1) comes with the split. Training canvases use only MNIST's train digits, test canvases only its
test digits. Deterministic by `seed`; generated in whole-batch numpy ops, no loop per image.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from . import Split
from .split import source_indices

DIGIT = 28
SIZES = {"train": 60000, "val": 5000, "test": 10000}
CHUNK = 10000  # canvases generated per batch of numpy ops (bounds the temporary int16 memory)


def _add(canvas: np.ndarray, pieces: np.ndarray, y: np.ndarray, x: np.ndarray) -> None:
    """canvas[n, y[n]:y[n]+h, x[n]:x[n]+w] += pieces[n] for all n at once (int16 canvas, clipped later)."""
    n, h, w = pieces.shape
    rows = y[:, None, None] + np.arange(h)[None, :, None]  # (n, h, 1)
    cols = x[:, None, None] + np.arange(w)[None, None, :]  # (n, 1, w)
    canvas[np.arange(n)[:, None, None], rows, cols] += pieces


def make_canvases(digits: np.ndarray, labels: np.ndarray, *, n: int, canvas: int, clutter: int,
                  clutter_size: int = 8, seed: int = 0) -> Split:
    """`n` canvases (n, 1, canvas, canvas) uint8 from source `digits` (m, h, w) uint8 and `labels` (m,).

    Each canvas: `clutter` random `clutter_size` crops of random source digits at random places, then one random
    source digit at a random place fully inside, all added and clipped to [0, 255]. Same arguments, same canvases.
    """
    m, h, w = digits.shape
    if canvas < max(h, w, clutter_size):
        raise ValueError(f"a {canvas}x{canvas} canvas cannot hold {h}x{w} digits")
    rng = np.random.default_rng(seed)
    images = np.empty((n, canvas, canvas), np.uint8)
    pick = rng.integers(0, m, n)  # (n,) the digit of each canvas
    y, x = rng.integers(0, canvas - h + 1, n), rng.integers(0, canvas - w + 1, n)  # (n,) its top-left corner
    for start in range(0, n, CHUNK):
        part = slice(start, min(start + CHUNK, n))
        b = part.stop - part.start
        sheet = np.zeros((b, canvas, canvas), np.int16)  # (b, S, S), sums before clipping
        for _ in range(clutter):
            src = digits[rng.integers(0, m, b)]  # (b, h, w)
            cy, cx = rng.integers(0, h - clutter_size + 1, b), rng.integers(0, w - clutter_size + 1, b)
            rows = cy[:, None, None] + np.arange(clutter_size)[None, :, None]
            cols = cx[:, None, None] + np.arange(clutter_size)[None, None, :]
            crops = src[np.arange(b)[:, None, None], rows, cols]  # (b, c, c)
            _add(sheet, crops.astype(np.int16), *rng.integers(0, canvas - clutter_size + 1, (2, b)))
        _add(sheet, digits[pick[part]].astype(np.int16), y[part], x[part])
        images[part] = np.clip(sheet, 0, 255)
    boxes = np.stack([x, y, x + w, y + h], axis=1)  # (n, 4)
    return Split(images=torch.from_numpy(images)[:, None],  # (n, 1, S, S)
                 labels=torch.from_numpy(labels[pick].astype(np.int64)),
                 classes=[str(d) for d in range(10)], boxes=torch.from_numpy(boxes).long())


def _mnist_canvases(root: str | os.PathLike, split: str, canvas: int, clutter: int, *, n: int | None = None,
                    seed: int = 0, **_ignored) -> Split:
    from .sources import load_mnist

    source = load_mnist(root, "test" if split == "test" else "train")  # train, val and test never share a digit
    digits, labels = source.images[:, 0].numpy(), source.labels.numpy()
    if split != "test":  # validation canvases: a held-out 10% of MNIST's training digits
        keep = source_indices(labels, split)
        digits, labels = digits[keep], labels[keep]
    n = SIZES[split] if n is None else n
    stream = {"train": 0, "test": 1, "val": 2}[split]
    return make_canvases(digits, labels, n=n, canvas=canvas, clutter=clutter,
                         seed=(seed * 1000003 + canvas * 31 + clutter) * 3 + stream)


def load_mnist_translated_60(root, split: str, **options) -> Split:
    """60x60, one digit, no clutter. Options: n (canvases), seed."""
    return _mnist_canvases(root, split, 60, 0, **options)


def load_mnist_cluttered_60(root, split: str, **options) -> Split:
    """60x60, one digit, 4 pieces of 8x8 clutter. Options: n (canvases), seed."""
    return _mnist_canvases(root, split, 60, 4, **options)


def load_mnist_cluttered_100(root, split: str, **options) -> Split:
    """100x100, one digit, 8 pieces of 8x8 clutter. Options: n (canvases), seed."""
    return _mnist_canvases(root, split, 100, 8, **options)
