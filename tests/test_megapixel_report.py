"""Tests for megapixel_report.py: the RESULTS section is rebuilt from the JSON files alone."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from multiglance import megapixel as mp
from multiglance import results
from multiglance.megapixel_report import build_section, cost_key


def fake_record(dataset: str) -> dict:
    cfg = mp.easy_config()
    return {"dataset": dataset, "preset": dataset, "model": "two", "seed": 0, "commit": "x", "epochs": 2,
            "train_seconds": 120.0, "data_seconds": 3.0, "accuracy_hard": 0.95, "accuracy_soft": None,
            "test_flops_per_image": 40e6, "params": 1000, "latency_ms_batch1": 10.0, "images_per_s_batch256": None,
            "config": asdict(cfg), "top_k": 5, "accuracy_by_k": {"1": 0.5, "5": 0.95},
            "flops_by_k": {"1": 30e6, "5": 40e6}, "digit_recall": 0.99, "full_flops": 8e9,
            "peak_memory_mb": 2.0, "full_peak_memory_mb": 60.0, "train_step_peak_memory_mb": 50.0,
            "train_step_batch": 16, "cpu_ms_per_image": 10.0, "full_cpu_ms_per_image": 400.0, "full_params": 9,
            "train_saved_activations_mb_per_step": 80.0, "full_train_saved_activations_mb_per_image": 150.0,
            "low_resolution_cnn": {"accuracy": 0.2, "flops": 5e6}}


def test_section_from_json(tmp_path: Path) -> None:
    results.write_result(tmp_path / "results", "megapixel-mnist-easy", fake_record("megapixel-mnist-easy"))
    text = build_section(tmp_path)
    row = next(line for line in text.splitlines() if line.startswith("| megapixel-mnist-easy |"))
    assert "| 95.0 (5, weights) |" in row and "| 1/200 |" in row and "| 1/30 |" in row  # 8e9/40e6, 60/2
    assert "| acc % | 50.0 | 95.0 |" in text
    assert (tmp_path / "megapixel-accuracy-flops.png").stat().st_size > 1000


def test_section_names_the_combination_chosen_on_validation(tmp_path: Path) -> None:
    r = fake_record("megapixel-mnist") | {"combination": "equal", "accuracy_hard": 0.985,
                                         "accuracy_by_k_equal_weights": {"1": 0.5, "5": 0.985},
                                         "validation": {"images": 500, "k": 5,
                                                        "accuracy": {"weights": 0.95, "equal": 0.98}}}
    results.write_result(tmp_path / "results", "megapixel-mnist", r)
    text = build_section(tmp_path)
    assert "| 98.5 (5, equal) |" in text
    assert "combined by `equal`, chosen on 500 validation canvases" in text and "equal votes 98.0%" in text
    assert "| acc %, equal weights | 50.0 | 98.5 |" in text


def test_cost_key_ignores_the_schedule() -> None:
    assert cost_key(mp.MegaConfig(epochs=3, lr=0.1)) == cost_key(mp.MegaConfig())
    assert cost_key(mp.MegaConfig(top_k=3)) != cost_key(mp.MegaConfig())


MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


@pytest.mark.skipif(not MNIST.exists(), reason=f"MNIST files not found at {MNIST}")
def test_quick_bench_end_to_end(tmp_path: Path) -> None:
    """`bench megapixel --easy --quick`: train, evaluate, choose the combination on validation canvases, measure
    costs, write the JSON and the section."""
    import json

    from multiglance.cli import main

    assert main(["bench", "megapixel", "--easy", "--quick", "--runs-dir", str(tmp_path / "runs"),
                 "--docs", str(tmp_path / "docs")]) == 0
    r = json.loads((tmp_path / "docs" / "results" / "megapixel-mnist-easy-quick.json").read_text())
    assert r["combination"] in ("weights", "equal") and r["validation"]["images"] == 64
    by_k = r["accuracy_by_k_equal_weights" if r["combination"] == "equal" else "accuracy_by_k"]
    assert r["accuracy_hard"] == by_k[str(r["top_k"])]
    assert "## Megapixel MNIST" in (tmp_path / "docs" / "RESULTS.md").read_text()
