"""The training loop: one explicit loop, SGD, a learning-rate schedule, per-epoch validation, atomic
checkpoints, exact `--resume`, and DDP under torchrun.

    multiglance train --preset digits-two --out runs/digits-two
    multiglance train --preset paper-cifar10-two --set train.epochs=30 --out runs/c10-two --resume
    torchrun --standalone --nproc_per_node=2 -m multiglance train --preset digits-two --out runs/ddp

From Python: `fit(cfg, out_dir)` with a `RunConfig` (e.g. `get_preset("digits-two")`). On CPU with a fixed
seed a run that was stopped and resumed ends with exactly the weights of one that never stopped.
SIGINT/SIGTERM stop after the current step with a checkpoint; SIGKILL loses at most the steps since the last
checkpoint (every epoch, or every N steps with `--set train.checkpoint_every=N`). See docs/RELIABILITY.md.
"""
from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import runs
from .config import RunConfig
from .data import Split, load_split
from .data.batches import channel_stats, eval_batches, train_batches
from .errors import UserError
from .models import build_model


# ---- distributed (as nanoGPT does it) ------------------------------------------------------------------------
def setup_distributed(device: str) -> tuple[int, int, str]:
    """(rank, world size, device). Under torchrun: init the process group (nccl on GPU, gloo on CPU)."""
    if int(os.environ.get("RANK", -1)) == -1:
        return 0, 1, device
    import torch.distributed as dist

    backend = "nccl" if device.startswith("cuda") else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    return rank, world, device


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("train.device=cuda but no CUDA device is available; use train.device=cpu")
    return name


# ---- schedule and loss ---------------------------------------------------------------------------------------
def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    if schedule == "step":
        return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
    if schedule == "constant":
        return 1.0
    raise UserError(f"unknown train.schedule {schedule!r}; use cosine, step or constant")


