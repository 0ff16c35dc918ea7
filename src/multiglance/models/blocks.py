"""Building blocks: the report's CNN block (conv 3x3 pad 1 + ReLU + max-pool 3x3) and input normalisation."""
from __future__ import annotations

import torch
from torch import nn


def pooled_size(size: int, pool_stride: int) -> int:
    """Spatial size after one max-pool 3x3 with padding 1 (stride 1 keeps it, stride 2 halves it, rounding up)."""
    return (size + 2 - 3) // pool_stride + 1


class ConvStack(nn.Module):
    """Layers of conv 3x3 (pad 1) + [BatchNorm] + ReLU + max-pool 3x3 (pad 1), then flatten.

    (B, C, H, W) -> (B, channels[-1] * h * w) where h, w are H, W pooled once per layer; `size` is H = W (an int)
    or (H, W). `out_shape` is (channels[-1], h, w), the feature map before flattening.
    """

    def __init__(self, *, in_channels: int, channels: tuple[int, ...], size: int | tuple[int, int],
                 pool_stride: int, batchnorm: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        h, w = (size, size) if isinstance(size, int) else size
        for out in channels:
            layers.append(nn.Conv2d(c, out, 3, padding=1, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm2d(out))
            layers += [nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=pool_stride, padding=1)]
            c, h, w = out, pooled_size(h, pool_stride), pooled_size(w, pool_stride)
        self.body = nn.Sequential(*layers)
        self.out_shape = (c, h, w)
        self.out_features = c * h * w
        for m in self.body:
            if isinstance(m, nn.Conv2d):  # He init: keeps activations from shrinking layer by layer (no BN)
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).flatten(1)  # (B, out_features)


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

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.std.copy_(std.clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean[:, None, None]) / self.std[:, None, None]
