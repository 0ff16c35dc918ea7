"""What a checkpoint holds and how a run continues from one (`--resume`), or starts from another run's weights.

A checkpoint is `{model, optimizer, scheduler, epoch, step, batch_in_epoch, partial, rng, model_rng, config,
preset}`, written atomically by rank 0 (`runs.save_checkpoint`): after `epoch` whole epochs (0-based, -1 for
none) and `batch_in_epoch` batches of the next, with that epoch's running sums (`partial`, over every
process). `resume` puts all of it back, so that on CPU with a fixed seed a resumed run ends with exactly the
weights of one that never stopped. Weights that are no longer finite are never saved: the last good checkpoint
stays.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from torch import nn

from .. import runs
from ..errors import UserError
from ..files import atomic_write
from .epoch import Trainer


def save(t: Trainer, epoch_done: int, step: int, batch_in_epoch: int = 0, sums: dict | None = None) -> None:
    """Checkpoint after `epoch_done` whole epochs and `batch_in_epoch` batches of the next (rank 0 only)."""
    check_finite(t.raw_model, step)
    t.last_save = time.monotonic()
    generator = getattr(t.raw_model, "generator", None)
    runs.save_checkpoint(t.run_dir, {"model": t.raw_model.state_dict(), "optimizer": t.optimizer.state_dict(),
                                     "scheduler": t.scheduler.state_dict(), "epoch": epoch_done, "step": step,
                                     "batch_in_epoch": batch_in_epoch, "partial": sums, "rng": torch.get_rng_state(),
                                     "config": runs.to_dict(t.cfg),
                                     **({"model_rng": generator.get_state()} if generator is not None else {}),
                                     "preset": t.cfg.preset})


def resume(t: Trainer, state: dict) -> tuple[int, int, int, dict | None]:
    """Put a checkpoint's state back into `t`; returns (first epoch to train, step, batches of that epoch
    already done, their running sums)."""
    try:
        t.raw_model.load_state_dict(state["model"])
    except RuntimeError:
        raise UserError(f"the checkpoint in {str(t.run_dir)!r} was trained with another model config; "
                        "resume with the same preset and --set values, or use another --out") from None
    t.optimizer.load_state_dict(state["optimizer"])
    t.scheduler.load_state_dict(state["scheduler"])
    if "rng" in state:  # the global generator (gumbel noise) continues where it was
        torch.set_rng_state(state["rng"])
    if "model_rng" in state and getattr(t.raw_model, "generator", None) is not None:
        t.raw_model.generator.set_state(state["model_rng"])
    return state["epoch"] + 1, state["step"], state.get("batch_in_epoch", 0), state.get("partial")


def check_finite(model: nn.Module, step: int) -> None:
    """UserError if any weight is NaN or infinite (checked before a checkpoint or metrics record is written)."""
    if not torch.stack([p.detach().isfinite().all() for p in model.parameters()]).all():
        raise UserError(f"the weights became NaN or infinite by step {step}; the last good checkpoint is kept. "
                        "Lower train.lr (or add warm-up) and start again, or --resume from that checkpoint")


def init_weights(model: nn.Module, run_dir: str | os.PathLike) -> None:
    """Start from the weights of run `run_dir` (train.init_from; a curriculum: both glances of a convolutional
    two-glance model fit any image size). The optimiser starts afresh. A run whose weights do not fit is
    refused with one line."""
    state = runs.load_checkpoint(run_dir)
    if not isinstance(state.get("model"), dict):
        raise UserError(f"{run_dir} is not a run folder of `multiglance train`; train.init_from needs one")
    own = model.state_dict()
    weights = {k: v for k, v in state["model"].items() if not k.startswith("normalize.")}  # this data's stats
    try:
        model.load_state_dict(own | weights)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1].strip()
        raise UserError(f"the weights in {run_dir} do not fit this model ({first}); use a run with the same "
                        "channels, patch size and scorer") from None


def record_initial_weights(t: Trainer) -> None:
    """initial_weights.json: the name and SHA-256 of each local weights file the model was built from."""
    cfg, sha = t.cfg, getattr(t.raw_model, "weights_sha256", None)
    if not sha:
        return
    files = {"glance1_weights": cfg.model.glance1_weights, "glance2_weights": cfg.model.glance2_weights}
    record = {k: {"file": Path(v).name, "sha256": sha[k.split("_")[0]]} for k, v in files.items()
              if k.split("_")[0] in sha}  # a one-glance model reads glance2_weights only
    text = json.dumps(record, indent=1) + "\n"
    atomic_write(t.run_dir / "initial_weights.json", lambda f: f.write(text.encode()))
