"""The kill-and-resume record: SIGKILL a tiny CPU training run N times at random moments, `--resume` after
each kill, and check that it ends with weights bit-identical to a run that was never killed.

    OMP_NUM_THREADS=1 python scripts/kill_resume.py --kills 20 --work runs/kill-record --docs docs/RELIABILITY.md

Each child is `multiglance train` with a checkpoint written after every step (`train.checkpoint_every=1`), so
many kills land inside a checkpoint write. The child notes its phase (step, validation, checkpoint write)
in a small file as it goes; each kill comes at a uniform moment within --window seconds of the child's first
step, and the record says what it interrupted. After each kill the
checkpoint must load (never a partial one). The table goes between the `kill-record` markers of --docs.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from multiglance import runs

OVERRIDES = {"data.train_limit": 1024, "data.test_limit": 512, "train.batch_size": 32, "train.epochs": 12,
             "train.log_every": 1, "train.checkpoint_every": 1, "train.device": "cpu"}
TIMING = ("train_seconds", "images_per_s")

# The child: `multiglance train`, with its phase written (no fsync: cheap) to PHASE before each part of a step.
CHILD = r"""
import os, sys
from multiglance import cli, runs, train
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)
def mark(p): os.pwrite(fd, p.ljust(20).encode(), 0)
def wrap(module, name, phase):
    real = getattr(module, name)
    def inner(*a, **k):
        mark(phase)
        try:
            return real(*a, **k)
        finally:
            mark("step")
    setattr(module, name, inner)
wrap(train, "loss_fn", "step")
wrap(train, "validate", "validation")
wrap(runs, "save_checkpoint", "checkpoint write")
mark("startup")
sys.exit(cli.main(sys.argv[2:]))
"""


def launch(run: Path, phase: Path, resume: bool) -> subprocess.Popen:
    argv = ["train", "--preset", "digits-two", "--out", str(run), "--quiet"]
    argv += [a for k, v in OVERRIDES.items() for a in ("--set", f"{k}={v}")] + (["--resume"] if resume else [])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", CHILD, str(phase), *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def state_of(run: Path) -> str:
    if not (run / runs.CHECKPOINT).exists():
        return "no checkpoint yet"
    s = runs.load_checkpoint(run)  # a CheckpointError here would be a partial checkpoint: the test fails
    return f"step {s['step']} (epoch {s['epoch'] + 2 if s['batch_in_epoch'] else s['epoch'] + 1}, " \
           f"batch {s['batch_in_epoch'] or 'end'})"


def record(kills: int, work: Path, seed: int, window: float) -> dict:
    rng = random.Random(seed)
    work.mkdir(parents=True, exist_ok=True)
    ref, run, phase = work / "reference", work / "killed", work / "phase"
    for p in (ref, run):
        if p.exists():
            import shutil

            shutil.rmtree(p)
    start = time.monotonic()
    child = launch(ref, work / "phase-ref", resume=False)
    if child.wait() != 0:
        raise SystemExit(f"the reference run failed: {child.stderr.read()}")
    rows = []
    while len(rows) < kills:
        phase.write_bytes(b"")
        child = launch(run, phase, resume=(run / runs.CHECKPOINT).exists())
        while phase.read_bytes().decode().strip() in ("", "startup") and child.poll() is None:
            time.sleep(0.005)  # until the first step of this process
        time.sleep(rng.uniform(0, window))
        doing = phase.read_bytes().decode().strip() or "startup"
        child.send_signal(signal.SIGKILL)
        child.wait()
        if child.returncode == 0:
            raise SystemExit("the run finished before all kills; raise train.epochs or lower --window")
        temps = sorted(p.name for p in run.glob(".*.tmp"))
        rows.append({"kill": len(rows) + 1, "while": doing, "checkpoint after the kill": state_of(run),
                     "temporary files left": ", ".join(temps) or "-"})
        print(json.dumps(rows[-1]), flush=True)
    child = launch(run, phase, resume=True)
    if child.wait() != 0:
        raise SystemExit(f"the last resume failed: {child.stderr.read()}")
    a, b = runs.load_checkpoint(run), runs.load_checkpoint(ref)
    same = all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"]) and a["model"].keys() == b["model"].keys()
    same_opt = all(torch.equal(a["optimizer"]["state"][i]["momentum_buffer"], v["momentum_buffer"])
                   for i, v in b["optimizer"]["state"].items())
    strip = lambda d: [{k: v for k, v in r.items() if k not in TIMING} for r in runs.read_metrics(d)]  # noqa: E731
    return {"rows": rows, "weights_identical": bool(same), "optimizer_identical": bool(same_opt),
            "metrics_identical": strip(run) == strip(ref), "steps": a["step"],
            "temps_after": len(list(run.glob(".*.tmp"))),
            "seconds": round(time.monotonic() - start), "seed": seed}


def markdown(result: dict, command: str) -> str:
    rows = result["rows"]
    by_phase: dict[str, int] = {}
    for r in rows:
        by_phase[r["while"]] = by_phase.get(r["while"], 0) + 1
    lines = [f"`{command}` (seed {result['seed']}, {result['seconds']} s): {len(rows)} SIGKILLs at random moments "
             f"of a {result['steps']}-step CPU run (digits-two, checkpoint after every step), each followed by "
             "`--resume`.", "",
             f"- Kills by phase: {', '.join(f'{k} {v}' for k, v in sorted(by_phase.items()))}.",
             f"- Every checkpoint left by a kill loaded (none partial); temporary files of cut writes were removed "
             f"by the next resume ({result['temps_after']} left at the end).",
             f"- Final weights bit-identical to the uninterrupted run: **{result['weights_identical']}**; optimizer "
             f"momentum identical: **{result['optimizer_identical']}**; metrics.jsonl identical (timings aside): "
             f"**{result['metrics_identical']}**.", "",
             "| kill | while | checkpoint after the kill | temporary files left |", "|---:|---|---|---|"]
    lines += [f"| {r['kill']} | {r['while']} | {r['checkpoint after the kill']} | {r['temporary files left']} |"
              for r in rows]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--work", default="/tmp/multiglance-kill-record", help="folder for the two run folders")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--window", type=float, default=1.0, help="kill at a uniform moment this many seconds in")
    p.add_argument("--docs", help="write the record between the kill-record markers of this Markdown file")
    args = p.parse_args()
    result = record(args.kills, Path(args.work), args.seed, args.window)
    command = f"python scripts/kill_resume.py --kills {args.kills} --seed {args.seed}"
    text = markdown(result, command)
    print(text)
    if args.docs:
        doc = Path(args.docs).read_text()
        start, end = "<!-- kill-record -->", "<!-- /kill-record -->"
        new = re.sub(f"{re.escape(start)}.*?{re.escape(end)}", lambda m: f"{start}\n{text}\n{end}", doc, flags=re.S)
        runs.atomic_write(Path(args.docs), lambda f: f.write(new.encode()))
    ok = result["weights_identical"] and result["optimizer_identical"] and result["metrics_identical"]
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
