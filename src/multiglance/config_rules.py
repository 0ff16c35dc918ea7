"""The rules a run config must keep: each field's range or set of values (ENUMS, RULES) and the consistency
between fields (the patch grid tiles the image, backbones exist with the weights asked for); `validate` checks
them all. `config.py` makes the dataclasses and applies their layers; it re-exports every name here.

Types are `config._coerce`'s guarantee; these rules check ranges. Each rule names what is allowed; a field
another change adds later is checked once it exists (getattr), and a float field without a rule must still be
finite. This module imports no other part of the config: it reads any dataclass config of sections.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

Config = TypeVar("Config")  # config.RunConfig, not imported here so that config.py can import this module

ENUMS: dict[str, tuple[str, ...]] = {  # the same sets as models/glances.py's (a test checks they agree)
    "model.kind": ("one", "two"),
    "model.combine": ("logits", "probs", "mixture", "presence"),
    "model.inference": ("hard", "soft"),
    "model.choice": ("soft", "gumbel", "reinforce", "oracle", "topk"),
    "model.scorer": ("dense", "conv"),
    "model.selection": ("topk", "nms"),
    "model.topk_combine": ("weights", "equal"),
    "model.explore_by": ("sample", "ink"),
    "model.backbone": ("house", "efficientnet-lite0", "efficientnet-lite0-s16"),
    "model.head": ("flat", "pool"),
    "train.schedule": ("cosine", "step", "constant"),
    "train.optimizer": ("sgd", "adamw"),
}
MAX_SIDE = 1 << 16  # the largest image side, filter count or padding accepted: a larger one is a typo


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
            integer: bool = False, optional: bool = False, note: str = ""):
    """A rule: a finite number (an int if `integer`) in [lo, hi] (`*_open` excludes the end); None if optional."""
    if lo is not None and hi is not None:
        allowed = f"{'in (' if lo_open else 'in ['}{lo}, {hi}{')' if hi_open else ']'}"
    elif lo is not None:
        allowed = f"{'>' if lo_open else '>='} {lo}"
    else:
        allowed = f"{'<' if hi_open else '<='} {hi}" if hi is not None else "a finite number"
    allowed += " or none" if optional else ""
    allowed += f" ({note})" if note else ""

    def check(key: str, value: Any) -> None:
        if value is None and optional:
            return
        kind = int if integer else (int, float)
        ok = isinstance(value, kind) and not isinstance(value, bool) and value == value and abs(value) != float("inf")
        ok = ok and (lo is None or (value > lo if lo_open else value >= lo))
        ok = ok and (hi is None or (value < hi if hi_open else value <= hi))
        if not ok:
            raise ConfigError(f"{key}={_show(value)} must be {'an integer ' if integer else ''}{allowed}")
    return check


def _sizes(optional: bool = False):
    """A rule: a non-empty list of filter counts, each in [1, MAX_SIDE]."""
    def check(key: str, value: Any) -> None:
        if value is None and optional:
            return
        if not isinstance(value, tuple) or not value or not all(
                isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIDE for v in value):
            shown = ",".join(map(str, value)) if isinstance(value, tuple) else _show(value)
            raise ConfigError(f"{key}={shown!s} must be a non-empty comma-separated list of integers in "
                              f"[1, {MAX_SIDE}]" + (" or none" if optional else "") + " (e.g. 16,16,32)")
    return check


def _device(key: str, value: Any) -> None:
    import re

    if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|cuda(:\d{1,3})?", value):
        raise ConfigError(f"{key}={_show(value)} must be auto, cpu, cuda or cuda:N")


def _text(key: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}={_show(value)} must be a non-empty name")


def _glance1_backbone(key: str, value: Any) -> None:
    if value is not None and value not in ENUMS["model.backbone"]:
        raise ConfigError(f"{key}={_show(value)} must be one of {', '.join(ENUMS['model.backbone'])} or none "
                          "(none: model.backbone)")


RULES: dict[str, Any] = {
    "model.glance1_backbone": _glance1_backbone,
    "model.in_channels": _number(1, 4096, integer=True, optional=True, note="1 gray, 3 RGB; none: from the data"),
    "model.num_classes": _number(2, 1_000_000, integer=True, optional=True, note="none: from the data"),
    "model.image_size": _number(1, MAX_SIDE, integer=True, optional=True, note="none: the data's median"),
    "model.image_width": _number(1, MAX_SIDE, integer=True, optional=True, note="none: square"),
    "model.channels": _sizes(),
    "model.glance1_channels": _sizes(optional=True),
    "model.pool_stride": _number(1, 2, integer=True),
    "model.hidden": _number(0, 1 << 20, integer=True, note="0: no hidden layer"),
    "model.input_size": _number(1, MAX_SIDE, integer=True, optional=True),
    "model.input_fraction": _number(0, 1, lo_open=True, optional=True, note="none: model.input_size decides"),
    "model.patch_size": _number(1, MAX_SIDE, integer=True, optional=True, note="none: from the image size"),
    "model.patch_stride": _number(1, MAX_SIDE, integer=True, optional=True, note="none: half the patch"),
    "model.thumb_size": _number(1, MAX_SIDE, integer=True, optional=True, note="none: from the image size"),
    "model.top_k": _number(1, integer=True),
    "model.tau": _number(0, lo_open=True),
    "model.nms_radius": _number(0, MAX_SIDE, integer=True),
    "model.explore": _number(0, integer=True),
    "model.score_width": _number(1, 4096, integer=True),
    "model.background_index": _number(0, integer=True, optional=True, note="filled from model.background"),
    "data.name": _text,
    "data.train_limit": _number(1, integer=True, optional=True, note="none: all images"),
    "data.test_limit": _number(1, integer=True, optional=True, note="none: all images"),
    "data.val_limit": _number(1, integer=True, optional=True, note="none: all images"),
    "data.crop_padding": _number(0, MAX_SIDE, integer=True),
    "data.val_fraction": _number(0, 0.5, lo_open=True),
    "data.max_pixels": _number(1, integer=True, optional=True, note="none: 67108864, or $MULTIGLANCE_MAX_PIXELS"),
    "train.epochs": _number(1, integer=True),
    "train.batch_size": _number(1, integer=True),
    "train.lr": _number(0, lo_open=True),
    "train.momentum": _number(0, 1, hi_open=True),
    "train.weight_decay": _number(0),
    "train.warmup_epochs": _number(0),
    "train.label_smoothing": _number(0, 1, hi_open=True),
    "train.entropy_weight": _number(),
    "train.oracle_best": _number(0, 1),
    "train.tau_final": _number(0, lo_open=True, optional=True),
    "train.seed": _number(0, (1 << 63) - 1, integer=True),
    "train.device": _device,
    "train.eval_batch_size": _number(1, integer=True),
    "train.log_every": _number(1, integer=True),
    "train.checkpoint_every": _number(0, integer=True, note="0: only at the end of each epoch"),
    "train.checkpoint_minutes": _number(0, note="0: off"),
    "train.uniform_weight": _number(0),
    "train.grad_clip": _number(0, note="0: off"),
    "train.glance1_weight": _number(0),
    "train.rank_weight": _number(0),
    "model.freeze": _number(0, 16, integer=True),
    "train.workers": _number(0, 256, integer=True),
}
UNCHECKED = {"data.root", "train.init_from", "model.glance1_weights", "model.glance2_weights",  # any path (the loaders
             "model.background"}  # say if it does not exist; derive if the class does not); bools need none


def _nearest(target: int, start: int, step: int, sign: int, lo: int = 1) -> list[int]:
    """The two values `start + sign * n * step` (n >= 0, value >= lo) nearest to `target`."""
    n = max(0, (target - start) * sign // step)
    return sorted({v for v in (start + sign * n * step, start + sign * (n + 1) * step) if v >= lo})


def _check_grid(m: Any) -> int:
    """The number of patches of a two-glance model; ConfigError if its patch grid does not tile the image."""
    p, s, counts = m.patch_size, m.patch_stride, []
    for key, side in (("model.image_size", m.image_size), ("model.image_width", getattr(m, "image_width", None))):
        if side is None:
            counts.append(counts[0])
            continue
        if p > side or (side - p) % s:
            patches = [v for v in _nearest(p, side, s, -1) if v <= side]
            sides = _nearest(side, p, s, +1, lo=p)
            raise ConfigError(
                f"model.patch_size={p} with model.patch_stride={s} does not tile {key}={side} (the patch must fit "
                f"and ({side} - {p}) % {s} must be 0); nearest valid: model.patch_size "
                f"{' or '.join(map(str, patches))}, or {key} {' or '.join(map(str, sides))}")
        counts.append((side - p) // s + 1)
    return counts[0] * counts[1]


PRETRAINED_BACKBONES = ("efficientnet-lite0", "efficientnet-lite0-s16")  # models/backbones.py's with weights


def _check_backbones(m: Any) -> None:
    """What models/backbones.py would refuse at build time, refused before anything is built."""
    used = {m.backbone} | ({m.glance1_backbone or m.backbone} if m.kind == "two" else set())
    if m.pretrained and not used & set(PRETRAINED_BACKBONES):
        raise ConfigError(f"model.pretrained=true but no backbone has pretrained weights ({', '.join(sorted(used))}); "
                          f"choose model.backbone from {', '.join(PRETRAINED_BACKBONES)} or set model.pretrained=false")
    if used & set(PRETRAINED_BACKBONES) and m.in_channels not in (None, 3):
        raise ConfigError(f"model.in_channels={m.in_channels}: EfficientNet-Lite0 takes RGB images; use "
                          "model.backbone=house (and model.glance1_backbone=none) for other inputs")
    if m.freeze and m.backbone == "house":
        raise ConfigError(f"model.freeze={m.freeze} is for pretrained backbones; the house CNN trains from scratch")
    if m.freeze > 11 and m.backbone != "house":
        raise ConfigError(f"model.freeze={m.freeze} must be at most 11 (the blocks before the last stage)")
    if m.kind == "two" and m.combine == "presence" and not getattr(m, "background", ""):
        raise ConfigError("model.combine=presence needs model.background, the data's class that means 'no object "
                          "here' (e.g. --set model.background=none)")
    if getattr(m, "background", "") and (m.kind != "two" or m.combine != "presence"):
        raise ConfigError(f"model.background={m.background!r} is read only by a two-glance model with "
                          "model.combine=presence; set both, or neither")
    if m.kind == "two" and m.glance1_aux and m.scorer != "conv":
        raise ConfigError("model.glance1_aux=true needs model.scorer=conv (glance 1's answer pools its score map)")
    for key in ("glance1_weights", "glance2_weights"):
        path = getattr(m, key)
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"model.{key}={path!r} is not a file; give the path of a saved state dict")


def _sections(cfg: Any) -> list[str]:
    """The config's sections in order (config.SECTIONS: model, data, train): its fields that are dataclasses."""
    return [f.name for f in dataclasses.fields(cfg) if dataclasses.is_dataclass(getattr(cfg, f.name))]


