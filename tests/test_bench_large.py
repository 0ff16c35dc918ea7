"""bench/large.py: a streamed training process stays far below the memory the report's soft training needs, and
`multiglance bench large --quick` writes its JSONs and the RESULTS section."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from multiglance.bench.large import photo_folder, train_memory
from multiglance.cli import main
from multiglance.config import apply_overrides, derive
from multiglance.evaluate import peak_memory_mb
from multiglance.models import get_preset

from conftest import SHARED_DATA


def test_topk_training_process_stays_under_what_soft_training_needs(tmp_path: Path) -> None:
    """large-two at 512x512 (225 patches), batch 8, streamed from 48 JPEGs in a child process with 2 workers: the
    whole process tree's peak is below one soft-training step's own memory (glance 2 on all patches)."""
    size, batch = 512, 8
    row = train_memory(photo_folder(tmp_path, 48, size), tmp_path / "run", size, batch=batch, workers=2, threads=1)
    cfg = apply_overrides(get_preset("large-two"), [f"model.image_size={size}", "model.choice=soft"])
    derive(cfg, (3, size, size), ["circle", "square"])
    soft_step = batch * peak_memory_mb(cfg, (3, size, size), batch=1, train=True)  # linear in the batch
    assert row["steps"] == 5 and row["images"] == 48
    assert row["peak_mb"] < soft_step, (row, soft_step)


def test_quick_bench_writes_its_results(tmp_path: Path) -> None:
    if not (SHARED_DATA / "cifar10").is_dir():
        pytest.skip("needs ../shared/data (CIFAR-10 and Tiny ImageNet for the photo scenes)")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "RESULTS.md").write_text("# Results\n\n<!-- BEGIN large -->\nold\n<!-- END large -->\n")
    argv = ["bench", "large", "--quick", "--docs", str(docs), "--runs-dir", str(tmp_path / "runs"), "--quiet",
            "--threads", "1", "--parts", "speed", "scenes"]
    assert main(argv) == 0
    speed = json.loads((docs / "benchmarks" / "large-speed-quick.json").read_text())
    assert "selection" not in speed  # a measurement selects nothing
    assert speed["rows"][0]["flop_ratio"] > 10 and speed["rows"][0]["ms_per_image_two_b1"] > 0
    scenes = json.loads((docs / "results" / "large-scenes-quick.json").read_text())
    for name in ("scenes-two", "scenes-one"):
        r = scenes[name]
        assert r["test_images"] == 32 and r["val_images"] == 32 and not Path(r["run_dir"]).is_absolute()
        assert 0 <= r["accuracy_hard"] <= 1 and r["eval_command"].startswith("multiglance eval ")
    text = (docs / "RESULTS.md").read_text()
    assert "Photo scenes" in text and "old" not in text and str(tmp_path) not in text


def test_refuses_to_measure_above_the_load_limit(tmp_path: Path, capsys, monkeypatch) -> None:
    import os

    monkeypatch.setattr(os, "getloadavg", lambda: (6.0, 5.0, 4.0))
    argv = ["bench", "large", "--parts", "speed", "--max-load", "2.5", "--allow-dirty", "--docs", str(tmp_path),
            "--runs-dir", str(tmp_path / "runs")]
    assert main(argv) == 2
    assert "load average 6.0 is above --max-load 2.5" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()
