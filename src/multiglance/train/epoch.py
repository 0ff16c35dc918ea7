"""One epoch of training: `train_one_epoch`, a loop over `train_step`, the one optimisation step (which
`bench speed` times too), fed by `epoch_batches` (uint8 to a model that reads uint8 itself).

What the epoch needs travels in a `Trainer`: the model (DDP-wrapped or not) and its raw module, the optimiser
and schedule, the config, and where this process stands (rank of world, device, run folder).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import runs
from ..config import RunConfig
from ..data.batches import train_batches
from ..errors import UserError
from ..models.output import as_output
from .distributed import over_ranks
from .evaluation import takes_uint8
from .objectives import loss_fn
from .stopping import StopSignal


@dataclass
class Trainer:
    """What one epoch needs; `last_save` is the time.monotonic() of the last checkpoint (train.checkpoint_minutes)."""
    model: nn.Module
    raw_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    cfg: RunConfig
    rank: int = 0
    world: int = 1
    device: str = "cpu"
    run_dir: Path | None = None
    progress: bool = False
    last_save: float = 0.0


def epoch_batches(t: Trainer, train, epoch: int, start_batch: int = 0):
    """This process's share of every batch of `epoch`, shuffled and augmented as the config says: uint8 for a
    model that converts only what it reads (`takes_uint8`), float in [0, 1] otherwise."""
    cfg = t.cfg
    return train_batches(train, batch_size=cfg.train.batch_size, seed=cfg.train.seed, epoch=epoch,
                         crop_padding=cfg.data.crop_padding, flip=cfg.data.flip, rank=t.rank, world=t.world,
                         channels_last=cfg.train.channels_last, device=t.device, start_batch=start_batch,
                         workers=cfg.train.workers, as_float=not takes_uint8(t.raw_model))


def train_step(t: Trainer, x: torch.Tensor, y: torch.Tensor, *, epoch: int = 0, step: int = 0):
    """One optimisation step on batch (x, y): forward, loss, backward, clipped gradients, optimiser and
    schedule. Returns (the model's output, a `GlanceOutput`, and the loss); a loss that is not finite is refused before any weight
    changes (`epoch`, `step`: where, for the message)."""
    out = as_output(t.model(x))
    loss = loss_fn(t.raw_model, out, y, t.cfg)
    if not torch.isfinite(loss):
        raise UserError(f"the loss became {loss.item()} at epoch {epoch + 1}, step {step}; the last good "
                        "checkpoint is kept. Lower train.lr (or add warm-up) and --resume")
    t.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if t.cfg.train.grad_clip:
        torch.nn.utils.clip_grad_norm_(t.raw_model.parameters(), t.cfg.train.grad_clip)
    t.optimizer.step()
    t.scheduler.step()
    return out, loss


def train_one_epoch(t: Trainer, train, epoch: int, step: int, *, start_batch: int = 0, partial: dict | None = None,
                    checkpoint=None, stop: StopSignal | None = None) -> dict:
    """One pass over the training split. `start_batch` skips the batches a mid-epoch checkpoint already holds
    (`partial`: their running sums, over every process). After every step but the epoch's last, rank 0 calls
    `checkpoint(step, batch, sums)` every `train.checkpoint_every` steps or `train.checkpoint_minutes`, and
    after the step during which any process received a signal (`stop`), which ends the epoch early in every
    process, with "stopped": True in the returned record. Losses, accuracies and image counts are over every
    process."""
    cfg = t.cfg
    t.model.train()
    steps = len(train) // cfg.train.batch_size
    if cfg.model.choice == "gumbel" and cfg.train.tau_final is not None:  # anneal tau geometrically
        frac = epoch / max(1, cfg.train.epochs - 1)
        t.raw_model.tau = cfg.model.tau * (cfg.train.tau_final / cfg.model.tau) ** frac
    batches = iter(epoch_batches(t, train, epoch, start_batch))
    bar = _progress_bar(t, steps, start_batch, epoch)
    partial, stop = partial or {}, stop or StopSignal()
    sums = partial if t.rank == 0 else {}  # a checkpoint's sums are over every process: counted once
    total_loss = sums.get("loss_sum", torch.zeros(())).to(t.device)
    correct = sums.get("correct", torch.zeros(())).to(t.device)
    seen, start = sums.get("seen", 0), time.perf_counter() - partial.get("seconds", 0.0)
    data_seconds = partial.get("data_seconds", 0.0)
    stopped, batch = False, start_batch
    while True:
        wait = time.perf_counter()
        try:
            x, y = next(batches)
        except StopIteration:
            break
        data_seconds += time.perf_counter() - wait
        out, loss = train_step(t, x, y, epoch=epoch, step=step)
        step, batch = step + 1, batch + 1
        total_loss += loss.detach() * y.shape[0]
        correct += (out.answer.detach().argmax(-1) == y).sum()
        seen += y.shape[0]
        _log_step(t, bar, epoch, step, loss)
        if checkpoint is not None and batch < steps:  # the end of the epoch checkpoints anyway
            signum, due = stop.agree(t.world, t.device, t.rank == 0 and _checkpoint_due(t, step))
            stopped = bool(signum)
            if stopped or due:
                loss_sum, right, n, _ = _over_ranks(t, total_loss, correct, seen)
                if t.rank == 0:
                    checkpoint(step, batch, {"loss_sum": loss_sum.detach().cpu(), "correct": right.cpu(), "seen": n,
                                             "seconds": time.perf_counter() - start, "data_seconds": data_seconds})
            if stopped:
                break
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    total_loss, correct, seen, skipped = _over_ranks(t, total_loss, correct, seen, getattr(train, "skipped", 0))
    return {**({"stopped": True} if stopped else {}), "step": step, "train_loss": (total_loss / max(seen, 1)).item(),
            "train_acc": (correct / max(seen, 1)).item(), "train_seconds": seconds, "data_seconds": data_seconds,
            "images_per_s": seen / max(seconds, 1e-9), "skipped_images": skipped}


def _checkpoint_due(t: Trainer, step: int) -> bool:
    every, minutes = t.cfg.train.checkpoint_every, t.cfg.train.checkpoint_minutes
    due = bool(minutes) and time.monotonic() - t.last_save >= 60 * minutes
    return due or bool(every and step % every == 0)


def _over_ranks(t: Trainer, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int, skipped: int = 0) -> tuple:
    """The running sums (loss, correct, images, skipped files) over every process; themselves in one process."""
    if t.world == 1:
        return loss_sum, correct, seen, skipped
    a, b, n, s = over_ranks([loss_sum.item(), correct.item(), seen, skipped], t.world, t.device)
    return (torch.tensor(a, dtype=loss_sum.dtype, device=loss_sum.device),
            torch.tensor(b, dtype=correct.dtype, device=correct.device), int(n), int(s))


def _progress_bar(t: Trainer, steps: int, start_batch: int, epoch: int):
    if not (t.progress and t.rank == 0):
        return None
    from tqdm import tqdm

    return tqdm(total=steps, initial=start_batch, desc=f"epoch {epoch + 1}/{t.cfg.train.epochs}", unit="step",
                leave=False, disable=None)  # disable=None: no bar when stdout is not a terminal (clean logs)


def _log_step(t: Trainer, bar, epoch: int, step: int, loss: torch.Tensor) -> None:
    """The progress bar's loss and rate; a "train" record in metrics.jsonl every `train.log_every` steps."""
    if bar is not None:
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{t.scheduler.get_last_lr()[0]:.3g}")
    if t.rank == 0 and t.run_dir is not None and step % t.cfg.train.log_every == 0:
        runs.append_metrics(t.run_dir, {"kind": "train", "epoch": epoch + 1, "step": step,
                                        "loss": loss.item(), "lr": t.scheduler.get_last_lr()[0]})
