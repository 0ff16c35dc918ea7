"""Megapixel MNIST (Katharopoulos & Fleuret 2019, "attention sampling"), stored sparsely, rendered per batch.

A canvas of S x S (1500, or 500 for the easy variant) holds 5 MNIST digits of 28x28: 3 of the label's class and
2 drawn from the images of the other classes; their places are uniform and never overlap (two digits overlap
when both their row and column offsets differ by less than 28). The hard variant also has 50 placements of
50 fixed 28x28 "scribble" patterns (straight lines), uniform in [28, S-28) per axis. Writing order follows
ATS's generator (github idiap/attention-sampling, scripts/make_mnist.py, also copied by IPS, github
benbergner/ips, data/megapixel_mnist/make_mnist.py): each 28x28 block is *assigned* (not max-ed), the noise
first, then the digits, so a digit's block erases the noise under it, and a later noise block erases an
earlier one. (The issue text says "noise after the digits"; with block assignment that would blank whole
digits, so we keep ATS's order.) As in ATS the noise patterns are drawn from the split's own seed.

Training canvases use only MNIST's training split, test canvases only its test split, and validation canvases
a held-out 10% of MNIST's training digits that training canvases never use (`split.source_indices`). Nothing
dense is kept:
a `MegapixelSplit` holds the digits' pixels (N, 5, 28, 28), their places, the noise placements and patterns
(a few MB for 5000 images), and `render(index)` draws a batch of canvases with 5 + 50 whole-batch writes.

    split = make_megapixel("train", size=1500)          # 5000 canvases, sparse
    x = split.render(torch.arange(16))                  # (16, 1, 1500, 1500) uint8
    split.save("mm.pt"); MegapixelSplit.load("mm.pt")   # round trip, weights-only safe
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..files import atomic_write

DIGIT, DIGITS_PER_IMAGE, MAJORITY = 28, 5, 3
SIZES = {"train": 5000, "val": 500, "test": 1000}
SPLIT_STREAM = {"train": 0, "test": 1, "val": 2}  # the generator's random stream per split
VERSION = 2  # of the generator and its cache files: bump whenever a canvas could change
CLASSES = [str(d) for d in range(10)]
PIXEL_STD = 0.3081  # MNIST's pixel std: the scale both glances' inputs are divided by


@dataclass
class MegapixelSplit:
    """Sparse megapixel MNIST: everything needed to render N canvases of size x size, and nothing dense."""

    size: int  # canvas side S
    labels: torch.Tensor  # (N,) int64: the majority class
    digits: torch.Tensor  # (N, 5, 28, 28) uint8: the five digits' pixels
    digit_labels: torch.Tensor  # (N, 5) int64: their MNIST classes (the first 3 are the label)
    digit_index: torch.Tensor  # (N, 5) int64: their index in the MNIST split they came from
    positions: torch.Tensor  # (N, 5, 2) int64: (row, col) of each digit's top-left corner
    noise: torch.Tensor  # (M, 28, 28) uint8: the fixed scribble patterns (M = 0 without noise)
    noise_positions: torch.Tensor  # (N, n, 2) int64: (row, col) of each noise placement
    noise_patterns: torch.Tensor  # (N, n) int64: which pattern each placement writes
    source: str = "train"  # the MNIST split the digits came from
    classes: tuple[str, ...] = tuple(CLASSES)

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1, self.size, self.size)

    def boxes(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """(b, 5, 4) digit boxes (x0, y0, x1, y1), exclusive end, in canvas pixels."""
        pos = self.positions if index is None else self.positions[index]  # (b, 5, 2)
        y, x = pos[..., 0], pos[..., 1]
        return torch.stack([x, y, x + DIGIT, y + DIGIT], dim=-1)

    def render(self, index: torch.Tensor | slice | int) -> torch.Tensor:
        """Canvases `index` as (b, 1, S, S) uint8: noise blocks first, then the digit blocks (assignment)."""
        index = torch.as_tensor(range(len(self))[index] if isinstance(index, slice) else index).reshape(-1)
        b = index.shape[0]
        canvas = torch.zeros(b, self.size, self.size, dtype=torch.uint8)  # (b, S, S)
        batch = torch.arange(b)[:, None, None]  # (b, 1, 1)
        offsets = torch.arange(DIGIT)
        noise_pos, patterns = self.noise_positions[index], self.noise_patterns[index]  # (b, n, 2), (b, n)
        for j in range(noise_pos.shape[1]):  # one whole-batch write per placement keeps ATS's write order
            rows = noise_pos[:, j, 0, None, None] + offsets[None, :, None]  # (b, 28, 1)
            cols = noise_pos[:, j, 1, None, None] + offsets[None, None, :]  # (b, 1, 28)
            canvas[batch, rows, cols] = self.noise[patterns[:, j]]  # (b, 28, 28)
        pos, digits = self.positions[index], self.digits[index]  # (b, 5, 2), (b, 5, 28, 28)
        for j in range(DIGITS_PER_IMAGE):
            rows = pos[:, j, 0, None, None] + offsets[None, :, None]
            cols = pos[:, j, 1, None, None] + offsets[None, None, :]
            canvas[batch, rows, cols] = digits[:, j]
        return canvas[:, None]  # (b, 1, S, S)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (1, self.size, self.size)

    @property
    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed normalisation (mean 0, MNIST's pixel std): the canvases' own statistics (mean ~0.003, std ~0.04)
        would blow every inked pixel up to 25-60; MNIST's std keeps digits near 3 in patches and thumbnails."""
        return torch.zeros(1), torch.full((1,), PIXEL_STD)

    def take(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Canvases `index` rendered, (b, 1, S, S) uint8, and (b,) True: the interface of every split."""
        return self.render(index), torch.ones(torch.as_tensor(index).reshape(-1).shape[0], dtype=torch.bool)

    def subset(self, index: torch.Tensor) -> "MegapixelSplit":
        per_image = ("labels", "digits", "digit_labels", "digit_index", "positions", "noise_positions",
                     "noise_patterns")
        return MegapixelSplit(**{f.name: getattr(self, f.name)[index] if f.name in per_image
                                 else getattr(self, f.name) for f in fields(self)})

    def nbytes(self) -> int:
        """Bytes this sparse split holds (the dense one would hold N * S * S)."""
        return sum(v.numel() * v.element_size() for v in vars(self).values() if isinstance(v, torch.Tensor))

    # ---- storage ----------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        state = {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}
        atomic_write(Path(path), lambda f: torch.save({"format": "megapixel-mnist-1", **state}, f))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MegapixelSplit":
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001  (any unreadable file is one clear error)
            raise DataError(f"{str(path)!r} is not a readable megapixel MNIST file ({type(e).__name__}); "
                            "delete it to rebuild it") from None
        if not isinstance(state, dict) or state.pop("format", None) != "megapixel-mnist-1":
            raise DataError(f"{str(path)!r} is not a megapixel MNIST file; delete it to rebuild it")
        state["classes"] = tuple(state["classes"])
        return cls(**state)


# ---- the generator ------------------------------------------------------------------------------------------
def noise_patterns(rng: np.random.Generator, n: int) -> np.ndarray:
    """n scribbles of 28x28 uint8: a straight line from a corner at a random slope, united with another
    pattern's line mirrored left-right or upside down at random, at intensity 0.8-1.0 (ATS's recipe)."""
    if n == 0:
        return np.zeros((0, DIGIT, DIGIT), np.uint8)
    slope = np.tan(rng.random(n) * np.pi / 2.5)  # (n,) angles in [0, 72) degrees
    t = np.linspace(0, 1, 2 * DIGIT)  # (56,)
    run = np.minimum(27.49, 27.49 / slope)[:, None] * t  # (n, 56) along one axis
    rise = slope[:, None] * run  # (n, 56) along the other
    lines = np.zeros((n, DIGIT, DIGIT), bool)
    lines[np.arange(n)[:, None], np.round(run).astype(int), np.round(rise).astype(int)] = True
    other = lines[rng.permutation(n)]
    flip_lr, flip_ud = rng.random(n) < 1 / 3, rng.random(n) < 1 / 3
    other[flip_lr] = other[flip_lr][:, :, ::-1]
    other[flip_ud] = other[flip_ud][:, ::-1, :]
    value = (lines | other) * (0.8 + 0.2 * rng.random((n, DIGIT, DIGIT)))
    return np.floor(255 * value).astype(np.uint8)


def digit_positions(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """(n, 5, 2) top-left corners, uniform in [0, size-28], no two digits overlapping (rejection, per batch)."""
    pos = np.zeros((n, DIGITS_PER_IMAGE, 2), np.int64)
    for j in range(DIGITS_PER_IMAGE):
        todo = np.arange(n)
        while todo.size:
            pos[todo, j] = np.round(rng.random((todo.size, 2)) * (size - DIGIT)).astype(np.int64)
            if j == 0:
                break
            close = np.abs(pos[todo, :j] - pos[todo, j, None]) < DIGIT  # (t, j, 2)
            todo = todo[(close[..., 0] & close[..., 1]).any(-1)]
    return pos


def pick_digits(rng: np.random.Generator, labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n,) majority labels and (n, 5) indices into `labels`: 3 of the label's class (with replacement, as
    ATS), then 2 drawn uniformly from the images of all other classes."""
    target = rng.integers(0, 10, n)
    by_class = [np.flatnonzero(labels == c) for c in range(10)]
    counts = np.array([len(b) for b in by_class])
    if (counts == 0).any():
        raise DataError("the MNIST split lacks some classes; point --data at the 4 official MNIST files")
    pos_rank = (rng.random((n, MAJORITY)) * counts[target][:, None]).astype(np.int64)  # (n, 3)
    flat = np.concatenate(by_class)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    positives = flat[starts[target][:, None] + pos_rank]  # (n, 3)
    negatives = rng.integers(0, len(labels), (n, DIGITS_PER_IMAGE - MAJORITY))
    while (bad := labels[negatives] == target[:, None]).any():  # redraw those of the label's class
        negatives[bad] = rng.integers(0, len(labels), int(bad.sum()))
    return target, np.concatenate([positives, negatives], axis=1)


