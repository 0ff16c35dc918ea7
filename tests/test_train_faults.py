"""Faults injected into training (train/, runs.py): SIGINT/SIGTERM, SIGKILL at random moments, NaN losses,
read-only and full disks, corrupt and malicious checkpoints. A stopped or killed run, resumed, must end with
weights bit-identical to a run that never stopped (CPU, fixed seed), and its metrics.jsonl must read as if
it had never stopped."""
from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from multiglance import files, runs
from multiglance.train import epoch as train
from multiglance.config import apply_overrides
from multiglance.errors import CheckpointError, Stopped, UserError
from multiglance.models import get_preset
from multiglance.train import fit, load_data

from conftest import examples

TINY = {"data.train_limit": 256, "data.test_limit": 64, "data.val_limit": 64, "train.batch_size": 32,
        "train.epochs": 2, "train.log_every": 1, "train.device": "cpu"}  # 8 steps per epoch


def tiny(**overrides) -> object:
    cfg = get_preset("digits-two")
    return apply_overrides(cfg, [f"{k}={v}" for k, v in (TINY | overrides).items()])


_DATA: list = []


def run_fit(cfg, out: Path, **kwargs) -> dict:
    """fit() on the tiny data, loaded once for the whole module."""
    if not _DATA:
        _DATA.append(load_data(cfg))
    return fit(cfg, out, progress=False, data=_DATA[0], **kwargs)


def assert_same_state(a: dict, b: dict) -> None:
    """Bit-identical model weights, optimizer buffers and schedule."""
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[i]["momentum_buffer"], sb[i]["momentum_buffer"]) for i in sa)
    assert a["scheduler"] == b["scheduler"] and a["step"] == b["step"] and a["epoch"] == b["epoch"]


TIMING = ("train_seconds", "images_per_s", "data_seconds")


def comparable_metrics(run: Path) -> list[dict]:
    """The metrics without timings and without resume events (a resumed run records where it resumed)."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in runs.read_metrics(run) if r["kind"] != "resume"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Uninterrupted runs, one per configuration the tests below interrupt."""
    out = {}
    for name, overrides in CONFIGS.items():
        out[name] = tmp_path_factory.mktemp("ref") / name
        run_fit(tiny(**overrides), out[name])
    return out


CONFIGS = {"plain": {}, "augmented-gumbel": {"data.crop_padding": 2, "data.flip": "true", "model.choice": "gumbel",
                                             "train.tau_final": 0.5}}


def signal_at(monkeypatch: pytest.MonkeyPatch, call: int, signum: int = signal.SIGINT) -> None:
    """Deliver `signum` to this process during the forward pass of training step number `call` (1-based)."""
    real, calls = train.loss_fn, [0]

    def loss_fn(*args, **kwargs):
        calls[0] += 1
        if calls[0] == call:
            signal.raise_signal(signum)
        return real(*args, **kwargs)
    monkeypatch.setattr(train, "loss_fn", loss_fn)


# ---- clean stops -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,stop_step", [("plain", 3), ("plain", 8), ("augmented-gumbel", 12)])  # 8 steps/epoch
def test_signal_stops_at_the_next_step_and_resume_is_bit_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   reference: dict, name: str, stop_step: int) -> None:
    run, before = tmp_path / "run", signal.getsignal(signal.SIGINT)
    signum = signal.SIGTERM if stop_step == 12 else signal.SIGINT
    signal_at(monkeypatch, stop_step, signum)
    with pytest.raises(Stopped, match=f"stopped by {signum.name} at step {stop_step}") as stopped:
        run_fit(tiny(**CONFIGS[name]), run)
    assert stopped.value.exit_code == 128 + signum  # 130 for SIGINT, 143 for SIGTERM, as shells report
    state = runs.load_checkpoint(run)
    assert state["step"] == stop_step  # it stopped right after the step the signal came in
    assert state["batch_in_epoch"] == (0 if stop_step == 8 else stop_step % 8)
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored
    monkeypatch.undo()
    run_fit(tiny(**CONFIGS[name]), run, resume=True)
    assert_same_state(runs.load_checkpoint(run), runs.load_checkpoint(reference[name]))
    assert comparable_metrics(run) == comparable_metrics(reference[name])


