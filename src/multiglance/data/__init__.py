"""Data sets as whole in-memory tensors.

Every loader returns a `Split`: uint8 images (N, C, H, W), int64 labels (N,), class names, and, where the
data set knows where its object is, boxes (N, 4) as (x0, y0, x1, y1) in pixels, exclusive end.
`load_split(name, root, split)` is the one entry point the rest of the package uses.
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

    def __post_init__(self) -> None:
        assert self.images.dtype == torch.uint8 and self.images.dim() == 4, self.images.shape
        assert self.labels.dtype == torch.int64 and self.labels.shape == (self.images.shape[0],)
        assert self.boxes is None or self.boxes.shape == (self.images.shape[0], 4)

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, index: torch.Tensor | slice) -> "Split":
        boxes = None if self.boxes is None else self.boxes[index]
        return Split(self.images[index], self.labels[index], self.classes, boxes)


from .registry import DATASETS, load_split  # noqa: E402  (after Split: the loaders import it)

__all__ = ["Split", "DATASETS", "load_split"]
