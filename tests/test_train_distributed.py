"""DDP with two processes on CPU (gloo): train/distributed.py, train/stopping.py and what the loop reports.

- the epoch's training loss and accuracy are over both processes' shares: with the weights held still (a learning
  rate of 1e-30) they equal one process's over the whole batches;
- a signal that reaches one process mid-epoch stops both after the same step, with a checkpoint whose running
  sums cover both shares, and `--resume` ends the epoch with the same loss as a run that never stopped;
- a signal during rank 0's validation stops both processes (neither waits for the other in an all-reduce);
- `torchrun` on the CLI trains, and rank 0 alone writes the run folder.
"""
from __future__ import annotations

import faulthandler
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from conftest import tiny_config
from multiglance import runs
from multiglance.errors import Stopped

STILL = {"data.train_limit": 256, "data.val_limit": 32, "data.test_limit": 32, "train.batch_size": 64,
         "train.lr": 1e-30, "train.checkpoint_minutes": 0, "train.device": "cpu"}  # 4 steps of 2 x 32 images


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- what each of the two processes runs ----------------------------------------------------------------------
def signal_at_second_batch():
    """train_batches that sends this process SIGTERM as it hands out the epoch's second batch (step 2)."""
    import multiglance.train.epoch as epoch

    real = epoch.train_batches

    def batches(*args, **kwargs):
        for i, batch in enumerate(real(*args, **kwargs)):
            if i == 1:
                signal.raise_signal(signal.SIGTERM)
            yield batch
    return epoch, "train_batches", batches


def signal_in_validation():
    """validate that sends this process SIGTERM first (rank 0 validates alone, the other process is waiting)."""
    import multiglance.train.loop as loop

    real = loop.validate

    def validate(*args, **kwargs):
        signal.raise_signal(signal.SIGTERM)
        return real(*args, **kwargs)
    return loop, "validate", validate


def process(rank: int, jobs: list[dict], results: str, timeout: float) -> None:
    """One of the two processes: the jobs in order, each a fit (with a fault injected in one rank), its outcome
    written to RESULTS/NAME.RANK.json. A process still running after `timeout` seconds prints where it waits."""
    from multiglance.train import fit

    faulthandler.dump_traceback_later(timeout, exit=True)
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1")
    for job in jobs:
        os.environ["MASTER_PORT"] = str(job["port"])
        patch = job["fault"]() if job.get("fault_rank") == rank else None
        real = patch and getattr(patch[0], patch[1])
        if patch:
            setattr(patch[0], patch[1], patch[2])
        try:
            outcome = {"record": fit(tiny_config(**job["config"]), job["out"], resume=job.get("resume", False),
                                     progress=False)}
        except Stopped as e:
            outcome = {"stopped": str(e), "exit_code": e.exit_code}
            if rank == 0:  # written before it stopped; a later job may continue the run
                state = runs.load_checkpoint(job["out"])
                outcome["checkpoint"] = {"epoch": state["epoch"], "step": state["step"],
                                         "batch_in_epoch": state["batch_in_epoch"],
                                         "seen": (state["partial"] or {}).get("seen")}
        finally:
            if patch:
                setattr(patch[0], patch[1], real)
        Path(results, f"{job['name']}.{rank}.json").write_text(json.dumps(outcome))


def run_two(jobs: list[dict], results: Path, timeout: float = 150) -> None:
    """The jobs in two processes; one that waits for the other for ever is stopped after `timeout` seconds (the
    jobs that finished left their results, the others have none)."""
    context = mp.start_processes(process, args=(jobs, str(results), timeout), nprocs=2, join=False,
                                 start_method="spawn")
    deadline = time.monotonic() + timeout + 10
    try:
        while not context.join(timeout=1) and time.monotonic() < deadline:
            pass
    except mp.ProcessExitedException:
        pass  # a process that hung: its traceback is on stderr
    for p in context.processes:
        p.kill()


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> dict:
    """The jobs run once by two processes; their outcomes by job name, then rank."""
    base = tmp_path_factory.mktemp("ddp")
    jobs = [{"name": "whole", "config": STILL, "out": str(base / "whole")},
            {"name": "stopped", "config": STILL, "out": str(base / "stopped"), "fault": signal_at_second_batch,
             "fault_rank": 1},
            {"name": "resumed", "config": STILL, "out": str(base / "stopped"), "resume": True},
            {"name": "validation", "config": STILL | {"train.epochs": 2}, "out": str(base / "validation"),
             "fault": signal_in_validation, "fault_rank": 0}]
    for job in jobs:
        job["port"] = free_port()
    (base / "results").mkdir()
    run_two(jobs, base / "results")
    outcomes = {}
    for job in jobs:
        files = [base / "results" / f"{job['name']}.{rank}.json" for rank in (0, 1)]
        outcomes[job["name"]] = [json.loads(f.read_text()) if f.exists() else None for f in files]
    return {"base": base, "outcomes": outcomes}


def test_training_loss_and_accuracy_are_over_both_shares(two, tmp_path):
    from multiglance.train import fit

    whole = two["outcomes"]["whole"]
    assert None not in whole, whole
    one = fit(tiny_config(**STILL), tmp_path / "one", progress=False)  # one process, every image of each batch
    for record in (r["record"] for r in whole):
        assert record["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5)
        assert record["train_acc"] == pytest.approx(one["train_acc"], abs=1e-6)
    assert whole[0]["record"]["val_acc_hard"] == pytest.approx(one["val_acc_hard"])  # rank 0 validates


def test_a_signal_to_one_process_stops_both_after_the_same_step(two):
    stopped = two["outcomes"]["stopped"]
    line = "stopped by SIGTERM at step 2; the checkpoint is saved, continue with --resume"
    assert None not in stopped and [(o["stopped"], o["exit_code"]) for o in stopped] == [(line, 143)] * 2, stopped
    # a mid-epoch checkpoint after step 2, whose running sums count both processes' images
    assert stopped[0]["checkpoint"] == {"epoch": -1, "step": 2, "batch_in_epoch": 2, "seen": 2 * 64}
    resumed, whole = two["outcomes"]["resumed"], two["outcomes"]["whole"]
    assert None not in resumed, resumed
    assert resumed[0]["record"]["train_loss"] == pytest.approx(whole[0]["record"]["train_loss"], rel=1e-5)
    assert resumed[0]["record"]["train_acc"] == pytest.approx(whole[0]["record"]["train_acc"], abs=1e-6)


def test_a_signal_during_rank_0s_validation_stops_both(two):
    outcome = two["outcomes"]["validation"]
    assert None not in outcome, f"a process did not stop (it waited for the other one): {outcome}"
    line = "stopped by SIGTERM at step 4; the checkpoint is saved, continue with --resume"
    assert [(o["stopped"], o["exit_code"]) for o in outcome] == [(line, 143)] * 2, outcome
    assert outcome[0]["checkpoint"] == {"epoch": 0, "step": 4, "batch_in_epoch": 0, "seen": None}  # epoch 1 saved


def test_torchrun_trains_and_rank_0_alone_writes(tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[1] / "src"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "multiglance",
           "train", "--preset", "digits-two", "--out", str(out), "--quiet", "--set", "data.train_limit=256",
           "--set", "data.val_limit=32", "--epochs", "1", "--set", "train.batch_size=64"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("run saved in") == 2  # both processes finished
    records = runs.read_metrics(out)
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert len(epochs) == 1 and epochs[0]["step"] == 256 // 64
    assert runs.load_checkpoint(out)["epoch"] == 0