def test_checkpoint_every_writes_mid_epoch_checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saved = []
    real = runs.save_checkpoint
    monkeypatch.setattr(runs, "save_checkpoint", lambda d, s: (saved.append((s["step"], s["batch_in_epoch"])),
                                                             real(d, s)))
    run_fit(tiny(**{"train.checkpoint_every": 3}), tmp_path / "run")
    assert saved == [(3, 3), (6, 6), (8, 0), (9, 1), (12, 4), (15, 7), (16, 0)]


def test_start_batch_skips_exactly_those_batches() -> None:
    from multiglance.data import Split
    from multiglance.data.batches import train_batches

    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(40)
    kw = dict(batch_size=8, seed=3, epoch=2, crop_padding=2, flip=True)
    split = Split(images, labels, [str(i) for i in range(40)])
    whole = list(train_batches(split, **kw))
    for k in range(len(whole) + 1):
        rest = list(train_batches(split, start_batch=k, **kw))
        assert len(rest) == len(whole) - k
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(rest, whole[k:]))


# ---- SIGKILL at random moments -----------------------------------------------------------------------------
def _launch(run: Path, overrides: dict, resume: bool) -> subprocess.Popen:
    args = [sys.executable, "-m", "multiglance", "train", "--preset", "digits-two", "--out", str(run), "--quiet"]
    args += [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")] + (["--resume"] if resume else [])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_and_resume(run: Path, overrides: dict, kills: int, rng: random.Random, window: float = 1.5) -> list[str]:
    """Train in a child process; SIGKILL it `kills` times at a random moment within `window` seconds of its first
    step (each restart with --resume), then let it finish. Returns the checkpoint each kill left."""
    seen = []
    epochs = int(overrides.get("train.epochs", 1))
    for attempt in range(kills + 1):
        state = runs.load_checkpoint(run) if (run / runs.CHECKPOINT).exists() else None
        if state is not None and state["epoch"] + 1 >= epochs and not state["batch_in_epoch"]:
            break  # a kill came after the last checkpoint: the run is complete (a --resume of it is refused)
        start = state["step"] if state is not None else 0
        child = _launch(run, overrides, resume=state is not None)  # a kill before the first checkpoint: anew
        if attempt < kills:
            deadline = time.monotonic() + 120
            while (child.poll() is None and time.monotonic() < deadline and  # until this child's first step
                   not any(r.get("kind") == "train" and r["step"] > start for r in runs.read_metrics(run))):
                time.sleep(0.01)
            time.sleep(rng.uniform(0, window))
            child.kill()
        out, err = child.communicate(timeout=300)
        if attempt < kills:
            assert child.returncode in (-signal.SIGKILL, 0), err
            state = runs.load_checkpoint(run) if (run / runs.CHECKPOINT).exists() else None  # never partial
            seen.append("before the first checkpoint" if state is None else
                        f"step {state['step']} (epoch {state['epoch'] + 1}, batch {state['batch_in_epoch']})")
            if child.returncode == 0:  # it finished before the kill: a --resume of a finished run is refused
                break
        else:
            assert child.returncode == 0, err
    return seen


def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path: Path) -> None:
    overrides = TINY | {"train.epochs": 3, "train.checkpoint_every": 1}  # a checkpoint write at every step
    ref = tmp_path / "ref"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the children (OMP_NUM_THREADS=1)
    try:
        run_fit(tiny(**overrides), ref)
    finally:
        torch.set_num_threads(threads)
    run = tmp_path / "run"
    kill_and_resume(run, overrides, kills=3, rng=random.Random(os.getpid()))
    assert_same_state(runs.load_checkpoint(run), runs.load_checkpoint(ref))
    assert comparable_metrics(run) == comparable_metrics(ref)
    assert not list(run.glob(".*.tmp"))  # the temporary files of interrupted writes are cleaned up


