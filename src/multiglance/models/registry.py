"""A small registry of presets, timm style: `@register_model` on a function returning a `RunConfig`.

    create_model("paper-cifar10-two", combine="probs")  ->  a TwoGlance
    list_models()                                       ->  the preset names
    get_preset(name)                                    ->  the preset's full RunConfig (model, data, train)
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from torch import nn

from ..config import ModelConfig, RunConfig, derive
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


UNSEEN_SIZE = 256  # `without_data`: the image side assumed when the size is left to the data


def without_data(cfg: ModelConfig) -> ModelConfig:
    """A copy of `cfg` with the fields left to the data (None) filled by `config.derive`'s rule, as for data of
    cfg's image size (UNSEEN_SIZE if left to the data) with 3 channels and 10 classes (a model built before any
    data is seen)."""
    c = 3 if cfg.in_channels is None else cfg.in_channels
    n = 10 if cfg.num_classes is None else cfg.num_classes
    h = cfg.image_size or UNSEEN_SIZE
    shape = (c, h, cfg.image_width or (h if cfg.image_size else UNSEEN_SIZE))
    return derive(RunConfig(model=dataclasses.replace(cfg)), shape, [str(i) for i in range(n)]).model


def build_model(cfg: ModelConfig, initial_weights: bool = True) -> nn.Module:
    """The model a `ModelConfig` describes (fresh weights from the current torch seed, pretrained backbones from
    their weights); fields left to the data (None) are filled by `without_data`. `initial_weights=False` skips
    loading pretrained or local backbone weights: for a model whose trained state is loaded next (a run, a
    checkpoint), which then needs neither the weights package nor the local file."""
    open_fields = (cfg.in_channels, cfg.num_classes, cfg.image_size, cfg.patch_size, cfg.patch_stride,
                   cfg.thumb_size)
    unresolved = bool(cfg.background) and cfg.background_index is None
    if None in open_fields or getattr(cfg, "input_fraction", None) is not None or unresolved:
        cfg = without_data(cfg)
    if not initial_weights:
        cfg = dataclasses.replace(cfg, pretrained=False, glance1_weights=None, glance2_weights=None)
    common = dict(in_channels=cfg.in_channels, num_classes=cfg.num_classes, image_size=cfg.image_size,
                  image_width=cfg.image_width, channels=tuple(cfg.channels), pool_stride=cfg.pool_stride,
                  hidden=cfg.hidden, batchnorm=cfg.batchnorm, backbone=cfg.backbone, pretrained=cfg.pretrained,
                  head_type=cfg.head, freeze=cfg.freeze)
    if cfg.pool_stride not in (1, 2):
        raise ConfigError(f"model.pool_stride must be 1 or 2, got {cfg.pool_stride}")
    if cfg.kind == "one":
        return OneGlance(**common, input_size=cfg.input_size, weights=cfg.glance2_weights)
    if cfg.kind == "two":
        glance1 = None if cfg.glance1_channels is None else tuple(cfg.glance1_channels)
        return TwoGlance(**common, patch_size=cfg.patch_size, patch_stride=cfg.patch_stride,
                         thumb_size=cfg.thumb_size, glance1_channels=glance1, combine=cfg.combine,
                         inference=cfg.inference, top_k=cfg.top_k, choice=cfg.choice, tau=cfg.tau, fuse=cfg.fuse,
                         scorer=cfg.scorer, score_width=cfg.score_width, selection=cfg.selection,
                         nms_radius=cfg.nms_radius, topk_combine=cfg.topk_combine, explore=cfg.explore,
                         explore_by=cfg.explore_by, glance1_backbone=cfg.glance1_backbone,
                         glance1_weights=cfg.glance1_weights, glance2_weights=cfg.glance2_weights,
                         glance1_aux=cfg.glance1_aux, background=cfg.background_index)
    raise ConfigError(f"model.kind must be 'one' or 'two', got {cfg.kind!r}")


def create_model(name: str, **overrides) -> nn.Module:
    """Build preset `name`'s model, with ModelConfig fields overridden by keyword."""
    cfg = get_preset(name).model
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = set(overrides) - fields
    if unknown:
        raise ConfigError(f"unknown model option(s) {', '.join(sorted(unknown))}; options: {', '.join(sorted(fields))}")
    return build_model(dataclasses.replace(cfg, **overrides))
