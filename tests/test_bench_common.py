"""bench/common.py: the shared train-evaluate-publish path (train_or_resume, val_and_test, epoch_records) and
how paths appear in published JSON."""
from __future__ import annotations

import os

import pytest

import multiglance.train
import multiglance.train.inputs as inputs
from multiglance import runs
from multiglance.bench.common import epoch_records, eval_command, shown_config, train_or_resume, val_and_test
from multiglance.errors import UserError
from multiglance.evaluate import evaluate_run
from multiglance.results import command_line, shown_path

from conftest import tiny_config


def _config(**overrides):
    return tiny_config("digits-one", **{"data.train_limit": 256, "data.val_limit": 64, "data.test_limit": 64,
                                        **overrides})


def test_train_or_resume_trains_resumes_keeps_and_refuses(tmp_path, monkeypatch):
    run = tmp_path / "run"
    assert train_or_resume(_config(), run) is True and len(epoch_records(run)) == 1
    # cut short (one epoch of two): resumed, not restarted
    assert train_or_resume(_config(**{"train.epochs": 2}), run) is True
    assert [r["epoch"] for r in epoch_records(run)] == [1, 2]
    assert [r["kind"] for r in runs.read_metrics(run)].count("resume") == 1

    def no_fit(*a, **k):
        raise AssertionError("a complete run is not trained again")

    monkeypatch.setattr(multiglance.train, "fit", no_fit)
    assert train_or_resume(_config(**{"train.epochs": 2}), run) is True  # complete: kept as it is
    with pytest.raises(UserError, match=r"holds a run of another config \(train.lr differ\)"):
        train_or_resume(_config(**{"train.epochs": 2, "train.lr": 0.5}), run)
    monkeypatch.setattr(multiglance.train, "fit", lambda *a, **k: None)  # a fit stopped by a signal
    assert train_or_resume(_config(**{"train.epochs": 3}), run) is False


def test_val_and_test_reads_val_then_test_by_the_models_own_path(tiny_run, monkeypatch):
    seen = []
    real = inputs.load_split
    monkeypatch.setattr(inputs, "load_split", lambda name, root, split, **kw: seen.append(split) or
                        real(name, root, split, **kw))
    r = val_and_test(tiny_run, k=2)
    assert seen == ["val", "test"]  # validation first, the test split once
    assert r["selection"] == "val" and r["val_images"] == 128 and r["test_images"] == 128 and r["top_k"] == 2
    assert r["eval_command"] == f"multiglance eval {shown_path(tiny_run)} --split test --set model.top_k=2"
    assert r["run_dir"] == tiny_run.name and "run" not in r and "split" not in r
    monkeypatch.setattr(inputs, "load_split", real)
    test = evaluate_run(tiny_run, overrides=["model.top_k=2"], timing=False)
    val = evaluate_run(tiny_run, split="val", overrides=["model.top_k=2"], timing=False)
    assert (r["accuracy_hard"], r["accuracy_soft"]) == (test["accuracy_hard"], test["accuracy_soft"])
    assert (r["val_accuracy_hard"], r["val_accuracy_soft"]) == (val["accuracy_hard"], val["accuracy_soft"])
    assert r["test_flops_per_image"] == test["test_flops_per_image"] and "latency_ms_batch1" not in r


def test_epoch_records_keep_the_last_of_a_repeated_epoch(tmp_path):
    for rec in ({"kind": "epoch", "epoch": 1, "val_acc_hard": 0.1}, {"kind": "step", "step": 3},
                {"kind": "epoch", "epoch": 2, "val_acc_hard": 0.2}, {"kind": "resume", "epoch": 1},
                {"kind": "epoch", "epoch": 2, "val_acc_hard": 0.3}):
        runs.append_metrics(tmp_path, rec)
    assert [(r["epoch"], r["val_acc_hard"]) for r in epoch_records(tmp_path)] == [(1, 0.1), (2, 0.3)]
    assert epoch_records(tmp_path / "none") == []


def test_paths_are_shown_without_machine_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outside = os.path.abspath(os.sep + "elsewhere" + os.sep + "runs")
    assert shown_path("runs/x") == "runs/x" and shown_path(tmp_path / "a" / "b") == "a/b"
    assert shown_path(outside) == "runs"
    line = command_line(["bench", "beyond", "--runs-dir", outside, f"--data={tmp_path / 'mnist'}", "--quick"])
    assert line == "multiglance bench beyond --runs-dir runs --data=mnist --quick"
    assert eval_command(tmp_path / "r", "val", ["model.top_k=3"]) == "multiglance eval r --split val --set model.top_k=3"
    cfg = _config(**{"data.root": str(tmp_path / "data" / "mnist")})
    assert shown_config(cfg)["data"]["root"] == "data/mnist"
