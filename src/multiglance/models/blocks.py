"""Building blocks: the affine head, input normalisation, the pooled size of the report's CNN block (its layers:
`backbones.HouseCNN`)."""
from __future__ import annotations

import torch
from torch import nn


def pooled_size(size: int, pool_stride: int) -> int:
    """Spatial size after one max-pool 3x3 with padding 1 (stride 1 keeps it, stride 2 halves it, rounding up)."""
    return (size + 2 - 3) // pool_stride + 1


def head(in_features: int, out_features: int, hidden: int = 0) -> nn.Module:
    """The affine layer (optionally one hidden affine + ReLU before it)."""
    if hidden <= 0:
        return nn.Linear(in_features, out_features)
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_features))


class Normalize(nn.Module):
    """(x - mean) / std per channel; the statistics travel with the model so a loaded run needs nothing else."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))

    fixed = False  # True: the statistics a backbone's pretrained weights expect; the data's never replace them

    def fix(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.set_stats(mean, std)
        self.fixed = True

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        if self.fixed:
            return
        self.mean.copy_(mean)
        self.std.copy_(std.clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean[:, None, None]) / self.std[:, None, None]