def validate(cfg: Config) -> Config:
    """Check the range of every field and the consistency between fields; returns `cfg` unchanged.

    Each failure is one `ConfigError` line naming the key, its value and what is allowed, for example
    "model.patch_size=0 must be an integer >= 1". Call it after the last override, before building anything.
    """
    for section in _sections(cfg):
        obj = getattr(cfg, section)
        for f in dataclasses.fields(obj):
            key, value = f"{section}.{f.name}", getattr(obj, f.name)
            if key in ENUMS:
                if value not in ENUMS[key]:
                    raise ConfigError(f"{key}={_show(value)} must be one of {', '.join(ENUMS[key])}")
            elif key in RULES:
                RULES[key](key, value)
            elif isinstance(value, float) and not (value == value and abs(value) != float("inf")):
                raise ConfigError(f"{key}={value} must be a finite number")
    m, d = cfg.model, cfg.data
    if m.kind == "two" and None not in (m.patch_size, m.patch_stride, m.image_size):  # None: from the data
        count = _check_grid(m)
        if m.top_k > count:
            raise ConfigError(f"model.top_k={m.top_k} must be between 1 and the number of patches ({count}); "
                              "lower model.top_k or model.patch_stride")
        explore = getattr(m, "explore", 0)
        if m.choice == "topk" and m.top_k + explore > count:
            raise ConfigError(f"model.top_k + model.explore = {m.top_k + explore} training patches, but there are "
                              f"only {count}; lower model.top_k or model.explore")
    _check_backbones(m)
    side = min(m.image_size or MAX_SIDE, getattr(m, "image_width", None) or m.image_size or MAX_SIDE)
    if d.crop_padding > side:
        raise ConfigError(f"data.crop_padding={d.crop_padding} must be between 0 and the image side ({side})")
    return cfg
