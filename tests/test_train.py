"""Training: learns far above chance, exact resume, checkpoints, data/model mismatch errors (2-process DDP:
test_train_distributed.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_config
from multiglance import runs
from multiglance.errors import UserError
from multiglance.train import fit, lr_factor


def test_metrics_checkpoint_and_config_written(tiny_run):
    records = runs.read_metrics(tiny_run)
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert len(epochs) == 1 and {"train_loss", "val_acc_hard", "val_acc_soft", "lr", "images_per_s"} <= set(epochs[0])
    assert any(r["kind"] == "train" for r in records)
    state = runs.load_checkpoint(tiny_run)
    assert state["epoch"] == 0 and state["preset"] == "digits-two" and {"model", "optimizer", "scheduler"} <= set(state)
    assert runs.load_config(tiny_run) == tiny_config()


@pytest.mark.parametrize("preset", ["digits-one", "digits-two"])
def test_short_training_far_above_chance(tmp_path, preset):
    """Cluttered digits, 10 classes (chance 10%): 4 epochs reach over 4x chance (the 12-epoch demo: ~90%)."""
    cfg = tiny_config(preset, **{"data.train_limit": "none", "data.test_limit": 500, "data.val_limit": 500,
                                 "train.epochs": 4, "train.batch_size": 32})
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # as in CI and the demo: the first epochs of these plain (no BatchNorm) nets are
    try:  # chaotic, and with 1 thread's summation order digits-two sits at ~13% for 4 epochs (known fragility)
        last = fit(cfg, tmp_path / preset, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert last["val_acc_hard"] > 0.4, last


def test_same_seed_gives_bit_identical_weights(tmp_path):
    fit(tiny_config(), tmp_path / "a", progress=False)
    fit(tiny_config(), tmp_path / "b", progress=False)
    a, b = runs.load_checkpoint(tmp_path / "a")["model"], runs.load_checkpoint(tmp_path / "b")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_from_epoch_checkpoint_is_exact(tmp_path):
    """Stop a 3-epoch run after epoch 2 (SIGTERM-style: flag honoured at the end of the epoch), resume it."""
    import multiglance.train.loop as train_module

    cfg = tiny_config(**{"train.epochs": 3})
    reference = tmp_path / "reference"
    fit(cfg, reference, progress=False)

    out = tmp_path / "stopped"
    original = train_module.train_one_epoch
    calls = {"n": 0}

    def stop_after_two(*args, **kwargs):
        calls["n"] += 1
        result = original(*args, **kwargs)
        if calls["n"] == 2:
            raise KeyboardInterrupt  # a crash right after epoch 2's step loop, before its checkpoint
        return result

    train_module.train_one_epoch = stop_after_two
    try:
        with pytest.raises(KeyboardInterrupt):
            fit(cfg, out, progress=False)
    finally:
        train_module.train_one_epoch = original
    assert runs.load_checkpoint(out)["epoch"] == 0  # only epoch 1 was checkpointed
    last = fit(cfg, out, resume=True, progress=False)
    assert last["epoch"] == 3
    a, b = runs.load_checkpoint(reference)["model"], runs.load_checkpoint(out)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    epochs = [r["epoch"] for r in runs.read_metrics(out) if r["kind"] == "epoch"]
    assert epochs == [1, 2, 3]  # no duplicate records after the resume


def test_existing_run_is_not_overwritten(tiny_run):
    before = (tiny_run / runs.CHECKPOINT).read_bytes()
    with pytest.raises(UserError, match="already holds a run"):
        fit(tiny_config(), tiny_run, progress=False)
    assert (tiny_run / runs.CHECKPOINT).read_bytes() == before


def test_resume_with_another_model_is_refused(tiny_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    with pytest.raises(UserError, match=r"differs from the run's in model.channels \(16,16,32 -> 8,8,8\)"):
        fit(tiny_config(**{"model.channels": "8,8,8"}), copy, resume=True, progress=False)


def test_resume_keeps_the_record_and_says_where_it_starts(tiny_run, tmp_path, capsys):
    """config.yaml is written once; --resume refuses a finished run, a folder without a run, and a changed
    config; more epochs is the one change allowed, recorded as a resume event."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    config_before = (copy / runs.CONFIG).read_bytes()
    with pytest.raises(UserError, match="has done 1 epochs.*pass --epochs 2"):
        fit(tiny_config(), copy, resume=True, progress=False)  # finished: nothing to train
    with pytest.raises(UserError, match="holds no run"):
        fit(tiny_config(), tmp_path / "typo", resume=True, progress=False)
    assert not (tmp_path / "typo").exists()
    with pytest.raises(UserError, match="data.train_limit"):
        fit(tiny_config(**{"data.train_limit": 300, "train.epochs": 2}), copy, resume=True, progress=False)
    fit(tiny_config(**{"train.epochs": 2}), copy, resume=True, progress=False)
    assert "resuming from epoch 2, step 8 (checkpoint of " in capsys.readouterr().out
    assert (copy / runs.CONFIG).read_bytes() == config_before  # the record of the run is never rewritten
    events = [r for r in runs.read_metrics(copy) if r["kind"] == "resume"]
    assert events == [{"kind": "resume", "epoch": 1, "step": 8, "batch_in_epoch": 0,
                       "changed": {"train.epochs": [1, 2]}}]
    assert [r["epoch"] for r in runs.read_metrics(copy) if r["kind"] == "epoch"] == [1, 2]


