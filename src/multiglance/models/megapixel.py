"""The one-glance CNNs the two-glance model is measured against on large images (`multiglance bench megapixel`,
`multiglance bench large`).

The two-glance model itself is the ordinary `TwoGlance` of the presets `megapixel-two` / `megapixel-easy-two` /
`large-two` (models/presets_large.py). These two baselines are the house CNN (conv 3x3 + ReLU + max-pool 3x3/2
blocks):
    full_resolution_cnn(image_size=S, in_channels=C)  (B, C, S, S) -> (B, K)   on the whole image
    low_resolution_cnn(image_size=S, input_size=t)    (B, 1, S, S) -> (B, 10)  on the canvas resized to t x t
The full-resolution one is measured, never trained; `full_resolution_config` is the same model as a config (what a
fresh-process memory probe builds). The low-resolution one is what the presets `megapixel-low-one` /
`megapixel-easy-low-one` build and train.
"""
from __future__ import annotations

from ..config import ModelConfig, RunConfig
from .glances import OneGlance
from .registry import build_model

__all__ = ["FULL_CHANNELS", "full_resolution_cnn", "full_resolution_config", "low_resolution_cnn"]

FULL_CHANNELS = (32, 64, 128, 128, 128)  # twice glance 2's filters, two more blocks: ~3M weights at 1500x1500


def full_resolution_config(*, image_size: int, in_channels: int = 1, num_classes: int = 10) -> RunConfig:
    """The one-glance baseline on the whole image, as a config: the house CNN with FULL_CHANNELS, pool stride 2
    (two blocks more than glance 2, so that its affine layer stays at ~3M weights at 1500x1500)."""
    return RunConfig(preset="full-resolution-one", model=ModelConfig(
        kind="one", in_channels=in_channels, num_classes=num_classes, image_size=image_size, channels=FULL_CHANNELS,
        pool_stride=2))


def full_resolution_cnn(*, image_size: int, in_channels: int = 1, num_classes: int = 10) -> OneGlance:
    """The model of `full_resolution_config` (fresh weights from the current torch seed; measured, not trained:
    its training would take hours on a CPU)."""
    return build_model(full_resolution_config(image_size=image_size, in_channels=in_channels,
                                              num_classes=num_classes).model)


def low_resolution_cnn(*, image_size: int, input_size: int, channels: tuple[int, ...] = (8, 16, 32),
                       num_classes: int = 10) -> OneGlance:
    """The one-glance baseline on the low-resolution view glance 1 sees (the canvas resized to input_size),
    with glance 2's filters."""
    return OneGlance(in_channels=1, num_classes=num_classes, image_size=image_size, channels=channels,
                     pool_stride=2, input_size=input_size)