def test_sigterm_in_a_child_checkpoints_and_exits_cleanly(tmp_path: Path) -> None:
    run = tmp_path / "run"
    child = _launch(run, TINY | {"train.epochs": 50}, resume=False)
    while not any(r.get("kind") == "train" for r in runs.read_metrics(run)) and child.poll() is None:
        time.sleep(0.01)
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 143, err  # stopped, not finished: 128 + SIGTERM
    assert "stopped by SIGTERM" in err and err.count("\n") == 1
    state = runs.load_checkpoint(run)
    assert state["step"] < 50 * 8 and max(r["step"] for r in runs.read_metrics(run)) == state["step"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_process_group_stops_cleanly_with_decoding_workers(tmp_path: Path, signum: int) -> None:
    """`pkill -f` and a terminal's Ctrl-C signal the main process and its DataLoader workers alike. The workers
    ignore both (data.batches.quiet_worker); the main process alone checkpoints, shuts them down and says so in
    one line (a worker killed by SIGTERM used to surface as a RuntimeError traceback, exit 1)."""
    from multiglance.data.synthetic_folders import make_shape_folder

    photos = make_shape_folder(tmp_path / "photos", n_per_class=48, size=64, seed=0)
    run = tmp_path / "run"
    args = [sys.executable, "-m", "multiglance", "train", "--preset", "large-two", "--data", str(photos),
            "--set", "model.image_size=64", "--set", "train.batch_size=4", "--set", "train.workers=2",
            "--set", "data.stream=true", "--set", "train.log_every=1", "--epochs", "50", "--quiet", "--out", str(run)]
    child = subprocess.Popen(args, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)  # its own process group
    deadline = time.monotonic() + 120
    while child.poll() is None and time.monotonic() < deadline and not any(
            r.get("kind") == "train" for r in runs.read_metrics(run)):
        time.sleep(0.05)
    os.killpg(child.pid, signum)  # every process of the group: the main one and its workers
    out, err = child.communicate(timeout=120)
    assert child.returncode == 128 + signum, err
    assert f"stopped by {signal.Signals(signum).name}" in err and "Traceback" not in err, err
    assert err.count("\n") == 1, err
    assert runs.load_checkpoint(run)["step"] >= 1


# ---- NaN, read-only and full disks -------------------------------------------------------------------------
def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: dict) -> None:
    run, real = tmp_path / "run", train.loss_fn
    calls = [0]

    def nan_after_epoch_one(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs) * (float("nan") if calls[0] == 11 else 1.0)
    monkeypatch.setattr(train, "loss_fn", nan_after_epoch_one)
    with pytest.raises(UserError, match=r"loss became nan at epoch 2, step 10.*last good checkpoint is kept"):
        run_fit(tiny(), run)
    assert runs.load_checkpoint(run)["step"] == 8
    monkeypatch.undo()
    run_fit(tiny(), run, resume=True)  # the bad steps left nothing behind
    assert_same_state(runs.load_checkpoint(run), runs.load_checkpoint(reference["plain"]))
    assert comparable_metrics(run) == comparable_metrics(reference["plain"])


