"""Property-based tests of the config parser (config.py): random and mutated overrides, YAML files and dicts
give a valid RunConfig or a ConfigError, never another exception. Random `--set` values go on through
`validate`, the model (built on the meta device) and, for small models, a training forward and backward;
random `multiglance train` command lines end in success or one error line with exit code 2."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import tempfile
import types
import typing
from pathlib import Path

import torch
import yaml
from hypothesis import event, given, settings
from hypothesis import strategies as st

from multiglance import config
from multiglance.config import ENUMS, RunConfig, all_keys, apply_overrides, apply_yaml, from_dict, to_dict, validate
from multiglance.errors import ConfigError
from multiglance.models import as_output, build_model, get_preset

from conftest import examples

derive = getattr(config, "derive", None)  # fills model fields left to the data (in_channels, the patch grid...)

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


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(OVERRIDE_TEXT, max_size=4))
def test_random_overrides_give_a_typed_config_or_a_config_error(items: list[str]) -> None:
    try:
        cfg = apply_overrides(get_preset("digits-two"), items)
    except ConfigError as e:
        assert "\n" not in str(e)
        return
    assert_well_typed(cfg)
    round_trips(cfg)


@settings(max_examples=examples(200), deadline=None)
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


@settings(max_examples=examples(150), deadline=None)
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


@settings(max_examples=examples(100), deadline=None)
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


# ---- through validation, the model and one step; and the `train` command with random arguments ------------

NASTY = ["0", "-1", "1", "2", "3", "4", "7", "8", "16", "24", "48", str(10**20), str(2**63), "-0", "1e3", "nan",
         "inf", "-inf", "-1.5", "0.5", "1e-3", "1e400", "", "none", "true", "false", "abc", "16,16", "0,1", ","]
ENUM_VALUES = sorted({v for values in ENUMS.values() for v in values} | {"auto", "cpu", "cuda", "cuda:0", "gpu"})
SET_VALUE = st.one_of(st.sampled_from(NASTY + ENUM_VALUES), st.integers(-5, 70).map(str),
                      st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=8))


def typed_values(key: str) -> st.SearchStrategy[str]:
    """Values of the key's own type (careless ones among them) two times in three, anything otherwise."""
    section, name = key.split(".")
    tp = typing.get_type_hints(type(getattr(RunConfig(), section)))[name]
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    base = typing.get_origin(args[0]) or args[0]
    if key in ENUMS:
        own = st.sampled_from(ENUMS[key])
    elif base is bool:
        own = st.sampled_from(["true", "false", "none"])
    elif base is int:
        own = st.integers(-2, 64).map(str)
    elif base is float:
        own = st.one_of(st.sampled_from(["0", "0.1", "0.5", "1", "-1", "nan", "inf"]), st.floats(-2, 2).map(repr))
    elif base is tuple:
        own = st.lists(st.integers(0, 40), max_size=4).map(lambda v: ",".join(map(str, v)))
    else:
        own = st.text(max_size=6)
    return st.one_of(own, own, SET_VALUE)


SETS = st.lists(st.sampled_from(KEYS).flatmap(lambda k: typed_values(k).map(lambda v: (k, v))), min_size=1,
                max_size=3)


def one_line(e: BaseException) -> None:
    assert "\n" not in str(e) and str(e).strip(), repr(e)


