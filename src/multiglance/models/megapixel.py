"""The one-glance CNNs megapixel MNIST measures the two-glance model against (`multiglance bench megapixel`).

The two-glance model itself is the ordinary `TwoGlance` of the presets `megapixel-two` / `megapixel-easy-two`
(models/presets_large.py). These two baselines are the house CNN (conv 3x3 + ReLU + max-pool 3x3/2 blocks):
    full_resolution_cnn(image_size=S)               (B, 1, S, S) -> (B, 10)   on the whole canvas
    low_resolution_cnn(image_size=S, input_size=t)  (B, 1, S, S) -> (B, 10)   on the canvas resized to t x t
The low-resolution one is what the presets `megapixel-low-one` / `megapixel-easy-low-one` build and train.
"""
from __future__ import annotations

from .glances import OneGlance

__all__ = ["full_resolution_cnn", "low_resolution_cnn"]

FULL_CHANNELS = (32, 64, 128, 128, 128)  # twice glance 2's filters, two more blocks: ~3M weights at 1500x1500


def full_resolution_cnn(*, image_size: int, channels: tuple[int, ...] = FULL_CHANNELS,
                        num_classes: int = 10) -> OneGlance:
    """The one-glance baseline on the whole canvas (measured, not trained: its training would take hours on a
    CPU); two blocks more than glance 2 so that its affine layer stays at ~3M weights at 1500x1500."""
    return OneGlance(in_channels=1, num_classes=num_classes, image_size=image_size, channels=channels,
                     pool_stride=2)


def low_resolution_cnn(*, image_size: int, input_size: int, channels: tuple[int, ...] = (8, 16, 32),
                       num_classes: int = 10) -> OneGlance:
    """The one-glance baseline on the low-resolution view glance 1 sees (the canvas resized to input_size),
    with glance 2's filters."""
    return OneGlance(in_channels=1, num_classes=num_classes, image_size=image_size, channels=channels,
                     pool_stride=2, input_size=input_size)