def test_huge_learning_rate_is_one_clear_line_from_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from multiglance.cli import main

    argv = ["train", "--preset", "digits-two", "--out", str(tmp_path / "run"), "--quiet", "--set", "train.lr=1e6"]
    argv += [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and ("NaN" in err or "loss became" in err)
    assert not (tmp_path / "run" / runs.CHECKPOINT).exists()  # no checkpoint of broken weights


def test_read_only_output_folder_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "ro"
    out.mkdir()
    if os.geteuid() != 0:  # root ignores permissions: then the file system's answer is simulated below
        out.chmod(0o555)
        with pytest.raises(UserError, match="cannot write in"):
            run_fit(tiny(), out)
        out.chmod(0o755)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    monkeypatch.setattr(files.tempfile, "mkstemp", read_only)
    with pytest.raises(UserError, match="cannot write in .*Read-only file system.*writable --out"):
        run_fit(tiny(), out)
    assert list(out.iterdir()) == []


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run, real, calls = tmp_path / "run", torch.save, [0]

    def disk_fills_up(obj, f, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:  # the second checkpoint: half written, then the disk is full
            f.write(b"PK\x03\x04" + bytes(1000))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(obj, f, *args, **kwargs)
    monkeypatch.setattr(torch, "save", disk_fills_up)
    with pytest.raises(UserError, match="could not write .*No space left on device.*previous file is kept"):
        run_fit(tiny(), run)
    assert runs.load_checkpoint(run)["step"] == 8 and sorted(p.name for p in run.iterdir()) == [
        runs.CHECKPOINT, runs.CLASSES, runs.CONFIG, runs.METRICS]  # no half-written file beside it


# ---- hostile and broken checkpoints ------------------------------------------------------------------------
class Evil:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return os.makedirs, (str(self.target),)


def test_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from multiglance.cli import main

    run = tmp_path / "run"
    run.mkdir()
    torch.save({"format": runs.FORMAT, "model": Evil(tmp_path / "pwned")}, run / runs.CHECKPOINT)
    with pytest.raises(CheckpointError, match="refused .*could run code"):
        runs.load_checkpoint(run)
    runs.save_config(run, tiny())
    assert main(["eval", str(run), "--no-timing"]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and err.count("\n") == 1
    assert main(["train", "--preset", "digits-two", "--out", str(run), "--resume", "--quiet"]
                + [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]) == 2
    assert not (tmp_path / "pwned").exists()


def test_truncated_and_foreign_checkpoints_are_clear_errors(tmp_run: Path) -> None:
    good = (tmp_run / runs.CHECKPOINT).read_bytes()
    for name, data in [("cut", good[: len(good) // 2]), ("empty", b""), ("text", b"hello")]:
        (tmp_run / name).write_bytes(data)
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            runs.load_checkpoint(tmp_run / name)
    torch.save({"weights": torch.zeros(3)}, tmp_run / "foreign")
    with pytest.raises(CheckpointError, match="not a multiglance checkpoint"):
        runs.load_checkpoint(tmp_run / "foreign")


@pytest.fixture(scope="module")
def tmp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("small") / "run"
    run_fit(tiny(**{"train.epochs": 1}), run)
    return run


@settings(max_examples=examples(40), deadline=None)
@given(edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=6),
       cut=st.floats(0.05, 1))
def test_damaged_checkpoints_raise_only_checkpoint_error(tmp_run: Path, edits: list, cut: float) -> None:
    data = bytearray((tmp_run / runs.CHECKPOINT).read_bytes())
    for where, value in edits:
        data[int(where * len(data))] = value
    path = tmp_run / "damaged.pt"
    path.write_bytes(bytes(data[: int(cut * len(data))]))
    try:
        state = runs.load_checkpoint(path)
    except CheckpointError:
        return
    assert state["format"] == runs.FORMAT  # an edit that missed everything that matters


def test_metrics_cut_short_are_truncated_and_unwritable_metrics_are_a_clear_error(tmp_path: Path) -> None:
    records = [{"kind": "train", "epoch": 1, "step": s} for s in (1, 2, 3)] + [{"kind": "epoch", "epoch": 1, "step": 3}]
    records += [{"kind": "train", "epoch": 2, "step": s} for s in (4, 5, 6)]
    for r in records:
        runs.append_metrics(tmp_path, r)
    with open(tmp_path / runs.METRICS, "a") as f:
        f.write('{"kind": "train", "epoch": 2, "st')  # a line a crash cut short
    assert runs.read_metrics(tmp_path) == records
    runs.truncate_metrics(tmp_path, 1, last_step=5)  # a mid-epoch checkpoint at step 5
    assert runs.read_metrics(tmp_path) == records[:6]
    runs.truncate_metrics(tmp_path, 1)  # an end-of-epoch checkpoint after epoch 1
    assert runs.read_metrics(tmp_path) == records[:4]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / runs.METRICS).mkdir()  # any OSError on append (as a full disk would give)
    with pytest.raises(UserError, match="could not write .*metrics.jsonl.*--resume"):
        runs.append_metrics(tmp_path / "full", records[0])
