"""Property-based tests of the config parser (config.py): random and mutated overrides, YAML files and dicts
give a valid RunConfig or a ConfigError, never another exception."""
from __future__ import annotations

import dataclasses
import tempfile
import types
import typing
from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from multiglance.config import RunConfig, all_keys, apply_overrides, apply_yaml, from_dict, to_dict
from multiglance.errors import ConfigError
from multiglance.models import get_preset

KEYS = all_keys()
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                    st.text(max_size=12))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                      max_leaves=10)
OVERRIDE_TEXT = st.one_of(st.text(max_size=40), st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS + ["lr", "x"]),
                                                           st.one_of(st.text(max_size=15), SCALARS.map(str))))


def assert_well_typed(cfg: RunConfig) -> None:
    """Every field holds a value of its declared type (the parser's promise)."""
    for section in ("model", "data", "train"):
        obj = getattr(cfg, section)
        hints = typing.get_type_hints(type(obj))
        for f in dataclasses.fields(obj):
            value, tp = getattr(obj, f.name), hints[f.name]
            if value is None:
                assert type(None) in typing.get_args(tp), f.name
                continue
            union = typing.get_origin(tp) in (typing.Union, types.UnionType)
            args = [a for a in typing.get_args(tp) if a is not type(None)] if union else [tp]
            base = typing.get_origin(args[0]) or args[0]
            assert isinstance(value, base) and (base is not int or not isinstance(value, bool)), (f.name, value)
            if base is tuple:
                assert all(isinstance(v, typing.get_args(args[0])[0]) for v in value), (f.name, value)


def round_trips(cfg: RunConfig) -> None:
    assert to_dict(from_dict(to_dict(cfg))) == to_dict(cfg)


@settings(max_examples=300, deadline=None)
@given(st.lists(OVERRIDE_TEXT, max_size=4))
def test_random_overrides_give_a_typed_config_or_a_config_error(items: list[str]) -> None:
    try:
        cfg = apply_overrides(get_preset("digits-two"), items)
    except ConfigError as e:
        assert "\n" not in str(e)
        return
    assert_well_typed(cfg)
    round_trips(cfg)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.one_of(st.sampled_from(["model", "data", "train", "preset"]), st.text(max_size=6)),
                       st.one_of(VALUES, st.dictionaries(st.sampled_from([k.split(".")[1] for k in KEYS]), VALUES,
                                                         max_size=4)), max_size=4))
def test_random_dicts_give_a_typed_config_or_a_config_error(d: dict) -> None:
    try:
        cfg = from_dict(d)
    except ConfigError:
        return
    assert_well_typed(cfg)
    round_trips(cfg)


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin1")),
                 st.dictionaries(st.sampled_from(["model", "data", "train", "x"]), VALUES, max_size=3).map(
                     lambda d: yaml.safe_dump(d))))
def test_random_yaml_files_give_a_typed_config_or_a_config_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            cfg = apply_yaml(get_preset("digits-two"), path)
        except ConfigError:
            return
    assert_well_typed(cfg)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(list(b":-, \n\t{}[]#'\"!&*0az."))), max_size=6))
def test_mutated_saved_configs_give_a_typed_config_or_a_config_error(edits: list) -> None:
    text = list(yaml.safe_dump(to_dict(get_preset("digits-two")), sort_keys=False))
    for pos, char in edits:
        text[pos % len(text)] = chr(char)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.yaml"
        path.write_text("".join(text))
        try:
            cfg = apply_yaml(get_preset("digits-two"), path)
        except ConfigError:
            return
    assert_well_typed(cfg)
