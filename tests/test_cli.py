"""CLI: every command has --help; bad input is one clear line, exit 2, no traceback, nothing damaged."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from multiglance import runs
from multiglance.cli import build_parser, main

REQUIRED_EVAL_KEYS = {"dataset", "preset", "model", "accuracy_hard", "accuracy_soft", "test_flops_per_image",
                      "params", "latency_ms_batch1", "images_per_s_batch256"}


def commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return list(sub.choices)


@pytest.mark.parametrize("command", commands())
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0 and "usage" in capsys.readouterr().out


def error_of(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("multiglance: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_unknown_preset(capsys):
    assert "unknown preset" in error_of(["train", "--preset", "nope"], capsys)


def test_unknown_key_and_bad_value(capsys, tmp_path):
    assert "unknown config key" in error_of(["train", "--preset", "digits-two", "--set", "foo=1",
                                             "--out", str(tmp_path / "r")], capsys)
    assert "type float" in error_of(["train", "--preset", "digits-two", "--set", "lr=x"], capsys)


def test_missing_data_path(capsys, tmp_path):
    err = error_of(["train", "--preset", "paper-cifar10-two", "--data", str(tmp_path / "nowhere"),
                    "--out", str(tmp_path / "r")], capsys)
    assert "does not exist" in err and not (tmp_path / "r").exists()


def test_archive_without_expected_layout(capsys, tmp_path):
    import zipfile

    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("readme.txt", "hello")
    assert "multiglance: error:" in error_of(["train", "--preset", "paper-tiny-two", "--data", str(bad),
                                              "--out", str(tmp_path / "r")], capsys)


def test_eval_of_a_folder_that_is_not_a_run(capsys, tmp_path):
    assert "not a run folder" in error_of(["eval", str(tmp_path)], capsys)


def test_corrupt_checkpoint_is_refused_and_left_alone(tiny_run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    data = (copy / runs.CHECKPOINT).read_bytes()
    (copy / runs.CHECKPOINT).write_bytes(data[: len(data) // 2])
    assert "checkpoint" in error_of(["eval", str(copy)], capsys)
    assert (copy / runs.CHECKPOINT).read_bytes() == data[: len(data) // 2]


def test_checkpoint_from_another_model(tiny_run, tiny_run_one, tmp_path, capsys):
    import shutil

    copy = tmp_path / "mixed"
    shutil.copytree(tiny_run, copy)
    shutil.copy(tiny_run_one / runs.CHECKPOINT, copy / runs.CHECKPOINT)
    assert "another model" in error_of(["eval", str(copy), "--no-timing"], capsys)


def test_eval_json_and_compare(tiny_run, tiny_run_one, capsys, tmp_path):
    assert main(["eval", str(tiny_run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert REQUIRED_EVAL_KEYS <= set(result)
    assert result["model"] == "two" and result["preset"] == "digits-two" and 0 <= result["accuracy_hard"] <= 1
    assert result["test_flops_per_image"] < result["soft_flops_per_image"]
    assert main(["compare", str(tiny_run_one), str(tiny_run), "--plot", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    assert "digits-one" in out and "digits-two" in out and (tmp_path / "c.png").stat().st_size > 1000


def test_console_script_subprocess_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "multiglance", "eval", str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


@pytest.mark.parametrize("args,expected", [
    (["--set", "model.patch_size=0"], "model.patch_size=0 must be an integer in [1, 65536]"),
    (["--set", "model.patch_stride=0"], "model.patch_stride=0 must be"),
    (["--set", "model.thumb_size=0"], "model.thumb_size=0 must be"),
    (["--set", "train.batch_size=0"], "train.batch_size=0 must be an integer >= 1"),
    (["--set", "train.lr=-1"], "train.lr=-1.0 must be > 0"),
    (["--set", "data.train_limit=-5"], "data.train_limit=-5 must be an integer >= 1 or none"),
    (["--set", "train.warmup_epochs=-1"], "train.warmup_epochs=-1.0 must be >= 0"),
    (["--epochs", "0"], "train.epochs=0 must be an integer >= 1"),
    (["--epochs", "-1"], "train.epochs=-1 must be an integer >= 1"),
    (["--set", "model.patch_size=10"], "nearest valid: model.patch_size 12"),
])
def test_out_of_range_values_are_one_line_before_anything_is_written(args, expected, capsys, tmp_path,
                                                                      monkeypatch):
    import multiglance.train

    monkeypatch.setattr(multiglance.train, "fit", lambda *a, **k: pytest.fail("fit must not be reached"))
    out = tmp_path / "r"
    assert expected in error_of(["train", "--preset", "digits-two", "--out", str(out), *args], capsys)
    assert not out.exists()


def oom_of(error: BaseException, capsys, tmp_path, monkeypatch) -> str:
    import multiglance.train

    def fit(*args, **kwargs):
        raise error
    monkeypatch.setattr(multiglance.train, "fit", fit)
    return error_of(["train", "--preset", "digits-two", "--out", str(tmp_path / "r")], capsys)


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:114] data. DefaultCPUAllocator: not enough memory: you tried "
                 "to allocate 68719476736 bytes."),
    RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1234 bytes. Error code 12"),
    MemoryError(),
])
def test_cpu_out_of_memory_is_one_line_naming_the_knobs(error, capsys, tmp_path, monkeypatch):
    err = oom_of(error, capsys, tmp_path, monkeypatch)
    assert err.startswith("multiglance: error: out of memory (")
    for knob in ("train.batch_size", "train.eval_batch_size", "model.top_k", "model.patch_stride", "workers"):
        assert knob in err


def test_cuda_out_of_memory_is_one_line(capsys, tmp_path, monkeypatch):
    import torch

    error = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.15 GiB total "
                                        "capacity)\nIf reserved but unallocated memory is large try ...")
    err = oom_of(error, capsys, tmp_path, monkeypatch)
    assert "out of memory (CUDA out of memory. Tried to allocate 20.00 GiB" in err and "train.batch_size" in err


def test_other_runtime_errors_are_not_swallowed(tmp_path, monkeypatch):
    import multiglance.train

    def fit(*args, **kwargs):
        raise RuntimeError("a bug, not the user's fault")
    monkeypatch.setattr(multiglance.train, "fit", fit)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["train", "--preset", "digits-two", "--out", str(tmp_path / "r")])


def test_presets_print_the_derivation_rule_not_none(capsys):
    """Presets that leave the grid to the data print config.derive's rule and its result at their image size."""
    from multiglance.config import derive
    from multiglance.models import get_preset

    assert main(["presets"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert not [line for line in lines.values() if "None" in line]
    assert lines["large-two"].endswith(
        "patches and thumb from the data by config.derive: patch_size about S/8, patch_stride about patch/2 (so the "
        "grid tiles), thumb_size about H/8, H x W from the images")
    assert lines["photos-two"].endswith("two-glance efficientnet-lite0 (glance 1: efficientnet-lite0-s16), "
                                        "ImageNet-pretrained patches 128/64 thumb 256")
    cfg = get_preset("scenes-two")
    m = derive(cfg, (3, 512, 512), ["a", "b"]).model  # what training on 512x512 scenes fills in
    assert f"patches {m.patch_size}/{m.patch_stride} thumb {m.thumb_size} (from the data" in lines["scenes-two"]
    assert lines["digits-two"].endswith("patches 24/12 thumb 16")  # set by the preset: no rule
    assert "patches" not in lines["digits-one"]
