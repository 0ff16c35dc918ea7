"""Presets for large images, where the second glance pays: a user's own photos, megapixel MNIST, photo scenes.

large-two: the two-glance model, house CNN from scratch, for a class folder of large images with a small object,
    read at the size of the data's median image (any aspect; `--set model.image_size=1024` fixes one). It learns
    from the first step: BatchNorm and a global-pooled head in both glances, half an epoch of warm-up, gradients
    clipped to norm 1 (without them the first AdamW step blew the flattened head up on 1024x1024 shapes and the
    loss ended at 2 ln 3), and glance 1 answers on its own too (`glance1_aux`: attention pooling of a class map
    by its score map) and learns which chosen patch glance 2 reads best (`train.rank_weight`).
    Glance 1 is fully convolutional (`scorer=conv`: a score map on the thumbnail, sampled at the patch centres,
    ~10k weights whatever the number of patches); training runs glance 2 only on the top 3 patches chosen with
    non-maximum suppression plus 2 sampled exploration patches (`choice=topk`), so memory grows with k, not
    with the number of patches; test time runs glance 2 on the top 3 only. The grid and thumbnail follow the
    image size by the rule of `config.derive` (thumbnail and patch S/8, stride S/16: at 1024 a 128x128
    thumbnail and 15 x 15 patches of 128x128); channels and classes are read from the data.
        multiglance train --preset large-two --data PHOTOS
large-one: the one-glance baseline on a downsized view of equal test-time cost: the house CNN with twice glance
    2's filters on the image resized to S/8 (`input_fraction`; at 1024, 128x128; `multiglance bench large`
    measures both costs side by side).
megapixel-two / megapixel-easy-two: megapixel MNIST (1500x1500 with 50 scribbles / 500x500 clean, 5 digits,
    the label is the majority) on the same model and loop: glance 1 on a 240 (80) thumbnail, 50x50 patches at
    stride 25, top 5 with suppression, exploration by ink; AdamW.
megapixel-low-one / megapixel-easy-low-one: the one-glance baseline on glance 1's view: the house CNN with
    glance 2's filters on the canvas resized to the thumbnail side (240 / 80), trained as megapixel-two.
scenes-two / scenes-one: the photo benchmark `scenes-cifar10-512` (a 64x64 CIFAR-10 object in a 512x512 scene
    of Tiny ImageNet photographs): large-two and large-one at 512.
"""
from __future__ import annotations

from ..config import DataConfig, ModelConfig, RunConfig, TrainConfig
from .registry import register_model


def _large_train(**kw) -> TrainConfig:
    return TrainConfig(**({"epochs": 10, "batch_size": 16, "optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-4,
                           "uniform_weight": 1.0, "eval_batch_size": 16, "workers": 2} | kw))


STABLE = dict(batchnorm=True, head="pool")  # the house CNN's stable first step: BatchNorm, a global-pooled head
STABLE_TRAIN = dict(warmup_epochs=0.5, grad_clip=1.0)  # and a warm-up with clipped gradients


def _large_two(image_size: int | None = None, data: DataConfig | None = None, **model) -> RunConfig:
    m = ModelConfig(**({"kind": "two", "in_channels": None, "num_classes": None, "image_size": image_size,
                        "channels": (16, 32, 64), "glance1_channels": (16, 32), "pool_stride": 2,
                        "patch_size": None, "patch_stride": None, "thumb_size": None, "scorer": "conv",
                        "selection": "nms", "nms_radius": 1, "choice": "topk", "top_k": 3, "explore": 2,
                        "explore_by": "sample", "combine": "mixture", "topk_combine": "weights",
                        "glance1_aux": True, **STABLE} | model))
    return RunConfig(model=m, data=data or DataConfig(name="folder", flip=True),
                     train=_large_train(**STABLE_TRAIN, glance1_weight=1.0, rank_weight=1.0))


def _large_one(image_size: int | None = None, data: DataConfig | None = None) -> RunConfig:
    m = ModelConfig(kind="one", in_channels=None, num_classes=None, image_size=image_size, channels=(32, 64, 128),
                    pool_stride=2, input_fraction=1 / 8, **STABLE)
    return RunConfig(model=m, data=data or DataConfig(name="folder", flip=True),
                     train=_large_train(uniform_weight=0.0, batch_size=32, **STABLE_TRAIN))


def _megapixel(easy: bool) -> RunConfig:
    size, thumb = (500, 80) if easy else (1500, 240)
    m = ModelConfig(kind="two", in_channels=1, num_classes=10, image_size=size, thumb_size=thumb, patch_size=50,
                    patch_stride=25, channels=(16, 32, 64) if easy else (8, 16, 32), glance1_channels=(16, 32),
                    pool_stride=2, scorer="conv", selection="nms", nms_radius=1, choice="topk", top_k=5,
                    explore=4 if easy else 8, explore_by="ink", combine="mixture", topk_combine="equal")
    data = DataConfig(name="megapixel-mnist-easy" if easy else "megapixel-mnist")
    return RunConfig(model=m, data=data, train=_large_train(epochs=10 if easy else 8))


def _megapixel_low(easy: bool) -> RunConfig:
    two = _megapixel(easy)
    m = ModelConfig(kind="one", in_channels=1, num_classes=10, image_size=two.model.image_size,
                    input_size=two.model.thumb_size, channels=two.model.channels, pool_stride=2)
    return RunConfig(model=m, data=two.data, train=_large_train(epochs=3 if easy else 8, uniform_weight=0.0))


def _scenes() -> DataConfig:  # a new DataConfig per preset call: overrides of one run never leak into the next
    return DataConfig(name="scenes-cifar10-512", flip=True)


register_model("large-two")(lambda: _large_two())
register_model("large-one")(lambda: _large_one())
register_model("megapixel-two")(lambda: _megapixel(easy=False))
register_model("megapixel-easy-two")(lambda: _megapixel(easy=True))
register_model("megapixel-low-one")(lambda: _megapixel_low(easy=False))
register_model("megapixel-easy-low-one")(lambda: _megapixel_low(easy=True))
register_model("scenes-two")(lambda: _large_two(512, _scenes()))
register_model("scenes-one")(lambda: _large_one(512, _scenes()))