def model_outcome(cfg: RunConfig) -> str:
    """A validated config builds (on the meta device: no memory) without any error; a small one runs a
    training forward, a backward and an eval forward on a random batch. Returns what it reached."""
    m = cfg.model
    if None in (m.in_channels, m.num_classes, m.patch_size, m.patch_stride, m.thumb_size) and derive is not None:
        h = m.image_size or 64  # a size left to the data: data of 64 x 64
        derive(cfg, (m.in_channels or 3, h, getattr(m, "image_width", None) or h),
               [str(i) for i in range(m.num_classes or 3)])
        try:
            validate(cfg)
        except ConfigError as e:
            one_line(e)
            return "refused after derive"
    with torch.device("meta"):
        model = build_model(m)  # validate accepted it: building must not fail
    params = sum(p.numel() for p in model.parameters())
    h, w = m.image_size, getattr(m, "image_width", None) or m.image_size
    if params > 300_000 or h * w > 64 * 64 or getattr(model, "num_patches", 1) > 64 or max(m.channels) > 64:
        return "built (meta)"
    torch.manual_seed(0)
    model = build_model(m)
    x, y = torch.rand(2, m.in_channels, h, w), torch.tensor([0, m.num_classes - 1])  # (B, C, H, W)
    out = as_output(model.train()(x)).answer  # (B, K)
    assert out.shape == (2, m.num_classes)
    torch.nn.functional.cross_entropy(out, y).backward()
    with torch.no_grad():
        assert model.eval()(x).shape == (2, m.num_classes)
    return "forward and backward"


@settings(max_examples=examples(400), deadline=None)
@given(st.sampled_from(["digits-two", "digits-one", "large-two"]), SETS)
def test_random_set_values_are_refused_in_one_line_or_build_and_run(preset: str, sets: list) -> None:
    cfg = get_preset(preset)
    try:
        apply_overrides(cfg, [f"{k}={v}" for k, v in sets])
    except ConfigError as e:
        one_line(e)
        event("refused by the parser")
        return
    try:
        validate(cfg)
    except ConfigError as e:
        one_line(e)
        event("refused by validate")
        return
    event(model_outcome(cfg))


KEY_VALUE = st.sampled_from(KEYS).flatmap(lambda k: typed_values(k).map(lambda v: f"{k}={v}"))
ARGUMENTS = st.one_of(  # mostly well-formed options with careless values; now and then a stray token
    *[st.tuples(st.just("--set"), KEY_VALUE)] * 3,
    st.tuples(st.just("--epochs"), st.one_of(st.integers(-3, 4).map(str), st.sampled_from(["x", "1e3", "", "1.5"]))),
    st.tuples(st.just("--preset"), st.sampled_from(["digits-two", "digits-one", "nope", ""])),
    st.tuples(st.just("--data"), st.sampled_from(["", "nowhere", "."])),
    st.tuples(st.just("--config"), st.sampled_from(["missing.yaml", ""])),
    st.tuples(st.just("--out"), st.sampled_from(["r", "", "a/b"])),
    st.just(("--resume",)), st.just(("--quiet",)),
    st.tuples(st.one_of(st.sampled_from(["--", "-e", "--set", "--epochs", "x", "0"]), st.text(max_size=6))))


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(ARGUMENTS, max_size=5), st.integers(0, 9))
def test_random_train_command_lines_end_in_success_or_one_line_exit_2(arguments: list, which: int) -> None:
    from unittest import mock

    import multiglance.train
    from multiglance.cli import main

    tokens = [t for arg in arguments for t in arg]
    argv = ["train", *(["--preset", ["digits-two", "digits-one"][which % 2]] if which < 8 else []), *tokens]
    reached = []

    def fit(cfg, out, **kwargs):  # instead of training: the model must build from what validate accepted
        reached.append(model_outcome(cfg))
        return {}

    err, out = io.StringIO(), io.StringIO()
    with tempfile.TemporaryDirectory() as d, mock.patch.object(multiglance.train, "fit", fit), \
            contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), contextlib.chdir(d):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse: a usage error (2) or --help (0), before any of our code runs
            assert e.code in (0, 2) and "Traceback" not in err.getvalue()
            event(f"argparse exit {e.code}")
            return
        assert not list(Path(d).iterdir()), "nothing may be written"
    if code == 0:
        assert reached and "run saved in" in out.getvalue()
        event(f"ran: {reached[0]}")
        return
    message = err.getvalue()
    assert code == 2 and message.startswith("multiglance: error: ") and message.count("\n") == 1, message
    event("one-line error, exit 2")
