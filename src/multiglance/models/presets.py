"""The presets, named after what they reproduce.

paper-*: the report's Tables 1 and 2, literally (max-pool 3x3 stride 1); `-s2`: the same with pooling
stride 2, which keeps the fully connected layers small. One-glance nets have twice the filters of each glance.
digits-*: the embedded cluttered digits (48x48, one 16x16 digit), for the demo and the tests.
"""
from __future__ import annotations

from ..config import DataConfig, ModelConfig, RunConfig, TrainConfig
from .registry import register_model

CIFAR_DATA = dict(name="cifar10", crop_padding=4, flip=True)
TINY_DATA = dict(name="tiny-imagenet", crop_padding=4, flip=True)


def _cifar10(kind: str, pool_stride: int) -> RunConfig:
    model = ModelConfig(kind=kind, in_channels=3, num_classes=10, image_size=32, pool_stride=pool_stride,
                        channels=(32, 32, 64) if kind == "one" else (16, 16, 32),
                        patch_size=8, patch_stride=8, thumb_size=16)
    return RunConfig(model=model, data=DataConfig(**CIFAR_DATA),
                     train=TrainConfig(epochs=20, batch_size=128, lr=0.01, warmup_epochs=1))


def _tiny(kind: str, pool_stride: int) -> RunConfig:
    model = ModelConfig(kind=kind, in_channels=3, num_classes=200, image_size=64, pool_stride=pool_stride,
                        channels=(32, 32) if kind == "one" else (16, 16),
                        patch_size=32, patch_stride=16, thumb_size=32)
    return RunConfig(model=model, data=DataConfig(**TINY_DATA),
                     train=TrainConfig(epochs=15, batch_size=128, lr=0.01, warmup_epochs=1))


def _digits(kind: str) -> RunConfig:
    model = ModelConfig(kind=kind, in_channels=1, num_classes=10, image_size=48, pool_stride=2,
                        channels=(32, 32, 64) if kind == "one" else (16, 16, 32),
                        patch_size=24, patch_stride=12, thumb_size=16)
    # plain nets without BatchNorm: 0.03 diverged for the one-glance net, 0.02 suits the two-glance one
    return RunConfig(model=model, data=DataConfig(name="cluttered-digits"),
                     train=TrainConfig(epochs=12, batch_size=32, lr=0.01 if kind == "one" else 0.02,
                                       warmup_epochs=0.5))


for _kind in ("one", "two"):
    for _stride, _suffix in ((1, ""), (2, "-s2")):
        register_model(f"paper-cifar10-{_kind}{_suffix}")(lambda k=_kind, s=_stride: _cifar10(k, s))
        register_model(f"paper-tiny-{_kind}{_suffix}")(lambda k=_kind, s=_stride: _tiny(k, s))
    register_model(f"digits-{_kind}")(lambda k=_kind: _digits(k))
