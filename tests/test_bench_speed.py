"""bench/speed.py: `multiglance bench speed --quick` end to end (keys and sane values), the shared `bench` group."""
from __future__ import annotations

import argparse
import json
import os

import pytest
import torch

from multiglance.bench import beyond, large, megapixel, paper, photos
from multiglance.bench import speed as bench
from multiglance.bench.common import bench_subparsers
from multiglance.cli import main

ROW_KEYS = ("preset", "peak_gflops", "train_images_per_s", "train_gflops", "train_peak_ratio")
TWO_KEYS = ("flop_ratio", "speedup_batch1", "speedup_batch256", "speedup_over_flop_ratio_batch1",
            "speedup_over_flop_ratio_batch256")


def test_bench_speed_quick_writes_sane_json(tmp_path, capsys):
    path = tmp_path / "speed.json"
    assert main(["bench", "speed", "--quick", "--reps", "2", "--json", str(path)]) == 0
    record = json.loads(path.read_text())
    assert "digits-two" in capsys.readouterr().out  # the table was printed
    assert record["threads"] == 1 and record["quick"] and len(record["loadavg_start"]) == 3
    one, two = record["rows"]
    assert (one["preset"], two["preset"], two["family"]) == ("digits-one", "digits-two", "digits-one")
    for row in (one, two):
        assert all(k in row for k in ROW_KEYS), row
        assert row["peak_gflops"] > 0.1 and row["train_images_per_s"] > 1 and row["train_gflops"] > 0
        assert 0 < row["train_peak_ratio"] < 10 and row["latency_ms_batch1"] > 0 and row["fast_fallback"] is None
        # GFLOP/s is FLOPs per image times images per second
        assert row["train_gflops"] == pytest.approx(row["train_flops_per_image"] * row["train_images_per_s"] / 1e9)
    assert all(k in two for k in TWO_KEYS), two
    assert two["flop_ratio"] == pytest.approx(one["test_flops_per_image"] / two["test_flops_per_image"])
    assert two["flop_ratio"] > 5  # a 24x24 patch of a 48x48 image, half the filters
    assert two["speedup_batch1"] > 0 and two["speedup_batch256"] > 0
    assert two["speedup_over_flop_ratio_batch1"] == pytest.approx(two["speedup_batch1"] / two["flop_ratio"])


def test_unknown_or_unpaired_preset_is_a_clear_error(tmp_path, capsys):
    assert main(["bench", "speed", "--presets", "no-such-net", "--json", str(tmp_path / "x.json")]) == 2
    assert "unknown preset" in capsys.readouterr().err
    assert bench._pairs_for(["paper-cifar10-two", "paper-cifar10-one"]) == [("paper-cifar10-one",
                                                                              "paper-cifar10-two")]


def test_refuses_to_measure_on_a_loaded_machine(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench.os, "getloadavg", lambda: (7.5, 6.0, 5.0))
    path = tmp_path / "speed.json"
    assert main(["bench", "speed", "--quick", "--max-load", "2", "--json", str(path)]) == 2
    err = capsys.readouterr().err
    assert "load average 7.5 before the run is above --max-load 2" in err and "Traceback" not in err
    assert not path.exists()


def test_refuses_to_publish_when_the_load_rose_during_the_run(tmp_path, capsys, monkeypatch):
    loads = iter([(0.5, 0.5, 0.5)] * 2 + [(9.0, 4.0, 2.0)] * 10)  # idle at the start, loaded at the end
    monkeypatch.setattr(bench.os, "getloadavg", lambda: next(loads))
    monkeypatch.setattr(bench, "run_speed", lambda *a, **k: {"loadavg_start": list(os.getloadavg())})
    path = tmp_path / "speed.json"
    assert main(["bench", "speed", "--quick", "--max-load", "2", "--json", str(path)]) == 2
    assert "at the end of the run (nothing written)" in capsys.readouterr().err
    assert not path.exists()


@pytest.mark.parametrize("first", [True, False])
def test_bench_group_works_in_any_registration_order(first):
    others = [paper, beyond, megapixel, large, photos]
    order = [bench, *others] if first else [*others, bench]
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    for module in order:
        module.register(sub)
    assert parser.parse_args(["bench", "speed", "--quick"]).func is bench.cmd_speed
    group = bench_subparsers(sub)
    assert {"speed"} <= set(group.choices) and len(group.choices) == 1 + len(others)


@pytest.mark.parametrize("preset,dtype", [("digits-one", torch.float32), ("digits-two", torch.uint8)])
def test_train_speed_times_trainings_own_step_on_the_batches_training_feeds(monkeypatch, preset, dtype):
    """bench speed times `train.train_step` (not a copy), with the optimiser and schedule training builds, on
    uint8 batches for the two-glance model (which reads uint8) and float ones for the one-glance model."""
    from multiglance.models import get_preset
    from multiglance.train import epoch

    calls = []
    real = epoch.train_step
    monkeypatch.setattr(epoch, "train_step", lambda t, x, y, **kw: calls.append((t, x.dtype)) or real(t, x, y, **kw))
    cfg = get_preset(preset)
    cfg.train.batch_size = 8
    row = bench.train_speed(cfg, reps=1, warmup=1, peak=lambda: 1.0)
    assert row["train_images_per_s"] > 0 and row["batch_size"] == 8
    assert [d for _, d in calls] == [dtype] * 3  # the counted step, one warm-up, one timed
    t = calls[0][0]
    assert type(t.optimizer) is torch.optim.SGD and t.optimizer.defaults["nesterov"]
    assert t.scheduler.last_epoch == 3  # the schedule stepped with the optimiser, as in training
