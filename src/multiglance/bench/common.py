"""What the benchmark drivers share: the `bench` command group, and one train-evaluate-publish path.

Each driver (paper.py: the report's tables; beyond.py: the glimpse benchmarks and fronts; megapixel.py;
large.py: a folder of large photos and the photo scenes; speed.py) trains with `train.fit`, selects on the
validation split, reads the test split once after training by the saved model's own inference path
(`evaluate.evaluate_run`, what `multiglance eval RUN` computes), then writes one JSON per run
(`results.write_result`) with no path of this machine in it:

    if not train_or_resume(cfg, run_dir, progress=False):     # complete, resumed, reused or trained afresh
        ...                                                   # stopped early: publish nothing
    record = val_and_test(run_dir, overrides=[...])           # val accuracy, then the test split once
    record["config"] = shown_config(cfg)                      # data.root / init_from without machine paths
"""
from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from .. import runs
from ..config import RunConfig, to_dict
from ..errors import UserError
from ..results import shown_path


def bench_subparsers(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The `bench` command's own subparsers action, creating `bench` if no module has yet (any order works)."""
    bench = subparsers.choices.get("bench")
    if bench is None:
        bench = subparsers.add_parser("bench", help="experiments and benchmarks that write docs/")
    for action in bench._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return bench.add_subparsers(dest="bench_command", required=True)


# ---- paths as JSON and docs show them (results.shown_path, results.command_line) ---------------------------
def check_load(limit: float, when: str = "") -> float:
    """The 1-minute load average; a UserError if it is above `limit` (the timings would be contended)."""
    load = os.getloadavg()[0]
    if load > limit:
        raise UserError(f"load average {load:.1f}{' ' + when if when else ''} is above --max-load {limit:g}: "
                        "timings would measure other processes; wait for an idle machine (`uptime`) or pass a "
                        "higher --max-load")
    return load


def shown_config(cfg: RunConfig) -> dict:
    """The config as a dict, its paths (data.root, train.init_from) shown without machine folders."""
    d = to_dict(cfg)
    for section, key in (("train", "init_from"), ("data", "root")):
        if d[section].get(key):
            d[section][key] = shown_path(d[section][key])
    return d


# ---- train -----------------------------------------------------------------------------------------------------
def epoch_records(run_dir: Path) -> list[dict]:
    """One record per epoch (the last one written wins: a resumed run may have logged an epoch twice)."""
    return list({r["epoch"]: r for r in runs.read_metrics(Path(run_dir)) if r.get("kind") == "epoch"}.values())


def is_complete(run_dir: Path, cfg: RunConfig) -> bool:
    return (Path(run_dir) / runs.CHECKPOINT).is_file() and len(epoch_records(run_dir)) >= cfg.train.epochs


def _check_same_config(run_dir: Path, cfg: RunConfig) -> None:
    """UserError when `run_dir` holds a run of another config. Fields `cfg` leaves to the data (None, filled in
    by `config.derive`) and the resumable ones (train.epochs) do not count."""
    new = runs._flat(to_dict(cfg))
    differ = [k for k in runs.config_diff(to_dict(runs.load_config(run_dir)), to_dict(cfg))
              if new.get(k) is not None and k not in runs.RESUMABLE_KEYS]
    if differ:
        raise UserError(f"{shown_path(run_dir)!r} holds a run of another config ({', '.join(differ)} differ); delete "
                        "it, or pass another --runs-dir")


def find_reusable(cfg: RunConfig, reuse: list[Path]) -> Path | None:
    """A finished run folder under one of `reuse` whose resolved config is exactly `cfg`."""
    want = to_dict(cfg)
    for base in reuse:
        for cand in sorted(p for p in Path(base).glob("*") if (p / runs.CONFIG).is_file()):
            try:
                same = to_dict(runs.load_config(cand)) == want
            except UserError:
                continue
            if same and is_complete(cand, cfg):
                return cand
    return None


def train_or_resume(cfg: RunConfig, run_dir: str | os.PathLike, progress: bool = False, *,
                    data: tuple | None = None, reuse: list[Path] = (), log=None) -> bool:
    """Make `run_dir` a complete run of `cfg`: kept if it is one, resumed if cut short, copied from a finished run
    of exactly `cfg` under one of the `reuse` folders (`log` says so), else trained with `train.fit` (on `data` =
    (train, val) if given, else on what `cfg` names: never the test split). True when complete; False when training
    stopped early (fit returned with fewer epochs than planned). A folder that holds a run of another config is
    refused."""
    from ..train import fit

    run_dir = Path(run_dir)
    if (run_dir / runs.CONFIG).is_file():
        _check_same_config(run_dir, cfg)
        if is_complete(run_dir, cfg):
            return True
    if (source := find_reusable(cfg, reuse)) is not None:  # also over a partial run of our own
        if log is not None:
            log(f"  reusing the finished run {source}")
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.copytree(source, run_dir, ignore=shutil.ignore_patterns(".*.tmp", "tensorboard"))
        return True
    fit(cfg, run_dir, resume=(run_dir / runs.CHECKPOINT).is_file(), progress=progress, data=data)
    return is_complete(run_dir, cfg)


# ---- evaluate ----------------------------------------------------------------------------------------------------
def eval_command(run_dir: str | os.PathLike, split: str = "test", overrides: list[str] = ()) -> str:
    """The `multiglance eval` line that recomputes a published number from the run folder."""
    return " ".join([f"multiglance eval {shown_path(run_dir)} --split {split}", *(f"--set {o}" for o in overrides)])


def published_test(run_dir: str | os.PathLike, overrides: list[str] = (), *, timing: bool = False,
                   repeats: int = 20) -> dict:
    """The test split of a finished run, read once, by `evaluate.evaluate_run` (the saved model's own inference
    path, with inference-time `overrides`): its keys (accuracy_hard, accuracy_soft, test_images,
    test_flops_per_image, params, ...) without run and split, plus eval_command (the `multiglance eval` line that
    prints the same numbers) and run_dir (the folder's name)."""
    from ..evaluate import evaluate_run

    test = evaluate_run(run_dir, split="test", overrides=list(overrides), timing=timing, repeats=repeats)
    for key in ("run", "split"):
        test.pop(key, None)
    return {**test, "eval_command": eval_command(run_dir, "test", overrides), "run_dir": Path(run_dir).name}


def val_and_test(run_dir: str | os.PathLike, *, k: int | None = None, overrides: list[str] = (),
                 timing: bool = False, repeats: int = 20) -> dict:
    """A finished run's published numbers: validation accuracy (what every choice is made on), then the test
    split once (`published_test`), both by `evaluate.evaluate_run` with inference-time `overrides` (and
    model.top_k=k). Keys: published_test's, selection "val", val_accuracy_hard / _soft and val_images."""
    from ..evaluate import evaluate_run

    overrides = [*overrides, *([f"model.top_k={k}"] if k is not None else [])]
    val = evaluate_run(run_dir, split="val", overrides=overrides, timing=False)
    test = published_test(run_dir, overrides, timing=timing, repeats=repeats)
    return {**test, "selection": "val", "val_accuracy_hard": val["accuracy_hard"],
            "val_accuracy_soft": val["accuracy_soft"], "val_images": val["test_images"]}


def add_publish_options(p: argparse.ArgumentParser, runs_dir: str) -> None:
    """The options every training bench shares: where runs and docs go, threads, the load guard, publishing."""
    p.add_argument("--runs-dir", default=runs_dir, help="where generated folders and run folders go")
    p.add_argument("--docs", default="docs", help="docs folder (results/ and RESULTS.md inside)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--max-load", type=float, default=2.5, help="refuse to measure above this load average")
    p.add_argument("--report-only", action="store_true", help="rebuild the RESULTS section from the JSON files")
    p.add_argument("--allow-dirty", action="store_true", help="publish from a tree with uncommitted changes")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def finished_run(cfg: RunConfig, run_dir: Path, progress: bool = False) -> tuple:
    """`train_or_resume`, refusing a run that stopped early; then (model, its saved config, the number of training
    images it read, its epoch records)."""
    from ..train import load_data

    if not train_or_resume(cfg, run_dir, progress):
        raise UserError(f"{Path(run_dir).name} stopped before its {cfg.train.epochs} epochs; run the same command "
                        "again to resume it")
    model, cfg = runs.load_run(run_dir)
    (train,) = load_data(cfg, ("train",))
    return model, cfg, len(train), epoch_records(run_dir)