def test_data_that_does_not_fit_the_model_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="expects 3x48x48"):
        fit(tiny_config(**{"model.in_channels": 3}), tmp_path / "x", progress=False)


def test_a_warm_up_as_long_as_the_run_is_shortened_to_half_of_it_and_said_once(tmp_path):
    """`--epochs 1` on a preset that warms up for one epoch trains (it was refused): the warm-up takes half the
    run, the learning rate then follows the cosine to zero, and one warning says so."""
    from multiglance.cli import main

    out = tmp_path / "run"
    argv = ["train", "--preset", "digits-two", "--out", str(out), "--quiet", "--epochs", "1", "--set",
            "train.warmup_epochs=1", "--set", "data.train_limit=256", "--set", "data.val_limit=32", "--set",
            "train.batch_size=32", "--set", "train.log_every=2"]
    with pytest.warns(UserWarning) as warned:
        assert main(argv) == 0
    notes = [str(w.message) for w in warned if "warm-up" in str(w.message)]
    assert notes == ["train.warmup_epochs=1 is not shorter than train.epochs=1: the warm-up is shortened to 0.5 "
                     "epochs"]
    lrs = [r["lr"] / 0.02 for r in runs.read_metrics(out) if r["kind"] == "train"]  # digits-two: lr 0.02, 8 steps
    assert lrs == pytest.approx([3 / 4, 1.0, 0.5, 0.0], abs=1e-9)  # warm-up over 4 steps, then the cosine


def test_lr_schedule():
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(100, 100, 10, "cosine") == pytest.approx(0.0)
    assert lr_factor(80, 100, 0, "step") == pytest.approx(0.01)


def test_fresh_canvases_draw_new_reproducible_canvases_each_epoch(monkeypatch):
    """data.fresh_canvases: epoch 0 trains on the given canvases, every later epoch on new ones drawn with the
    epoch as seed (so a resumed run sees the same ones); a data set that is not generated is refused."""
    from multiglance.config import apply_overrides
    from multiglance.data import Split, sources
    from multiglance.models import get_preset
    from multiglance.train import epoch_split

    digits = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (30, 1, 28, 28), dtype=np.uint8))

    def fake_mnist(root, split, **_):
        return Split(digits, torch.arange(30) % 10, [str(d) for d in range(10)])

    monkeypatch.setattr(sources, "load_mnist", fake_mnist)
    cfg = apply_overrides(get_preset("mnist60-two-oracle"), ["data.fresh_canvases=true"])
    from multiglance.data import load_split

    first = load_split(cfg.data.name, None, "train", n=16)
    assert epoch_split(cfg, first, 0) is first
    one, again = epoch_split(cfg, first, 1), epoch_split(cfg, first, 1)
    assert len(one) == 16 and one.images.shape == first.images.shape
    assert not torch.equal(one.images, first.images)
    assert torch.equal(one.images, again.images) and torch.equal(one.labels, again.labels)
    assert not torch.equal(epoch_split(cfg, first, 2).boxes, one.boxes)
    cfg.data.fresh_canvases = False
    assert epoch_split(cfg, first, 3) is first


def test_fresh_canvases_refused_for_fixed_data(tmp_path):
    cfg = tiny_config("digits-two", **{"data.fresh_canvases": "true"})
    with pytest.raises(UserError, match="fresh_canvases needs a generated data set"):
        fit(cfg, tmp_path / "run", progress=False)


def test_checkpoints_every_few_minutes_of_training(tmp_path, monkeypatch):
    """train.checkpoint_minutes (default 5) checkpoints inside an epoch once that much training time has passed:
    here a tiny interval, so every step but the epoch's last (the epoch end checkpoints anyway) saves one."""
    import multiglance.train.loop as loop

    saved = []
    real = loop.runs.save_checkpoint
    monkeypatch.setattr(loop.runs, "save_checkpoint", lambda d, s: (saved.append((s["step"], s["batch_in_epoch"])),
                                                                   real(d, s)))
    fit(tiny_config(**{"train.checkpoint_minutes": 1e-9, "data.train_limit": 256}), tmp_path / "run",
        progress=False)
    assert saved == [(1, 1), (2, 2), (3, 3), (4, 0)]  # 4 steps of 64: mid-epoch after 1-3, then the epoch's end


def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing(tmp_path, monkeypatch, capsys):
    """Out of memory in the first step: one line naming the knobs, exit 2, and no half-made run folder."""
    import multiglance.train.epoch as epoch
    from multiglance.cli import main

    def oom(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory: you tried "
                           "to allocate 123456789 bytes.")
    monkeypatch.setattr(epoch, "loss_fn", oom)
    out = tmp_path / "run"
    argv = ["train", "--preset", "digits-two", "--out", str(out), "--quiet", "--set", "data.train_limit=128",
            "--set", "data.val_limit=64", "--epochs", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "out of memory" in err and "train.batch_size" in err
    assert not out.exists()