def entropy(w: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each row of weights (B, P) -> (B,)."""
    return -(w * w.clamp_min(1e-12).log()).sum(-1)


def oracle_loss(z: torch.Tensor, scores: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0,
                best: float = 0.0):
    """choice="oracle": glance 2 is trained on every patch (mean cross-entropy over patches of z (B, P, K)),
    and glance 1's scores (B, P) are trained, as a P-way classification, to name the patch on which glance 2's
    loss is lowest. This trains the test-time hard choice itself: argmax w should be glance 2's best patch.
    `best` > 0 moves that share of glance 2's loss onto its best patch (the one it will be shown at test time,
    as in multiple-instance learning), away from patches that do not hold the object."""
    b, p, k = z.shape
    per_patch = F.cross_entropy(z.reshape(b * p, k), y.repeat_interleave(p), reduction="none",
                                label_smoothing=label_smoothing).view(b, p)  # (B, P)
    glance2 = (1 - best) * per_patch.mean() + best * per_patch.min(-1).values.mean()
    return glance2 + F.cross_entropy(scores, per_patch.detach().argmin(-1))


def loss_fn(model: nn.Module, out: torch.Tensor, y: torch.Tensor, cfg: RunConfig) -> torch.Tensor:
    if getattr(model, "last_patch_logits", None) is not None:
        loss = oracle_loss(model.last_patch_logits, model.last_scores, y, cfg.train.label_smoothing,
                           cfg.train.oracle_best)
    else:
        loss = F.cross_entropy(out, y, label_smoothing=cfg.train.label_smoothing)
    if cfg.train.entropy_weight and getattr(model, "last_weights", None) is not None:
        loss = loss + cfg.train.entropy_weight * entropy(model.last_weights).mean()
    log_prob = getattr(model, "last_log_prob", None)  # choice="reinforce": the sampled patch's log w, (B,)
    if log_prob is not None:  # REINFORCE, reward = -(the image's loss), baseline = the batch mean reward
        reward = -F.cross_entropy(out.detach(), y, reduction="none")  # (B,)
        loss = loss - ((reward - reward.mean()) * log_prob).mean()
    return loss


# ---- one epoch, evaluation -----------------------------------------------------------------------------------
def train_one_epoch(model, raw_model, optimizer, scheduler, train: Split, cfg: RunConfig, epoch: int, step: int,
                    rank: int, world: int, device: str, run_dir: Path | None, progress: bool, *,
                    start_batch: int = 0, partial: dict | None = None, checkpoint=None,
                    stop: dict | None = None) -> dict:
    """One pass over the training set. `start_batch` skips the batches a mid-epoch checkpoint already holds
    (`partial`: its running sums); `checkpoint(step, batch, sums)` is called every `train.checkpoint_every`
    steps, and after the step during which `stop["signal"]` was set (one process only), which ends the epoch
    early with "stopped": True in the returned record."""
    model.train()
    steps = len(train) // cfg.train.batch_size
    if cfg.model.choice == "gumbel" and cfg.train.tau_final is not None:  # anneal tau geometrically
        frac = epoch / max(1, cfg.train.epochs - 1)
        raw_model.tau = cfg.model.tau * (cfg.train.tau_final / cfg.model.tau) ** frac
    batches = train_batches(train.images, train.labels, batch_size=cfg.train.batch_size, seed=cfg.train.seed,
                            epoch=epoch, crop_padding=cfg.data.crop_padding, flip=cfg.data.flip, rank=rank,
                            world=world, channels_last=cfg.train.channels_last, device=device,
                            start_batch=start_batch)
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=steps, initial=start_batch, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", unit="step",
                   leave=False, disable=None)  # disable=None: no bar when stdout is not a terminal (clean logs)
    partial = partial or {}
    total_loss = partial.get("loss_sum", torch.zeros(())).to(device)
    correct = partial.get("correct", torch.zeros(())).to(device)
    seen, start = partial.get("seen", 0), time.perf_counter() - partial.get("seconds", 0.0)
    stopped = False
    for batch, (x, y) in enumerate(batches, start_batch):
        out = model(x)
        loss = loss_fn(raw_model, out, y, cfg)
        if not torch.isfinite(loss):
            raise UserError(f"the loss became {loss.item()} at epoch {epoch + 1}, step {step}; the last good "
                            "checkpoint is kept. Lower train.lr (or add warm-up) and --resume")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        step += 1
        total_loss += loss.detach() * y.shape[0]
        correct += (out.detach().argmax(-1) == y).sum()
        seen += y.shape[0]
        if bar is not None:
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{scheduler.get_last_lr()[0]:.3g}")
        if rank == 0 and run_dir is not None and step % cfg.train.log_every == 0:
            runs.append_metrics(run_dir, {"kind": "train", "epoch": epoch + 1, "step": step,
                                          "loss": loss.item(), "lr": scheduler.get_last_lr()[0]})
        if checkpoint is not None and batch + 1 < steps:  # the end of the epoch checkpoints anyway
            stopped = bool(stop and stop["signal"]) and world == 1
            every = cfg.train.checkpoint_every
            if stopped or (every and step % every == 0):
                checkpoint(step, batch + 1, {"loss_sum": total_loss.detach().cpu(), "correct": correct.cpu(),
                                             "seen": seen, "seconds": time.perf_counter() - start})
            if stopped:
                break
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    return {**({"stopped": True} if stopped else {}), "step": step, "train_loss": (total_loss / max(seen, 1)).item(),
            "train_acc": (correct / max(seen, 1)).item(), "train_seconds": seconds,
            "images_per_s": seen * world / max(seconds, 1e-9)}


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, *, mode: str | None = None, batch_size: int = 500,
             device: str = "cpu", channels_last: bool = True, k: int | None = None) -> dict:
    """Accuracy and loss of `model` on `split`. Two-glance: `mode` "hard" (default) or "soft"."""
    model.eval()
    correct, loss, preds = 0, 0.0, []
    for x, y in eval_batches(split.images, split.labels, batch_size=batch_size, channels_last=channels_last,
                             device=device):
        out = model(x) if model.kind == "one" else model(x, mode=mode, k=k)
        loss += F.cross_entropy(out, y, reduction="sum").item()
        pred = out.argmax(-1)
        correct += (pred == y).sum().item()
        preds.append(pred.cpu())
    n = max(len(split), 1)
    return {"accuracy": correct / n, "loss": loss / n, "predictions": torch.cat(preds) if preds else None}


def validate(model: nn.Module, test: Split, cfg: RunConfig, device: str) -> dict:
    kw = dict(batch_size=cfg.train.eval_batch_size, device=device, channels_last=cfg.train.channels_last)
    hard = evaluate(model, test, mode="hard", **kw)
    record = {"val_loss": hard["loss"], "val_acc_hard": hard["accuracy"]}
    if model.kind == "two":
        record["val_acc_soft"] = evaluate(model, test, mode="soft", **kw)["accuracy"]
    return record


# ---- the whole run -------------------------------------------------------------------------------------------
def load_data(cfg: RunConfig) -> tuple[Split, Split]:
    train = load_split(cfg.data.name, cfg.data.root, "train")
    test = load_split(cfg.data.name, cfg.data.root, "test")
    return limit(train, cfg.data.train_limit), limit(test, cfg.data.test_limit)


def epoch_split(cfg: RunConfig, train: Split, epoch: int) -> Split:
    """The training split of `epoch`: `train` itself, or with data.fresh_canvases, as many newly drawn canvases
    (the generator's seed is the epoch: epoch 0 is `train`, every later one is new and reproducible)."""
    if not cfg.data.fresh_canvases or epoch == 0:
        return train
    return load_split(cfg.data.name, cfg.data.root, "train", n=len(train), seed=epoch)


def limit(split: Split, n: int | None) -> Split:
    """A fixed random subset of n images (files are often sorted by class, so never just the first n)."""
    if not n or n >= len(split):
        return split
    keep = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:n].sort().values
    return split.subset(keep)


