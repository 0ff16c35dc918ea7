"""A run folder: `config.yaml` (the resolved config), `metrics.jsonl`, `checkpoint.pt` (the last epoch).

Checkpoints are `{model, optimizer, scheduler, epoch, step, config, preset, format}` written atomically
(a temporary file, fsync, then `os.replace`): a crash leaves the previous checkpoint intact, never half a
file. A mid-epoch checkpoint (SIGINT/SIGTERM, `train.checkpoint_every`) also holds `batch_in_epoch` (>0:
that many batches of epoch `epoch + 1` are done) and `partial` (that epoch's running sums); every
checkpoint holds `rng`, the global generator's state. They are read with `torch.load(weights_only=True)`,
so a checkpoint cannot run code.

A `--resume` goes through `check_resume(out, cfg)`: the run must exist, and its config may differ from the
new one only in `RESUMABLE_KEYS` (more epochs); `describe_resume` gives the line saying where it continues.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from .config import RunConfig, from_dict, to_dict
from .errors import CheckpointError, UserError
from .files import atomic_write

CHECKPOINT, CONFIG, METRICS, CLASSES = "checkpoint.pt", "config.yaml", "metrics.jsonl", "classes.json"
FORMAT = "multiglance-checkpoint-1"


def remove_temp_files(run_dir: Path) -> list[Path]:
    """Delete the temporary files of writes that a crash (SIGKILL, power cut) cut short; returns them."""
    stale = [p for name in (CHECKPOINT, CONFIG, METRICS) for p in Path(run_dir).glob(f".{name}.*.tmp")]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def save_config(run_dir: Path, cfg: RunConfig) -> None:
    import yaml

    text = yaml.safe_dump(to_dict(cfg), sort_keys=False).encode()
    atomic_write(Path(run_dir) / CONFIG, lambda f: f.write(text))


def save_classes(run_dir: Path, classes: list[str]) -> None:
    text = json.dumps(list(classes)).encode()
    atomic_write(Path(run_dir) / CLASSES, lambda f: f.write(text))


def load_classes(run_dir: Path) -> list[str] | None:
    """The class names saved with a run, or None (runs made before they were saved, or a damaged file)."""
    try:
        classes = json.loads((Path(run_dir) / CLASSES).read_text())
    except (OSError, ValueError):
        return None
    return [str(c) for c in classes] if isinstance(classes, list) else None


def load_config(run_dir: Path) -> RunConfig:
    import yaml

    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise UserError(f"{str(run_dir)!r} is not a run folder (no {CONFIG}); pass the --out of a training run")
    try:
        return from_dict(yaml.safe_load(path.read_text()))
    except yaml.YAMLError:
        raise UserError(f"{str(path)!r} is not valid YAML; restore it or train again") from None


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> None:
    state = {"format": FORMAT, **state}
    atomic_write(Path(run_dir) / CHECKPOINT, lambda f: torch.save(state, f))


def _first_line(e: BaseException, limit: int) -> str:
    """The start of an exception's message for a one-line error (some have none: `EOFError()`)."""
    lines = str(e).strip().splitlines()
    return lines[0][:limit] if lines else type(e).__name__


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint safely (weights only). Every way it can be wrong is one clear `CheckpointError`."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {str(path)!r}; train first, or check the run folder")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"refused {str(path)!r}: it holds objects other than weights and plain values, "
                              f"which could run code ({_first_line(e, 120)})") from None
    except Exception as e:  # noqa: BLE001 - damaged bytes raise many types (EOFError, KeyError, BadZipFile...)
        raise CheckpointError(f"{str(path)!r} is not a readable checkpoint (truncated or corrupt: "
                              f"{_first_line(e, 100)}); resume from another copy or train again") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a multiglance checkpoint; pass a run folder made by "
                              "`multiglance train`")
    return state


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one JSON line. A line cut short (a crash, a full disk) is skipped by `read_metrics` and dropped
    by the `truncate_metrics` of the next --resume."""
    try:
        with open(Path(run_dir) / METRICS, "a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as e:
        raise UserError(f"could not write {str(Path(run_dir) / METRICS)!r} ({e.strerror}); free some space (or "
                        "choose a writable --out) and --resume") from None


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a crash
            continue
    return records


def truncate_metrics(run_dir: Path, last_epoch: int, last_step: int | None = None) -> None:
    """Keep only the records of epochs up to `last_epoch` (after a resume, the rest are redone); given
    `last_step` (a mid-epoch checkpoint's), training records are kept up to that step instead."""
    def keep(r: dict[str, Any]) -> bool:
        if last_step is not None and r.get("kind") == "train":
            return r.get("step", 0) <= last_step
        return r.get("epoch", 0) <= last_epoch

    kept = [r for r in read_metrics(run_dir) if keep(r)]
    text = "".join(json.dumps(r) + "\n" for r in kept).encode()
    atomic_write(Path(run_dir) / METRICS, lambda f: f.write(text))


def load_run(run_dir: str | os.PathLike, device: str = "cpu"):
    """A trained model, in eval mode, and its RunConfig: `model, cfg = load_run("runs/digits-two")`."""
    run_dir = Path(run_dir)
    cfg = load_config(run_dir)
    state = load_checkpoint(run_dir)
    return build_trained(cfg, state, f"the checkpoint in {str(run_dir)!r}").to(device).eval(), cfg


def build_trained(cfg: RunConfig, state: dict[str, Any], what: str):
    """`cfg`'s model with `state["model"]` loaded; CheckpointError naming `what` when they do not fit."""
    from .models import build_model

    model = build_model(cfg.model, initial_weights=False)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(f"{what} does not fit its config's model ({_first_line(e, 100)}); it comes from "
                              "another model") from None
    return model


# -------------------------------------------------------------------------------------------- resuming #

RESUMABLE_KEYS = {"train.epochs"}  # the config keys a --resume may change (recorded as a resume event)
_MISSING = "(unset)"


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"patch_size": 8}} -> {"model.patch_size": 8}; tuples become lists."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The dotted keys (`model.patch_size`) whose values differ between two config dicts (`to_dict` form),
    sorted; a key that only one of them has differs too."""
    a, b = _flat(old), _flat(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k, _MISSING) != b.get(k, _MISSING))


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def check_resume(out_dir: str | os.PathLike, cfg: RunConfig) -> dict[str, Any]:
    """What a `--resume` of `cfg` in `out_dir` continues: {"state": the checkpoint, "changed": the resumable
    keys that differ, "values": {key: [old, new]} for them}. A UserError when `out_dir` holds no run, when the
    config differs from the run's in any other key (all are listed), or when there is nothing left to train.
    Call it after the model fields have been derived from the data, so both sides hold the same values."""
    out_dir = Path(out_dir)
    if not (out_dir / CHECKPOINT).is_file():
        raise UserError(f"--resume: {str(out_dir)!r} holds no run (no {CHECKPOINT}); check --out or drop --resume")
    state = load_checkpoint(out_dir)
    if not isinstance(state.get("config"), dict):
        raise CheckpointError(f"--resume: the checkpoint in {str(out_dir)!r} records no config; train again "
                              "with another --out")
    old, new = state["config"], to_dict(cfg)
    try:  # keys added since the run was made take their defaults, as they did then
        old = to_dict(from_dict(old))
    except UserError:
        pass
    fo, fn = _flat(old), _flat(new)
    diff = config_diff(old, new)
    refused = [k for k in diff if k not in RESUMABLE_KEYS]
    if refused:
        listed = ", ".join(f"{k} ({_shown(fo.get(k, _MISSING))} -> {_shown(fn.get(k, _MISSING))})" for k in refused)
        raise UserError(f"--resume: the config differs from the run's in {listed}; resume with the same settings "
                        "or use another --out")
    done = int(state.get("epoch", -1)) + 1  # whole epochs done (a mid-epoch checkpoint is inside the next one)
    if cfg.train.epochs < done + 1:  # nothing left to train (a finished run, or --epochs lowered)
        part = " and part of the next" if state.get("batch_in_epoch") else ""
        raise UserError(f"--resume: the run in {str(out_dir)!r} has done {done} epochs{part}, train.epochs="
                        f"{cfg.train.epochs}; pass --epochs {done + 1} or more to train further")
    return {"state": state, "changed": diff, "values": {k: [fo.get(k), fn.get(k)] for k in diff}}


def describe_resume(state: dict[str, Any], path: str | os.PathLike) -> str:
    """'resuming from epoch E, step S (checkpoint of 2026-12-02 14:03, ...)': E is the (1-based) epoch training
    continues in, S the optimizer steps done, the time that of checkpoint.pt (local time)."""
    import time

    path = Path(path)
    path = path / CHECKPOINT if path.is_dir() else path
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime)) if path.exists() else "unknown"
    epoch, step, batch = int(state.get("epoch", -1)), int(state.get("step", 0)), int(state.get("batch_in_epoch") or 0)
    where = f"inside it, after batch {batch}" if batch else f"epoch {epoch + 1} done" if epoch >= 0 else "no epoch done"
    return f"resuming from epoch {epoch + 2}, step {step} (checkpoint of {when}, {where})"
