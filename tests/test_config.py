"""Config: presets, YAML and key=value layers, type checks, round trip through plain dicts."""
from __future__ import annotations

import pytest

from multiglance.config import apply_overrides, apply_yaml, from_dict, to_dict
from multiglance.errors import ConfigError
from multiglance.models import get_preset


def test_overrides_typed_and_in_order():
    cfg = apply_overrides(get_preset("paper-cifar10-two"), ["train.lr=0.1", "epochs=3", "model.channels=8,8",
                                                              "batchnorm=true", "data.train_limit=none",
                                                              "lr=0.2"])
    assert cfg.train.lr == 0.2 and cfg.train.epochs == 3 and cfg.model.channels == (8, 8)
    assert cfg.model.batchnorm is True and cfg.data.train_limit is None


@pytest.mark.parametrize("item,message", [("train.lr=fast", "type float"), ("epochs=2.5", "type int"),
                                          ("nope=1", "unknown config key"), ("model.colour=1", "unknown"),
                                          ("lr", "key=value"), ("batchnorm=maybe", "true or false"),
                                          ("zzz.lr=1", "unknown config section")])
def test_bad_overrides_are_clear_errors(item, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(get_preset("digits-two"), [item])


def test_yaml_layer(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.5\nmodel:\n  combine: mixture\n")
    cfg = apply_yaml(get_preset("digits-two"), path)
    assert cfg.train.lr == 0.5 and cfg.model.combine == "mixture"
    path.write_text("train: [1, 2]\n")
    with pytest.raises(ConfigError, match="mapping"):
        apply_yaml(get_preset("digits-two"), path)
    with pytest.raises(ConfigError, match="does not exist"):
        apply_yaml(get_preset("digits-two"), tmp_path / "missing.yaml")


def test_round_trip_through_plain_dict():
    cfg = apply_overrides(get_preset("paper-tiny-two-s2"), ["fuse=true", "glance1_channels=4,4"])
    assert from_dict(to_dict(cfg)) == cfg
