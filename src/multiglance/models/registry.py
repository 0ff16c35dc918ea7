"""A small registry of presets, timm style: `@register_model` on a function returning a `RunConfig`.

    create_model("paper-cifar10-two", combine="probs")  ->  a TwoGlance
    list_models()                                       ->  the preset names
    get_preset(name)                                    ->  the preset's full RunConfig (model, data, train)
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from torch import nn

from ..config import ModelConfig, RunConfig
from ..errors import ConfigError
from .glances import OneGlance, TwoGlance

_PRESETS: dict[str, Callable[[], RunConfig]] = {}


def register_model(name: str):
    def wrap(fn: Callable[[], RunConfig]) -> Callable[[], RunConfig]:
        _PRESETS[name] = fn
        return fn
    return wrap


def list_models() -> list[str]:
    return sorted(_PRESETS)


def get_preset(name: str) -> RunConfig:
    if name not in _PRESETS:
        raise ConfigError(f"unknown preset {name!r}; `multiglance presets` lists them: {', '.join(list_models())}")
    cfg = _PRESETS[name]()
    cfg.preset = name
    return cfg


def build_model(cfg: ModelConfig) -> nn.Module:
    """The model a `ModelConfig` describes (fresh weights from the current torch seed)."""
    common = dict(in_channels=cfg.in_channels, num_classes=cfg.num_classes, image_size=cfg.image_size,
                  channels=tuple(cfg.channels), pool_stride=cfg.pool_stride, hidden=cfg.hidden,
                  batchnorm=cfg.batchnorm)
    if cfg.pool_stride not in (1, 2):
        raise ConfigError(f"model.pool_stride must be 1 or 2, got {cfg.pool_stride}")
    if cfg.kind == "one":
        return OneGlance(**common, input_size=cfg.input_size)
    if cfg.kind == "two":
        return TwoGlance(**common, patch_size=cfg.patch_size, patch_stride=cfg.patch_stride,
                         thumb_size=cfg.thumb_size, glance1_channels=cfg.glance1_channels, combine=cfg.combine,
                         inference=cfg.inference, top_k=cfg.top_k, choice=cfg.choice, tau=cfg.tau, fuse=cfg.fuse)
    raise ConfigError(f"model.kind must be 'one' or 'two', got {cfg.kind!r}")


def create_model(name: str, **overrides) -> nn.Module:
    """Build preset `name`'s model, with ModelConfig fields overridden by keyword."""
    cfg = get_preset(name).model
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = set(overrides) - fields
    if unknown:
        raise ConfigError(f"unknown model option(s) {', '.join(sorted(unknown))}; options: {', '.join(sorted(fields))}")
    return build_model(dataclasses.replace(cfg, **overrides))