def check_fit(cfg: RunConfig, train: Split) -> None:
    """The data must fit the model: channels, size, classes. Otherwise one clear line."""
    _, c, h, w = train.images.shape
    m = cfg.model
    if (c, h, w) != (m.in_channels, m.image_size, m.image_size):
        raise UserError(f"the data has images of {c}x{h}x{w} but the model expects {m.in_channels}x{m.image_size}"
                        f"x{m.image_size}; set model.in_channels / model.image_size (and the patch grid) to fit")
    if len(train.classes) != m.num_classes:
        raise UserError(f"the data has {len(train.classes)} classes but the model has {m.num_classes}; "
                        f"--set model.num_classes={len(train.classes)}")


class _StopRequested(Exception):
    pass


def _check_finite(model: nn.Module, step: int) -> None:
    """UserError if any weight is NaN or infinite (checked before a checkpoint or metrics record is written)."""
    if not torch.stack([p.detach().isfinite().all() for p in model.parameters()]).all():
        raise UserError(f"the weights became NaN or infinite by step {step}; the last good checkpoint is kept. "
                        "Lower train.lr (or add warm-up) and start again, or --resume from that checkpoint")


def fit(cfg: RunConfig, out_dir: str | os.PathLike, *, resume: bool = False, progress: bool = True,
        data: tuple[Split, Split] | None = None) -> dict:
    """Train `cfg` into run folder `out_dir`; returns the last epoch's metrics record."""
    out_dir = Path(out_dir)
    device = resolve_device(cfg.train.device)
    rank, world, device = setup_distributed(device)
    if cfg.train.batch_size % world:
        raise UserError(f"train.batch_size={cfg.train.batch_size} must be divisible by the {world} processes")
    train, test = data or load_data(cfg)
    check_fit(cfg, train)
    if cfg.data.fresh_canvases:
        from .data.registry import is_generated_canvases

        if not is_generated_canvases(cfg.data.name):
            raise UserError(f"data.fresh_canvases needs a generated data set (mnist-translated-60, "
                            f"mnist-cluttered-60, mnist-cluttered-100), not {cfg.data.name!r}")
    if out_dir.exists() and (out_dir / runs.CHECKPOINT).exists() and not resume:
        raise UserError(f"{str(out_dir)!r} already holds a run; pass --resume to continue it, or another --out")
    if rank == 0:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create {str(out_dir)!r} ({e.strerror}); choose another --out") from None

    torch.manual_seed(cfg.train.seed)
    raw_model = build_model(cfg.model)
    raw_model.normalize.set_stats(*channel_stats(train.images))
    raw_model.to(device)
    if cfg.train.channels_last:
        raw_model.to(memory_format=torch.channels_last)
    decay = [p for p in raw_model.parameters() if p.dim() > 1]
    no_decay = [p for p in raw_model.parameters() if p.dim() <= 1]
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": cfg.train.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=cfg.train.lr, momentum=cfg.train.momentum, nesterov=cfg.train.momentum > 0)
    steps_per_epoch = len(train) // cfg.train.batch_size
    if steps_per_epoch == 0:
        raise UserError(f"only {len(train)} training images for a batch of {cfg.train.batch_size}; "
                        "lower train.batch_size")
    total, warmup = steps_per_epoch * cfg.train.epochs, int(cfg.train.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total, warmup, cfg.train.schedule))
    start_epoch, step, last, start_batch, partial = 0, 0, {}, 0, None
    if resume and (out_dir / runs.CHECKPOINT).exists():
        state = runs.load_checkpoint(out_dir)
        if state.get("config", {}).get("model") != runs.to_dict(cfg)["model"]:
            raise UserError(f"the checkpoint in {str(out_dir)!r} was trained with another model config; "
                            "resume with the same preset and --set values, or use another --out")
        raw_model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, step = state["epoch"] + 1, state["step"]
        start_batch, partial = state.get("batch_in_epoch", 0), state.get("partial")  # a mid-epoch checkpoint
        if "rng" in state:  # the global generator (gumbel noise) continues where it was
            torch.set_rng_state(state["rng"])
        if rank == 0:
            runs.remove_temp_files(out_dir)
            runs.truncate_metrics(out_dir, start_epoch, last_step=step if start_batch else None)
    elif rank == 0:
        (out_dir / runs.METRICS).unlink(missing_ok=True)
    if rank == 0:
        runs.save_config(out_dir, cfg)
        runs.save_classes(out_dir, train.classes)
    model = raw_model
    if world > 1:
        model = nn.parallel.DistributedDataParallel(raw_model, device_ids=[device] if "cuda" in device else None)
    writer = _tensorboard(out_dir) if cfg.train.tensorboard and rank == 0 else None

    def save(epoch_done: int, at_step: int, batch_in_epoch: int = 0, sums: dict | None = None) -> None:
        """Checkpoint after `epoch_done` whole epochs (0-based, -1 for none) and `batch_in_epoch` batches of
        the next; never weights that are no longer finite (the last good checkpoint stays)."""
        _check_finite(raw_model, at_step)
        runs.save_checkpoint(out_dir, {"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                                       "scheduler": scheduler.state_dict(), "epoch": epoch_done, "step": at_step,
                                       "batch_in_epoch": batch_in_epoch, "partial": sums,
                                       "rng": torch.get_rng_state(), "config": runs.to_dict(cfg),
                                       "preset": cfg.preset})

    stop = {"signal": None}
    handlers = _install_stop_handlers(stop)
    try:
        for epoch in range(start_epoch, cfg.train.epochs):
            first = epoch == start_epoch
            record = train_one_epoch(model, raw_model, optimizer, scheduler, epoch_split(cfg, train, epoch), cfg,
                                     epoch, step, rank, world,
                                     device, out_dir, progress, start_batch=start_batch if first else 0,
                                     partial=partial if first else None, stop=stop,
                                     checkpoint=(lambda s, b, sums, e=epoch: save(e - 1, s, b, sums))
                                     if rank == 0 else None)
            step = record["step"]
            if record.pop("stopped", False):
                raise _StopRequested
            if rank == 0:
                _check_finite(raw_model, step)
                record = {"kind": "epoch", "epoch": epoch + 1, "lr": scheduler.get_last_lr()[0], **record,
                          **validate(raw_model, test, cfg, device)}
                # the record first: a crash between the two leaves a record that --resume drops and redoes,
                # never a checkpoint whose epoch has no record
                runs.append_metrics(out_dir, record)
                save(epoch, step)
                if writer is not None:
                    for key, value in record.items():
                        if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                            writer.add_scalar(key, value, step)
                if progress:
                    soft = f" soft {record['val_acc_soft']:.4f}" if "val_acc_soft" in record else ""
                    print(f"epoch {epoch + 1}/{cfg.train.epochs}  loss {record['train_loss']:.4f}  "
                          f"val {record['val_acc_hard']:.4f}{soft}  {record['images_per_s']:.0f} img/s", flush=True)
            last = record
            if stop["signal"]:
                raise _StopRequested
        if world > 1:  # rank 0 validates and checkpoints alone: wait for it, so that no rank tears the
            import torch.distributed as dist  # process group down while its peer still uses it (gloo aborts)

            dist.barrier()
    except _StopRequested:
        if rank == 0:
            print(f"stopped by {stop['signal']} at step {step}; the checkpoint is saved, continue with --resume",
                  flush=True)
    finally:
        _restore_handlers(handlers)
        if writer is not None:
            writer.close()
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
    return last


def _install_stop_handlers(stop: dict):
    """SIGINT/SIGTERM: finish the current step, checkpoint, then stop (a second signal stops at once). Under
    DDP the processes stop together at the end of the epoch instead."""
    def handler(signum, frame):
        if stop["signal"]:
            raise KeyboardInterrupt
        stop["signal"] = signal.Signals(signum).name
    try:
        return {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        return {}


def _restore_handlers(handlers: dict) -> None:
    for s, h in handlers.items():
        signal.signal(s, h)


def _tensorboard(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("train.tensorboard=true needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter(str(out_dir / "tensorboard"))
