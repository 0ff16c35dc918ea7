"""Presets beyond the report: the glimpse benchmark (translated / cluttered MNIST) and the CIFAR-10 front.

mnist60-* / mnist100-*: 60x60 and 100x100 canvases of one 28x28 digit (data set `mnist-cluttered-60` /
`-100`; `--set data.name=mnist-translated-60` for the clutter-free one). The two-glance nets look at one
36x36 patch of an overlapping grid (stride 8, so some patch always holds the whole digit), fuse glance 1's
features into the decision, and train the hard choice directly (REINFORCE, see models/glances.py): at most
one patch per image is classified in training, as at test time. `-two-oracle`: glance 1 trained to name the
patch glance 2 classifies best (`model.choice=oracle`), the scheme whose glance 1 finds the digit (see
docs/beyond-discussion.md). `-thumb` one-glance nets see the downsampled canvas only, the cheap baselines a
two-glance model has to beat.

cifar10-*: one-glance baselines at several widths and input sizes (`-thumb-one`: the 16x16 thumbnail glance 1
sees) and two-glance nets with a 3x3 grid of 16x16 patches (stride 8) and fused features, pool stride 2.
Every field can be changed with `--set` (model.choice=soft|gumbel|reinforce|oracle, model.combine, model.fuse, ...).
"""
from __future__ import annotations

from ..config import DataConfig, ModelConfig, RunConfig, TrainConfig
from .registry import register_model


def _mnist(kind: str, canvas: int, input_size: int | None = None, choice: str = "reinforce",
           patch: tuple[int, int] = (36, 8)) -> RunConfig:
    if kind == "one":
        model = ModelConfig(kind="one", in_channels=1, num_classes=10, image_size=canvas, pool_stride=2,
                            channels=(32, 32, 64), batchnorm=True, input_size=input_size)
    else:
        model = ModelConfig(kind="two", in_channels=1, num_classes=10, image_size=canvas, pool_stride=2,
                            channels=(16, 16, 32), glance1_channels=(8, 16, 16), batchnorm=True,
                            patch_size=patch[0], patch_stride=patch[1],
                            thumb_size=canvas // (3 if canvas == 60 else 4), choice=choice, fuse=True)
    return RunConfig(model=model, data=DataConfig(name=f"mnist-cluttered-{canvas}"),
                     # lr 0.05 blew the full-canvas one-glance net up in its first epoch (then stuck at chance)
                     train=TrainConfig(epochs=10, batch_size=64, lr=0.05 if kind == "two" or input_size else 0.02,
                                       warmup_epochs=0.5))


def _cifar(kind: str, *, channels=(32, 32, 64), input_size: int | None = None, choice: str = "soft",
           fuse: bool = True) -> RunConfig:
    model = ModelConfig(kind=kind, in_channels=3, num_classes=10, image_size=32, pool_stride=2,
                        channels=channels, input_size=input_size, patch_size=16, patch_stride=8,
                        thumb_size=16, choice=choice, fuse=fuse, batchnorm=True)
    return RunConfig(model=model, data=DataConfig(name="cifar10", crop_padding=4, flip=True),
                     train=TrainConfig(epochs=20, batch_size=128, lr=0.05, warmup_epochs=1))


for _canvas in (60, 100):
    register_model(f"mnist{_canvas}-one")(lambda c=_canvas: _mnist("one", c))
    register_model(f"mnist{_canvas}-thumb-one")(lambda c=_canvas: _mnist("one", c, c // 2))
    register_model(f"mnist{_canvas}-two")(lambda c=_canvas: _mnist("two", c))
# choice="oracle" (train.py): glance 1 learns to name the patch glance 2 classifies best. At 100x100 a coarser
# grid (25 patches of 44x44, stride 14: still some patch holds the whole digit) keeps training affordable.
register_model("mnist60-two-oracle")(lambda: _mnist("two", 60, choice="oracle"))
register_model("mnist100-two-oracle")(lambda: _mnist("two", 100, choice="oracle", patch=(44, 14)))
register_model("cifar10-one")(lambda: _cifar("one"))
register_model("cifar10-narrow-one")(lambda: _cifar("one", channels=(16, 16, 32)))
register_model("cifar10-thumb-one")(lambda: _cifar("one", input_size=16))
register_model("cifar10-two-fuse")(lambda: _cifar("two", channels=(16, 16, 32)))
register_model("cifar10-two-fuse-reinforce")(lambda: _cifar("two", channels=(16, 16, 32), choice="reinforce"))
# choice="oracle" (train.py): glance 1 trained to name the patch glance 2 classifies best, the test-time choice
register_model("cifar10-two-fuse-oracle")(lambda: _cifar("two", channels=(16, 16, 32), choice="oracle"))
register_model("cifar10-two-fuse-oracle-wide")(lambda: _cifar("two", channels=(32, 32, 64), choice="oracle"))