def make_megapixel(split: str, *, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
                   n: int | None = None, size: int = 1500, n_noise: int = 50, seed: int = 0) -> MegapixelSplit:
    """Generate `n` sparse canvases (default 5000 train / 1000 test) from MNIST `images` (N, 28, 28) uint8
    and their `labels`, which must come from MNIST's `split`. Deterministic in (seed, split)."""
    if size < 3 * DIGIT:
        raise DataError(f"a megapixel canvas must be at least {3 * DIGIT} pixels wide, got {size}")
    n = SIZES[split] if n is None else n
    images = torch.as_tensor(np.asarray(images)).reshape(-1, DIGIT, DIGIT)
    labels = np.asarray(labels).astype(np.int64)
    rng = np.random.default_rng([seed, SPLIT_STREAM[split]])
    target, index = pick_digits(rng, labels, n)  # (n,), (n, 5)
    pos = digit_positions(rng, n, size)  # (n, 5, 2)
    patterns = noise_patterns(rng, n_noise)  # (M, 28, 28)
    noise_pos = (rng.random((n, n_noise, 2)) * (size - 2 * DIGIT) + DIGIT).astype(np.int64)  # (n, M, 2)
    noise_idx = (rng.random((n, n_noise)) * n_noise).astype(np.int64)  # (n, M)
    index_t = torch.from_numpy(index)
    return MegapixelSplit(size=size, labels=torch.from_numpy(target), digits=images[index_t].contiguous(),
                          digit_labels=torch.from_numpy(labels[index]), digit_index=index_t,
                          positions=torch.from_numpy(pos), noise=torch.from_numpy(patterns),
                          noise_positions=torch.from_numpy(noise_pos), noise_patterns=torch.from_numpy(noise_idx),
                          source=split)


