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
