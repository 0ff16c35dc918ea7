"""Data sets: in-memory tensors for small ones, lazily decoded splits for large ones.

Most loaders return a `Split`: uint8 images (N, C, H, W), int64 labels (N,), class names, and, where the
data set knows where its object is, boxes (N, 4) as (x0, y0, x1, y1) in pixels, exclusive end.
`load_split(name, root, split)` is the one entry point the rest of the package uses. Large data sets return a
lazy split instead (`stream.StreamSplit`: files decoded per batch; `megapixel.MegapixelSplit`, `scenes.SceneSplit`:
canvases rendered per batch) with the same interface the training loop reads: `len()`, `labels`, `classes`,
`shape` (C, H, W), `take(index) -> (uint8 (b, C, H, W), keep (b,))` and `subset(index)`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Split:
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64
    classes: list[str]
    boxes: torch.Tensor | None = None  # (N, 4) int64 (x0, y0, x1, y1) of the object, when known
    skipped: int = 0  # files of the source that did not decode and were left out (each warned about once)

    def __post_init__(self) -> None:
        assert self.images.dtype == torch.uint8 and self.images.dim() == 4, self.images.shape
        assert self.labels.dtype == torch.int64 and self.labels.shape == (self.images.shape[0],)
        assert self.boxes is None or self.boxes.shape == (self.images.shape[0], 4)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def take(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images `index` (b,) as uint8 (b, C, H, W) and which of them decoded (b,) bool: all of them here.
        Lazily decoded splits (streamed files, rendered canvases) have the same method."""
        return self.images[index], torch.ones(index.shape[0], dtype=torch.bool)

    def subset(self, index: torch.Tensor | slice) -> "Split":
        boxes = None if self.boxes is None else self.boxes[index]
        return Split(self.images[index], self.labels[index], self.classes, boxes, self.skipped)


from .registry import DATASETS, load_split  # noqa: E402  (after Split: the loaders import it)

__all__ = ["Split", "DATASETS", "load_split"]
