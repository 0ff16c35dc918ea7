"""Tests for bench/megapixel_report.py: the RESULTS section is rebuilt from the JSON files alone."""
from __future__ import annotations

import json
from pathlib import Path

from multiglance import results
from multiglance.bench.megapixel import shown_config
from multiglance.bench.megapixel_report import build_section, publish_section
from multiglance.models import get_preset

KS = [str(k) for k in range(1, 11)]


def fake_record(dataset: str, preset: str = "megapixel-easy-two") -> dict:
    curve = {"weights": dict(zip(KS, [0.5, 0.6, 0.8, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95])),
             "equal": dict(zip(KS, [0.5, 0.6, 0.8, 0.97, 0.992, 0.99, 0.99, 0.98, 0.98, 0.97]))}
    return {"dataset": dataset, "preset": preset, "model": "two", "seed": 0, "commit": "abc123", "epochs": 10,
            "train_seconds": 480.0, "data_seconds": 4.0, "selection": "val", "train_images": 5000,
            "val_images": 500, "test_images": 1000, "combination": "equal", "top_k": 5, "val_accuracy": 0.992,
            "val_accuracy_by_k": curve, "test_accuracy_by_k": curve, "accuracy_hard": 0.992, "accuracy_soft": None,
            "eval_command": f"multiglance eval runs/megapixel/{dataset} --split test --set model.topk_combine=equal "
                            "--set model.top_k=5",
            "digit_recall": 0.99, "test_flops_per_image": 88e6, "params": 68747, "latency_ms_batch1": 3.0,
            "images_per_s_batch256": None, "train_split_mb": 26.0, "dense_train_split_mb": 1192.0,
            "flops_by_k": {k: (37 + 12.7 * (int(k) - 1)) * 1e6 for k in KS}, "full_flops": 6.16e9,
            "peak_memory_mb": 1.5, "full_peak_memory_mb": 63.0, "train_step_peak_memory_mb": 99.0,
            "train_step_batch": 16, "cpu_ms_per_image": 3.0, "full_cpu_ms_per_image": 113.0, "full_params": 715530,
            "train_saved_activations_mb_per_step": 138.0, "full_train_saved_activations_mb_per_image": 157.0,
            "low_resolution_cnn": {"preset": "megapixel-easy-low-one", "run_dir": f"{dataset}-low-one", "epochs": 3,
                                   "train_seconds": 60.0, "input_size": 80, "channels": [16, 32, 64],
                                   "params": 87306, "flops": 31e6, "val_accuracy": 0.4, "accuracy": 0.391,
                                   "eval_command": f"multiglance eval {dataset}-low-one --split test"},
            "config": shown_config(get_preset(preset))}


def test_section_from_json(tmp_path: Path) -> None:
    results.write_result(tmp_path / "results", "megapixel-mnist-easy", fake_record("megapixel-mnist-easy"))
    text = build_section(tmp_path)
    row = next(line for line in text.splitlines() if line.startswith("| megapixel-mnist-easy |"))
    assert "| 99.2 (5, equal) | 99.2 | 39.1 | 99.0 |" in row
    assert "| 1/70 |" in row and "| 1/42 |" in row  # 6.16e9 / 88e6, 63 / 1.5
    assert "| val %, equal votes | 50.0 | 60.0 | 80.0 | 97.0 | 99.2 |" in text
    assert "| test %, glance-1 weights | 50.0 |" in text and "| MFLOPs | 37 | 50 |" in text
    assert ("5000 training / 500 validation / 1000 test canvases; chosen on validation: k=5, `equal` (99.2%); test, "
            "read once: `multiglance eval runs/megapixel/megapixel-mnist-easy --split test --set "
            "model.topk_combine=equal --set model.top_k=5` (commit abc123)") in text
    assert "megapixel-mnist-easy: 99.2% against >= 99%, met" in text
    assert "26 MB for 5000 training canvases instead of 1,192 MB dense" in text
    assert (tmp_path / "megapixel-accuracy-flops.png").stat().st_size > 1000


def test_targets_and_the_curriculum_are_stated(tmp_path: Path) -> None:
    r = fake_record("megapixel-mnist", "megapixel-two") | {"accuracy_hard": 0.958}
    r["config"]["train"]["init_from"] = "runs/megapixel/curriculum/megapixel-mnist-easy"
    results.write_result(tmp_path / "results", "megapixel-mnist", r)
    text = build_section(tmp_path)
    assert "megapixel-mnist: 95.8% against >= 98%, missed by 2.2 points" in text
    assert "started from the weights of the run `runs/megapixel/curriculum/megapixel-mnist-easy`" in text


def test_old_format_json_is_named_not_shown_and_quick_only_when_alone(tmp_path: Path) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "megapixel-mnist.json").write_text(json.dumps({"dataset": "megapixel-mnist", "accuracy_hard": 0.985}))
    results.write_result(folder, "megapixel-mnist-easy-quick", fake_record("megapixel-mnist-easy-quick"))
    text = build_section(tmp_path)
    assert "(Not shown: megapixel-mnist.json, written before validation selection; rerun them.)" in text
    assert "| megapixel-mnist-easy-quick |" in text and "| megapixel-mnist |" not in text
    results.write_result(folder, "megapixel-mnist-easy", fake_record("megapixel-mnist-easy"))
    text = build_section(tmp_path)
    assert "| megapixel-mnist-easy |" in text and "| megapixel-mnist-easy-quick |" not in text
    publish_section(tmp_path)
    doc = (tmp_path / "RESULTS.md").read_text()
    assert doc.count("<!-- BEGIN megapixel -->") == 1 and "| megapixel-mnist-easy |" in doc
