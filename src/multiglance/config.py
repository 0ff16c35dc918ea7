"""Typed run configuration: what to build (model), what to read (data), how to train (train).

Layers are applied in order: a preset (`models/presets.py`), an optional YAML file, then `--set key=value`
overrides. Keys are `section.field` (`train.lr=0.1`, `model.channels=16,16,32`) or a bare field name when
only one section has it (`lr=0.1`). An unknown key or a value of the wrong type is a `ConfigError`.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError


@dataclass
class ModelConfig:
    kind: str = "two"  # "one": one CNN on the whole image; "two": glance 1 picks a patch, glance 2 classifies it
    in_channels: int = 3  # image channels
    num_classes: int = 10  # classes of the data set
    image_size: int = 32  # the (square) input size H = W
    channels: tuple[int, ...] = (16, 16, 32)  # filters per conv block (one-glance: of the CNN; two: of glance 2)
    glance1_channels: tuple[int, ...] | None = None  # glance 1's filters; None: same as `channels`
    pool_stride: int = 1  # max-pool 3x3 stride: 1 as the report's tables say, 2 for the smaller `-s2` nets
    batchnorm: bool = False  # BatchNorm after each conv (the report had none)
    hidden: int = 0  # width of a hidden affine layer before the classifier; 0 for none (the report)
    input_size: int | None = None  # one-glance only: resize the image to this first (a thumbnail baseline)
    patch_size: int = 8  # two-glance: patch side p
    patch_stride: int = 8  # two-glance: patch stride s (< p for overlapping patches)
    thumb_size: int = 16  # two-glance: side of the thumbnail glance 1 sees
    combine: str = "logits"  # training combination: "logits" | "probs" | "mixture" (see models/glances.py)
    inference: str = "hard"  # test time: "hard" (top patch only) | "soft" (all patches, weighted)
    top_k: int = 1  # hard inference on the k best patches
    choice: str = "soft"  # training choice: "soft" (the report) | "gumbel" | "reinforce" | "oracle" (see train.py)
    tau: float = 1.0  # Gumbel-softmax temperature at the start of training
    fuse: bool = False  # glance 2's classifier also sees glance 1's features


@dataclass
class DataConfig:
    name: str = "cluttered-digits"  # a data set of `multiglance.data.DATASETS`
    root: str | None = None  # file or folder; None: the data set's default place
    train_limit: int | None = None  # use only the first N training images (quick runs)
    test_limit: int | None = None  # evaluate on only the first N test images
    crop_padding: int = 0  # augmentation: pad by this many pixels, then crop back at random
    flip: bool = False  # augmentation: random horizontal flips
    fresh_canvases: bool = False  # generated data sets (mnist-*-60/100): new canvases every epoch (seed = epoch)


@dataclass
class TrainConfig:
    epochs: int = 10  # passes over the training set
    batch_size: int = 128  # images per step, over all processes
    lr: float = 0.05  # peak learning rate of SGD
    momentum: float = 0.9  # SGD momentum (Nesterov)
    weight_decay: float = 5e-4  # L2 on the weights
    schedule: str = "cosine"  # "cosine" | "step" (x0.1 at 50% and 75%) | "constant"
    warmup_epochs: float = 0.0  # linear warm-up from 0, in epochs
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    entropy_weight: float = 0.0  # two-glance: + weight * mean entropy of glance 1's weights (>0 sharpens)
    oracle_best: float = 0.0  # choice=oracle: glance 2's loss mixes (1-a) * mean over patches + a * best patch's
    tau_final: float | None = None  # gumbel choice: temperature annealed to this by the last epoch
    seed: int = 0  # seeds weights, shuffling and augmentation
    device: str = "auto"  # "auto" (cuda if present), "cpu", "cuda"
    channels_last: bool = True  # memory format of activations (about 3x faster for these nets on CPU)
    eval_batch_size: int = 500  # images per validation batch
    log_every: int = 50  # steps between training-loss records in metrics.jsonl
    checkpoint_every: int = 0  # also checkpoint every N steps inside an epoch (0: only at the end of each epoch)
    tensorboard: bool = False  # also log to TensorBoard (if installed)


@dataclass
class RunConfig:
    preset: str = "digits-two"  # the preset these values started from
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


SECTIONS = ("model", "data", "train")


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    """Plain types only (tuples as lists), safe for YAML, JSON and weights-only checkpoints."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()} | {
        s: {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(getattr(cfg, s)).items()}
        for s in SECTIONS}


def from_dict(d: dict[str, Any]) -> RunConfig:
    if not isinstance(d, dict):
        raise ConfigError(f"a config must be a mapping of sections ({', '.join(SECTIONS)}), not a {type(d).__name__}")
    cfg = RunConfig(preset=str(d.get("preset", "custom")))
    for key in d:
        if key not in (*SECTIONS, "preset"):
            raise ConfigError(f"unknown config section {key!r}; use {', '.join(SECTIONS)}")
    for s in SECTIONS:
        if not isinstance(d.get(s) or {}, dict):
            raise ConfigError(f"config section {s!r} must be a mapping of key: value, not {d[s]!r:.60}")
        for k, v in (d.get(s) or {}).items():
            set_value(cfg, f"{s}.{k}", v)
    return cfg


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML value or a command-line string to type `tp` (int, float, bool, str, tuples, Optional)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), key)
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"{key} takes a comma-separated list, got {value!r}")
        return tuple(_coerce(v.strip() if isinstance(v, str) else v, args[0], key) for v in items)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key} takes true or false, got {value!r}")
    try:
        if isinstance(value, (bool, list, dict)) or (tp is int and isinstance(value, float)
                                                    and not value.is_integer()):
            raise ValueError
        return tp(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} takes a value of type {tp.__name__}, got {value!r}") from None


def _resolve(cfg: RunConfig, key: str) -> tuple[Any, str]:
    if "." in key:
        section, name = key.split(".", 1)
        if section not in SECTIONS:
            raise ConfigError(f"unknown config section in {key!r}; use {', '.join(SECTIONS)}")
        owners = [section]
    else:
        name = key
        owners = [s for s in SECTIONS if name in {f.name for f in dataclasses.fields(getattr(cfg, s))}]
        if len(owners) > 1:
            raise ConfigError(f"{key!r} is ambiguous; write one of {', '.join(f'{s}.{key}' for s in owners)}")
    obj = getattr(cfg, owners[0]) if owners else None
    if obj is None or name not in {f.name for f in dataclasses.fields(obj)}:
        raise ConfigError(f"unknown config key {key!r}; `multiglance presets --keys` lists them")
    return obj, name


def set_value(cfg: RunConfig, key: str, value: Any) -> None:
    obj, name = _resolve(cfg, key)
    hints = typing.get_type_hints(type(obj))
    setattr(obj, name, _coerce(value, hints[name], key))


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply `key=value` strings in order."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (for example train.lr=0.1)")
        key, value = item.split("=", 1)
        set_value(cfg, key.strip(), value.strip())
    return cfg


def apply_yaml(cfg: RunConfig, path: str | Path) -> RunConfig:
    import yaml

    try:
        d = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML ({type(e).__name__})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections (model, data, train)")
    for section, values in d.items():
        if section == "preset":
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"section {section!r} of {str(path)!r} must be a mapping of key: value")
        for k, v in values.items():
            set_value(cfg, f"{section}.{k}", v)
    return cfg


def all_keys() -> list[str]:
    return [f"{s}.{f.name}" for s in SECTIONS for f in dataclasses.fields(getattr(RunConfig(), s))]
