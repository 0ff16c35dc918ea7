"""Tests for config.validate (config_rules.py): every preset passes; each out-of-range or inconsistent value is one
ConfigError line naming the key, the value and what is allowed; every config key has a rule."""
from __future__ import annotations

import dataclasses
import typing

import pytest

from multiglance.config import ENUMS, RULES, UNCHECKED, SECTIONS, all_keys, apply_overrides, validate
from multiglance.errors import ConfigError
from multiglance.models import get_preset, list_models


def error_of(*overrides: str, preset: str = "digits-two") -> str:
    cfg = apply_overrides(get_preset(preset), list(overrides))
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    message = str(e.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("name", list_models())
def test_every_preset_is_valid(name: str) -> None:
    cfg = get_preset(name)
    assert validate(cfg) is cfg


@pytest.mark.parametrize("override,expected", [
    ("model.patch_size=0", "model.patch_size=0 must be an integer in [1, 65536]"),
    ("model.patch_stride=0", "model.patch_stride=0 must be an integer in [1, 65536]"),
    ("model.thumb_size=0", "model.thumb_size=0 must be an integer in [1, 65536]"),
    ("model.image_size=-3", "model.image_size=-3 must be an integer in [1, 65536]"),
    ("model.image_size=100000", "model.image_size=100000 must be an integer in [1, 65536]"),
    ("model.num_classes=1", "model.num_classes=1 must be an integer in [2, 1000000]"),
    ("model.in_channels=0", "model.in_channels=0 must be an integer in [1, 4096]"),
    ("model.channels=16,0,32", "model.channels=16,0,32 must be a non-empty comma-separated list"),
    ("model.pool_stride=3", "model.pool_stride=3 must be an integer in [1, 2]"),
    ("model.tau=0", "model.tau=0.0 must be > 0"),
    ("model.tau=nan", "model.tau=nan must be > 0"),
    ("model.kind=three", "model.kind='three' must be one of one, two"),
    ("model.combine=sum", "model.combine='sum' must be one of logits, probs, mixture"),
    ("model.choice=best", "must be one of soft, gumbel, reinforce, oracle, topk"),
    ("model.top_k=0", "model.top_k=0 must be an integer >= 1"),
    ("train.batch_size=0", "train.batch_size=0 must be an integer >= 1"),
    ("train.eval_batch_size=-1", "train.eval_batch_size=-1 must be an integer >= 1"),
    ("train.lr=-1", "train.lr=-1.0 must be > 0"),
    ("train.lr=0", "train.lr=0.0 must be > 0"),
    ("train.lr=inf", "train.lr=inf must be > 0"),
    ("train.momentum=1", "train.momentum=1.0 must be in [0, 1)"),
    ("train.weight_decay=-0.1", "train.weight_decay=-0.1 must be >= 0"),
    ("train.epochs=0", "train.epochs=0 must be an integer >= 1"),
    ("train.epochs=-1", "train.epochs=-1 must be an integer >= 1"),
    ("train.warmup_epochs=-1", "train.warmup_epochs=-1.0 must be >= 0"),
    ("train.label_smoothing=1", "train.label_smoothing=1.0 must be in [0, 1)"),
    ("train.entropy_weight=nan", "train.entropy_weight=nan must be a finite number"),
    ("train.oracle_best=1.5", "train.oracle_best=1.5 must be in [0, 1]"),
    ("train.tau_final=0", "train.tau_final=0.0 must be > 0 or none"),
    ("train.log_every=0", "train.log_every=0 must be an integer >= 1"),
    ("train.checkpoint_every=-1", "train.checkpoint_every=-1 must be an integer >= 0"),
    ("train.schedule=linear", "train.schedule='linear' must be one of cosine, step, constant"),
    ("train.device=gpu", "train.device='gpu' must be auto, cpu, cuda or cuda:N"),
    ("train.seed=-1", "train.seed=-1 must be an integer in [0, "),
    ("data.train_limit=-5", "data.train_limit=-5 must be an integer >= 1 or none"),
    ("data.train_limit=0", "data.train_limit=0 must be an integer >= 1 or none"),
    ("data.test_limit=0", "data.test_limit=0 must be an integer >= 1 or none"),
    ("data.crop_padding=-1", "data.crop_padding=-1 must be an integer in [0, 65536]"),
    ("data.name= ", "data.name='' must be a non-empty name"),
])
def test_out_of_range_values_name_key_value_and_range(override: str, expected: str) -> None:
    assert expected in error_of(override)


@pytest.mark.parametrize("key,value,expected", [
    ("data.val_fraction", "0", "data.val_fraction=0.0 must be in (0, 0.5]"),
    ("data.val_fraction", "0.6", "data.val_fraction=0.6 must be in (0, 0.5]"),
    ("train.optimizer", "adam", "train.optimizer='adam' must be one of sgd, adamw"),
    ("train.workers", "-1", "train.workers=-1 must be an integer in [0, 256]"),
    ("train.uniform_weight", "-1", "train.uniform_weight=-1.0 must be >= 0"),
    ("model.scorer", "mlp", "model.scorer='mlp' must be one of dense, conv"),
    ("model.selection", "best", "model.selection='best' must be one of topk, nms"),
    ("model.nms_radius", "-1", "model.nms_radius=-1 must be an integer in [0, 65536]"),
    ("model.image_width", "0", "model.image_width=0 must be an integer in [1, 65536] or none"),
])
def test_later_fields_are_checked(key: str, value: str, expected: str) -> None:
    assert key in all_keys()
    assert expected in error_of(f"{key}={value}")


def test_consistency_between_fields() -> None:
    assert "model.top_k=10 must be between 1 and the number of patches (9)" in error_of("model.top_k=10")
    assert "data.crop_padding=49 must be between 0 and the image side (48)" in error_of("data.crop_padding=49")
    validate(apply_overrides(get_preset("digits-two"), ["train.warmup_epochs=11.5", "train.epochs=12"]))
    # a warm-up as long as the run is not refused (`--epochs 1` on a preset warming up one epoch): the loop
    # shortens it to half the run and says so (tests/test_train.py -k warm_up)
    validate(apply_overrides(get_preset("digits-two"), ["train.warmup_epochs=12", "train.epochs=12"]))


def test_a_grid_that_does_not_tile_names_the_nearest_valid_sizes() -> None:
    # digits-two: 48x48 images, stride 12: valid patches 12, 24, 36, 48; valid sides 10 + 12 n
    message = error_of("model.patch_size=10")
    assert message.startswith("model.patch_size=10 with model.patch_stride=12 does not tile model.image_size=48")
    assert "nearest valid: model.patch_size 12, or model.image_size 46 or 58" in message
    assert "model.patch_size 36 or 48, or model.image_size 40 or 52" in error_of("model.patch_size=40")
    assert "model.patch_size 48 or 36, " not in error_of("model.patch_size=60")  # sorted, and within the image
    assert "model.patch_size 36 or 48, or model.image_size 60 or 72" in error_of("model.patch_size=60")
    for fix in (["model.patch_size=12"], ["model.patch_size=10", "model.image_size=46"],
                ["model.patch_size=10", "model.image_size=58"], ["model.patch_size=36"]):
        validate(apply_overrides(get_preset("digits-two"), fix))  # the suggestions are valid


def test_a_wide_image_needs_the_grid_to_tile_its_width_too() -> None:
    assert "does not tile model.image_width=50" in error_of("model.image_width=50")
    cfg = validate(apply_overrides(get_preset("digits-two"), ["model.image_width=72", "model.top_k=15"]))
    assert cfg.model.image_width == 72  # a 3 x 5 grid: 15 patches


def test_a_one_glance_model_ignores_the_patch_grid_and_takes_any_aspect() -> None:
    validate(apply_overrides(get_preset("digits-one"), ["model.patch_size=40", "model.top_k=100"]))
    validate(apply_overrides(get_preset("digits-one"), ["model.image_width=60"]))  # one glance reads any shape


def test_top_k_and_exploration_patches_must_fit_the_grid() -> None:
    assert "model.top_k + model.explore = 10 training patches, but there are only 9" in error_of(
        "model.choice=topk", "model.top_k=3", "model.explore=7")
    validate(apply_overrides(get_preset("digits-two"), ["model.choice=topk", "model.top_k=3", "model.explore=6"]))


def test_fields_left_to_the_data_are_accepted() -> None:
    fields = ("in_channels", "num_classes", "patch_size", "patch_stride", "thumb_size")
    cfg = validate(apply_overrides(get_preset("digits-two"), [f"model.{k}=none" for k in fields]))
    assert [getattr(cfg.model, k) for k in fields] == [None] * 5  # left for config.derive, not refused


def test_wrongly_typed_values_set_by_code_are_config_errors_not_type_errors() -> None:
    cfg = get_preset("digits-two")
    cfg.train.lr = "fast"
    with pytest.raises(ConfigError, match="train.lr='fast' must be > 0"):
        validate(cfg)
    cfg = get_preset("digits-two")
    cfg.model.channels = [16, 32]  # a list, not a tuple
    with pytest.raises(ConfigError, match="model.channels"):
        validate(cfg)


def test_every_key_has_a_rule() -> None:
    """A new non-boolean config field needs a rule in config.RULES / ENUMS (or UNCHECKED, for free text)."""
    missing = []
    for section in SECTIONS:
        obj = getattr(get_preset("digits-two"), section)
        hints = typing.get_type_hints(type(obj))
        for f in dataclasses.fields(obj):
            key, tp = f"{section}.{f.name}", hints[f.name]
            if tp is bool or set(typing.get_args(tp)) == {bool, type(None)}:
                continue
            if key not in RULES and key not in ENUMS and key not in UNCHECKED:
                missing.append(key)
    assert not missing, missing


def test_the_enums_agree_with_the_models() -> None:
    from multiglance.models import glances

    for key, name in (("model.combine", "COMBINE_MODES"), ("model.inference", "INFERENCE_MODES"),
                      ("model.choice", "CHOICE_MODES"), ("model.scorer", "SCORERS"),
                      ("model.selection", "SELECTIONS"), ("model.topk_combine", "TOPK_COMBINES"),
                      ("model.explore_by", "EXPLORE_BY")):
        if hasattr(glances, name):
            assert tuple(ENUMS[key]) == tuple(getattr(glances, name)), key


def test_the_rules_read_the_sections_config_declares() -> None:
    """config_rules.py does not import config.py; it finds the sections itself, and they must be SECTIONS, in order.
    Its names stay importable from multiglance.config."""
    from multiglance import config, config_rules
    from multiglance.config import RunConfig

    assert config_rules._sections(RunConfig()) == list(SECTIONS)
    for name in ("validate", "ENUMS", "RULES", "UNCHECKED", "MAX_SIDE", "PRETRAINED_BACKBONES"):
        assert getattr(config, name) is getattr(config_rules, name), name
