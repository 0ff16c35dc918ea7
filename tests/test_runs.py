"""Tests for runs.py's resume helpers: config_diff, check_resume (what a --resume may change) and
describe_resume (the line that says where training continues)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from multiglance import runs
from multiglance.config import apply_overrides, to_dict
from multiglance.errors import CheckpointError, UserError
from multiglance.models import get_preset


def config(*overrides: str):
    return apply_overrides(get_preset("digits-two"), ["train.epochs=3", *overrides])


def save_run(folder: Path, cfg, *, epoch: int = 0, step: int = 8, batch_in_epoch: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    runs.save_checkpoint(folder, {"model": {"w": torch.zeros(2)}, "epoch": epoch, "step": step,
                                  "batch_in_epoch": batch_in_epoch, "config": to_dict(cfg), "preset": cfg.preset})
    return folder


def test_config_diff_lists_dotted_keys_that_differ() -> None:
    old, new = to_dict(config()), to_dict(config("model.patch_size=12", "train.lr=0.1"))
    assert runs.config_diff(old, new) == ["model.patch_size", "train.lr"]
    assert runs.config_diff(old, old) == []
    assert runs.config_diff({"model": {"channels": (16, 32)}}, {"model": {"channels": [16, 32]}}) == []
    assert runs.config_diff({"model": {"a": 1}}, {"model": {"a": 1, "b": None}}) == ["model.b"]  # only one has it


def test_check_resume_without_a_run_is_an_error(tmp_path: Path) -> None:
    for folder in (tmp_path / "typo", tmp_path):
        with pytest.raises(UserError, match=r"--resume: .* holds no run \(no checkpoint.pt\); check --out or "
                                            "drop --resume"):
            runs.check_resume(folder, config())


def test_check_resume_refuses_a_changed_config_listing_the_keys(tmp_path: Path) -> None:
    run = save_run(tmp_path / "r", config())
    with pytest.raises(UserError) as e:
        runs.check_resume(run, config("model.patch_size=12", "data.train_limit=300", "train.epochs=5"))
    message = str(e.value)
    assert message == ("--resume: the config differs from the run's in data.train_limit (None -> 300), "
                       "model.patch_size (24 -> 12); resume with the same settings or use another --out")


def test_check_resume_allows_more_epochs_and_reports_them(tmp_path: Path) -> None:
    run = save_run(tmp_path / "r", config())
    result = runs.check_resume(run, config())
    assert result["changed"] == [] and result["state"]["step"] == 8
    result = runs.check_resume(run, config("train.epochs=5"))
    assert result["changed"] == ["train.epochs"] and result["values"] == {"train.epochs": [3, 5]}
    assert runs.RESUMABLE_KEYS == {"train.epochs"}


def test_check_resume_of_a_finished_run_says_how_to_train_further(tmp_path: Path) -> None:
    run = save_run(tmp_path / "r", config(), epoch=2, step=24)  # all 3 epochs done
    with pytest.raises(UserError, match="has done 3 epochs, train.epochs=3; pass --epochs 4 or more"):
        runs.check_resume(run, config())
    assert runs.check_resume(run, config("train.epochs=4"))["changed"] == ["train.epochs"]
    mid = save_run(tmp_path / "m", config(), epoch=1, step=20, batch_in_epoch=4)  # inside epoch 3
    assert runs.check_resume(mid, config())["state"]["batch_in_epoch"] == 4
    with pytest.raises(UserError, match="has done 2 epochs and part of the next, train.epochs=2"):
        runs.check_resume(mid, config("train.epochs=2"))


def test_check_resume_of_a_checkpoint_without_config(tmp_path: Path) -> None:
    tmp_path.joinpath("r").mkdir()
    runs.save_checkpoint(tmp_path / "r", {"model": {}, "epoch": 0, "step": 1})
    with pytest.raises(CheckpointError, match="records no config"):
        runs.check_resume(tmp_path / "r", config())


def test_check_resume_fills_keys_added_since_with_their_defaults(tmp_path: Path) -> None:
    cfg = config()
    old = to_dict(cfg)
    assert old["data"].pop("fresh_canvases") is False  # a run made before this key existed (default False)
    (tmp_path / "r").mkdir()
    runs.save_checkpoint(tmp_path / "r", {"model": {}, "epoch": 0, "step": 8, "config": old})
    assert runs.check_resume(tmp_path / "r", cfg)["changed"] == []
    with pytest.raises(UserError, match=r"data.fresh_canvases \(False -> True\)"):
        runs.check_resume(tmp_path / "r", config("data.fresh_canvases=true"))


def test_describe_resume(tmp_path: Path) -> None:
    run = save_run(tmp_path / "r", config(), epoch=1, step=16)
    stamp = time.mktime((2026, 12, 2, 14, 3, 0, 0, 0, -1))
    os.utime(run / runs.CHECKPOINT, (stamp, stamp))
    state = runs.load_checkpoint(run)
    assert runs.describe_resume(state, run) == ("resuming from epoch 3, step 16 (checkpoint of 2026-12-02 14:03, "
                                                "epoch 2 done)")  # state["epoch"] is 0-based: epochs 1, 2 done
    mid = {"epoch": -1, "step": 3, "batch_in_epoch": 3}
    assert runs.describe_resume(mid, run / runs.CHECKPOINT) == ("resuming from epoch 1, step 3 (checkpoint of "
                                                                "2026-12-02 14:03, inside it, after batch 3)")