# ---- registry entries ---------------------------------------------------------------------------------------
def _cached(root, split: str, size: int, n_noise: int, n: int | None, seed: int, cache: bool) -> MegapixelSplit:
    from .sources import cache_dir, load_mnist

    import hashlib
    import json

    n = SIZES[split] if n is None else n
    key = json.dumps([VERSION, size, n_noise, split, n, seed, _source_fingerprint(root)])
    path = cache_dir() / f"megapixel-{size}-{split}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"
    if cache and path.is_file():
        try:
            return MegapixelSplit.load(path)
        except DataError:
            path.unlink(missing_ok=True)
    mnist = load_mnist(root, "test" if split == "test" else "train")
    images, labels = mnist.images[:, 0], mnist.labels.numpy()
    if split != "test":  # train and val canvases draw on disjoint shares of MNIST's training digits
        from .split import source_indices

        keep = source_indices(labels, split)
        images, labels = images[torch.from_numpy(keep)], labels[keep]
    out = make_megapixel(split, images=images, labels=labels, n=n, size=size, n_noise=n_noise, seed=seed)
    if split != "test":  # digit_index always points into MNIST's own split
        out.digit_index = torch.from_numpy(keep)[out.digit_index]
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        out.save(path)
    return out


def _source_fingerprint(root) -> list:
    """Sizes and modification times of the MNIST files under `root` (a cache is stale when they change)."""
    p = Path(root)
    files = sorted(p.rglob("*")) if p.is_dir() else [p]
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files if f.is_file()]


def load_megapixel_mnist(root, split: str, *, n: int | None = None, seed: int = 0,
                         cache: bool = True) -> MegapixelSplit:
    """`megapixel-mnist`: 1500x1500, 50 noise placements (a lazily rendering `MegapixelSplit`)."""
    return _cached(root, split, 1500, 50, n, seed, cache)


def load_megapixel_mnist_easy(root, split: str, *, n: int | None = None, seed: int = 0,
                              cache: bool = True) -> MegapixelSplit:
    """`megapixel-mnist-easy`: 500x500, no noise."""
    return _cached(root, split, 500, 0, n, seed, cache)
