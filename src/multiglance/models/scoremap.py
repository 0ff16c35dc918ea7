"""Glance 1's conv scorer (TwoGlance's `scorer="conv"`): a small detector on its feature map, read at the patch
centres, with glance 1's own attention-pooled answer as an option (`glance1_aux`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ScoreMap(nn.Module):
    """scorer="conv": (B, C*f*g) flat glance-1 features -> (B, P) patch scores. Conv 3x3 + ReLU + conv 1x1 on the
    (C, f, g) feature map, sampled bilinearly at the P patch centres (normalised (x, y), a fixed buffer): the
    same small detector everywhere, ~9 * C * width weights whatever the number of patches.
    `classes` K > 0 adds glance 1's own answer (`attend`): a 1x1 class map, averaged over positions with the
    softmax of the score map as weights (attention pooling, as in attention-based multiple-instance learning),
    so glance 1 learns where the class evidence is from the image label alone, before glance 2 knows anything."""

    def __init__(self, *, channels: int, fmap: tuple[int, int], centres: torch.Tensor, width: int = 32,
                 classes: int = 0):
        super().__init__()
        self.channels, self.fmap = channels, fmap
        self.body = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(width, 1, 1))
        self.classes = nn.Conv2d(channels, classes, 1) if classes else None
        self.register_buffer("centres", centres[None, None], persistent=False)  # (1, 1, P, 2) as (x, y)

    def score_map(self, features: torch.Tensor) -> torch.Tensor:
        f = features.view(-1, self.channels, *self.fmap)  # (B, C, f, g)
        return self.body(f)  # (B, 1, f, g)

    def sample(self, m: torch.Tensor) -> torch.Tensor:
        grid = self.centres.expand(m.shape[0], -1, -1, -1)  # (B, 1, P, 2)
        return F.grid_sample(m, grid, mode="bilinear", align_corners=False)[:, 0, 0]  # (B, P)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.sample(self.score_map(features))  # (B, P)

    def attend(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C*f*g) -> (B, P) patch scores and (B, K) glance 1's logits by attention pooling of its class map."""
        m = self.score_map(features)  # (B, 1, f, g)
        a = m.flatten(1).softmax(-1)  # (B, f*g)
        z = self.classes(features.view(-1, self.channels, *self.fmap)).flatten(2)  # (B, K, f*g)
        return self.sample(m), torch.einsum("bn,bkn->bk", a, z)  # (B, P), (B, K)
