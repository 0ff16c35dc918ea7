"""compare.py: `multiglance compare` reports each run's last-epoch validation accuracy, labelled as such, and counts
FLOPs on the image shape the run's model reads (non-square included). Run folders are written directly (an untrained
model and hand-made metrics), so no training is needed."""
from __future__ import annotations

from pathlib import Path

import torch

from multiglance import runs
from multiglance.cli import main
from multiglance.compare import compare_row, compare_table, input_shape
from multiglance.config import apply_overrides
from multiglance.flops import flop_counts_per_image, flops_per_image
from multiglance.models import build_model, get_preset


def untrained_run(folder: Path, overrides: list[str], val_acc: list[float]) -> Path:
    """A digits-two run folder: an untrained model's checkpoint and one epoch record per accuracy in `val_acc`."""
    cfg = apply_overrides(get_preset("digits-two"), overrides)
    folder.mkdir()
    runs.save_config(folder, cfg)
    torch.manual_seed(0)
    runs.save_checkpoint(folder, {"model": build_model(cfg.model).state_dict(), "epoch": len(val_acc), "step": 1})
    for epoch, acc in enumerate(val_acc, 1):
        runs.append_metrics(folder, {"kind": "epoch", "epoch": epoch, "step": epoch, "val_acc_hard": acc,
                                     "val_acc_soft": acc + 0.05, "train_seconds": 10.0})
    return folder


def test_flops_are_counted_on_the_non_square_input(tmp_path: Path, monkeypatch) -> None:
    """The counter is given a 48x96 image, not 48x48 (the model resizes any input to its own grid, so the counts
    can agree; the shape handed to the counter is what is checked)."""
    import multiglance.flops

    run = untrained_run(tmp_path / "wide", ["model.image_width=96"], [0.5])
    model, cfg = runs.load_run(run)
    assert input_shape(cfg) == (1, 48, 96)
    shapes = []
    monkeypatch.setattr(multiglance.flops, "flop_counts_per_image",
                        lambda m, shape, **kw: shapes.append(tuple(shape)) or flop_counts_per_image(m, shape, **kw))
    row = compare_row(run)
    assert shapes == [(1, 48, 96)]
    assert row["flops_per_image"] == flops_per_image(model, (1, 48, 96)) > 0
    assert row["other_flops_per_image"] == flop_counts_per_image(model, (1, 48, 96)).other > 0
    assert row["params"] == sum(p.numel() for p in model.parameters())


def test_square_run_counts_the_square_input(tmp_path: Path) -> None:
    run = untrained_run(tmp_path / "square", [], [0.5])
    model, cfg = runs.load_run(run)
    assert input_shape(cfg) == (1, 48, 48)
    assert compare_row(run)["flops_per_image"] == flops_per_image(model, (1, 48, 48))


def test_the_table_says_validation_of_the_last_epoch(tmp_path: Path, capsys) -> None:
    run = untrained_run(tmp_path / "run", [], [0.25, 0.75])
    text = compare_table([run])
    header, rows = text.split("\n\n")
    assert header.startswith("validation accuracy of each run's last epoch")
    columns = [c.strip() for c in rows.splitlines()[0].strip("|").split("|")]
    assert columns[4:6] == ["val acc (hard, last epoch)", "val acc (soft, last epoch)"]
    assert not any(c.startswith("test") or c.startswith("acc") for c in columns)
    assert columns[6:8] == ["MFLOPs/img (conv+matmul)", "other MFLOPs/img"]  # both FLOP counts, said which
    cells = [c.strip() for c in rows.splitlines()[2].strip("|").split("|")]
    assert cells[3:6] == ["2", "0.7500", "0.8000"]  # the last epoch's, not the best or the first
    assert cells[-1] == "20"  # training seconds summed over the epochs
    assert main(["compare", str(run)]) == 0
    assert capsys.readouterr().out.strip() == text
