"""Presets for photographs: ImageNet-pretrained glances (EfficientNet-Lite0), any photo size and aspect.

photos-two: glance 1 is EfficientNet-Lite0's first 11 blocks (stride 16, 112 channels) on a thumbnail of 256 rows
    (the width follows the aspect); a conv score map on its features, sampled at the centres of a grid of 128x128
    patches at stride 64, says where to look, and a 1x1 class map pooled with that score map's softmax gives
    glance 1 an answer of its own (`glance1_aux`), trained from the label alone, so it learns where the evidence
    is before glance 2 knows anything. Glance 2 is the whole EfficientNet-Lite0, global-pooled, on the top 3
    patches (non-maximum suppression; its stem and first 3 blocks kept as loaded) plus 2 explored ones in training (`choice=topk`: memory grows with k, not
    with the photograph), trained on their mixture, on their equal-weight mixture, and with glance 1 taught which
    chosen patch glance 2 reads best (`rank_weight`). Test time: glance 2 on the top 3 only. The image size is
    read from the data (the median photograph, rounded to the nearest size the grid tiles); every photograph is
    brought to it by the resize rule of data/stream.py.
        multiglance train --preset photos-two --data PHOTOS.zip --out runs/photos-two
    Where one class means "nothing here" (GTSDB's `none`), say so: `--set model.combine=presence --set
    model.background=none` (models/combine.py): one patch sure of an object then outvotes the empty ones, and
    every photograph of that class trains the patches glance 1 chose as hard negatives. `bench photos` does.
All three train on few photographs as fine-tuning usually does: flips, shifts of up to 32 pixels
(`data.crop_padding`), label smoothing 0.1, AdamW with half an epoch of warm-up and gradients clipped to norm 1.
photos-one: the same backbone on the photograph resized to 0.34 of its rows and columns, about photos-two's
    test-time FLOPs (`multiglance bench photos` measures both).
photos-full-one: the same backbone on the full-resolution photograph, the accuracy ceiling at 8x photos-two's
    FLOPs; its stem and first 8 blocks (up to stride 16) stay as loaded (`freeze`), which keeps full-resolution
    training affordable on a CPU (`bench photos` trains it for `--full-epochs`, 2 by default).
"""
from __future__ import annotations

from ..config import DataConfig, ModelConfig, RunConfig, TrainConfig
from .registry import register_model

PHOTO_BACKBONE = dict(backbone="efficientnet-lite0", pretrained=True, in_channels=None, num_classes=None,
                      image_size=None, pool_stride=2, channels=(16,))  # channels: unused by pretrained backbones


def _photo_train(**kw) -> TrainConfig:
    return TrainConfig(**({"epochs": 10, "batch_size": 8, "optimizer": "adamw", "lr": 5e-4, "weight_decay": 1e-4,
                           "label_smoothing": 0.1,
                           "warmup_epochs": 0.5, "grad_clip": 1.0, "eval_batch_size": 8, "workers": 2,
                           "checkpoint_minutes": 5.0} | kw))


def _photos_data() -> DataConfig:  # a new DataConfig per preset call: one run's overrides never leak into the next
    return DataConfig(name="folder", flip=True, crop_padding=32)


def _photos_two() -> RunConfig:
    m = ModelConfig(kind="two", **PHOTO_BACKBONE, glance1_backbone="efficientnet-lite0-s16", thumb_size=256,
                    patch_size=128, patch_stride=64, scorer="conv", score_width=64, glance1_aux=True,
                    selection="nms", nms_radius=1, choice="topk", top_k=3, explore=2, explore_by="sample",
                    combine="mixture", topk_combine="weights", freeze=3)
    return RunConfig(model=m, data=_photos_data(),
                     train=_photo_train(uniform_weight=1.0, glance1_weight=1.0, rank_weight=1.0))


def _photos_one(fraction: float | None, **model) -> RunConfig:
    m = ModelConfig(kind="one", **PHOTO_BACKBONE, input_fraction=fraction, **model)
    return RunConfig(model=m, data=_photos_data(), train=_photo_train())


register_model("photos-two")(_photos_two)
register_model("photos-one")(lambda: _photos_one(0.34))
register_model("photos-full-one")(lambda: _photos_one(None, freeze=8))
