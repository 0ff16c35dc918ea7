"""The training loop: one explicit loop for every model and image size, SGD or AdamW, a learning-rate
schedule, per-epoch validation on the held-out validation split, atomic checkpoints, exact `--resume`, lazy
data decoded in DataLoader workers, and DDP under torchrun.

    multiglance train --preset digits-two --out runs/digits-two
    multiglance train --preset paper-cifar10-two --set train.epochs=30 --out runs/c10-two --resume
    torchrun --standalone --nproc_per_node=2 -m multiglance train --preset digits-two --out runs/ddp

    multiglance train --preset large-two --data PHOTOS --set model.image_size=1024   # a folder of large photos

From Python: `fit(cfg, out_dir)` with a `RunConfig` (e.g. `get_preset("digits-two")`). On CPU with a fixed
seed a run that was stopped and resumed ends with exactly the weights of one that never stopped.
SIGINT/SIGTERM stop after the current step with a checkpoint; SIGKILL loses at most the steps since the last
checkpoint (every epoch, or every N steps with `--set train.checkpoint_every=N`). See docs/RELIABILITY.md.
"""
from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import runs
from ..config import RunConfig, derive, tiled_size
from ..config import validate as validate_config
from ..data import load_split
from ..data.batches import channel_stats, train_batches
from ..data.images import set_max_pixels
from ..data.split import limit
from ..errors import Stopped, UserError
from ..files import atomic_write
from ..models import as_output, build_model
from .evaluation import SOFT_MAX_PATCHES, evaluate, takes_uint8, validate  # noqa: F401  (re-exported)
from .objectives import loss_fn, lr_factor


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


# ---- one epoch -----------------------------------------------------------------------------------------------
@dataclass
class Trainer:
    """What one epoch needs: the model (DDP-wrapped or not), its raw module, the optimiser and schedule, the
    config, and where this process stands (rank of world, device, run folder)."""
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
    last_save: float = 0.0  # time.monotonic() of the last checkpoint (train.checkpoint_minutes)


def train_one_epoch(t: Trainer, train, epoch: int, step: int, *, start_batch: int = 0, partial: dict | None = None,
                    checkpoint=None, stop: dict | None = None) -> dict:
    """One pass over the training split. `start_batch` skips the batches a mid-epoch checkpoint already holds
    (`partial`: its running sums); `checkpoint(step, batch, sums)` is called every `train.checkpoint_every`
    steps, and after the step during which `stop["signal"]` was set (one process only), which ends the epoch
    early with "stopped": True in the returned record."""
    cfg, model = t.cfg, t.model
    model.train()
    steps = len(train) // cfg.train.batch_size
    if cfg.model.choice == "gumbel" and cfg.train.tau_final is not None:  # anneal tau geometrically
        frac = epoch / max(1, cfg.train.epochs - 1)
        t.raw_model.tau = cfg.model.tau * (cfg.train.tau_final / cfg.model.tau) ** frac
    batches = train_batches(train, batch_size=cfg.train.batch_size, seed=cfg.train.seed, epoch=epoch,
                            crop_padding=cfg.data.crop_padding, flip=cfg.data.flip, rank=t.rank, world=t.world,
                            channels_last=cfg.train.channels_last, device=t.device, start_batch=start_batch,
                            workers=cfg.train.workers, as_float=not takes_uint8(t.raw_model))
    bar = None
    if t.progress and t.rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=steps, initial=start_batch, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", unit="step",
                   leave=False, disable=None)  # disable=None: no bar when stdout is not a terminal (clean logs)
    partial = partial or {}
    total_loss = partial.get("loss_sum", torch.zeros(())).to(t.device)
    correct = partial.get("correct", torch.zeros(())).to(t.device)
    seen, start = partial.get("seen", 0), time.perf_counter() - partial.get("seconds", 0.0)
    data_seconds = partial.get("data_seconds", 0.0)
    stopped = False
    batches = iter(batches)
    batch = start_batch
    while True:
        wait = time.perf_counter()
        try:
            x, y = next(batches)
        except StopIteration:
            break
        data_seconds += time.perf_counter() - wait
        out = as_output(model(x))
        loss = loss_fn(t.raw_model, out, y, cfg)
        if not torch.isfinite(loss):
            raise UserError(f"the loss became {loss.item()} at epoch {epoch + 1}, step {step}; the last good "
                            "checkpoint is kept. Lower train.lr (or add warm-up) and --resume")
        t.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(t.raw_model.parameters(), cfg.train.grad_clip)
        t.optimizer.step()
        t.scheduler.step()
        step += 1
        total_loss += loss.detach() * y.shape[0]
        correct += (out.answer.detach().argmax(-1) == y).sum()
        seen += y.shape[0]
        if bar is not None:
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{t.scheduler.get_last_lr()[0]:.3g}")
        if t.rank == 0 and t.run_dir is not None and step % cfg.train.log_every == 0:
            runs.append_metrics(t.run_dir, {"kind": "train", "epoch": epoch + 1, "step": step,
                                            "loss": loss.item(), "lr": t.scheduler.get_last_lr()[0]})
        batch += 1
        if checkpoint is not None and batch < steps:  # the end of the epoch checkpoints anyway
            stopped = bool(stop and stop["signal"]) and t.world == 1
            every, minutes = cfg.train.checkpoint_every, cfg.train.checkpoint_minutes
            due = bool(minutes) and time.monotonic() - t.last_save >= 60 * minutes
            if stopped or due or (every and step % every == 0):
                checkpoint(step, batch, {"loss_sum": total_loss.detach().cpu(), "correct": correct.cpu(),
                                         "seen": seen, "seconds": time.perf_counter() - start,
                                         "data_seconds": data_seconds})
            if stopped:
                break
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    return {**({"stopped": True} if stopped else {}), "step": step, "train_loss": (total_loss / max(seen, 1)).item(),
            "train_acc": (correct / max(seen, 1)).item(), "train_seconds": seconds, "data_seconds": data_seconds,
            "images_per_s": seen * t.world / max(seconds, 1e-9), "skipped_images": getattr(train, "skipped", 0)}


# ---- the whole run -------------------------------------------------------------------------------------------
def source_options(cfg: RunConfig) -> tuple[str, dict]:
    """The data set name and loader options a config reads. A class-folder tree is read at the model's size (left
    to the data: `size_from_folder`), every file brought to it by the resize rule of data/stream.py; it is
    streamed (decoded per batch) when `data.stream` says so, or, left unset, when it would not fit comfortably
    in memory."""
    name = cfg.data.name
    if name in ("folder", "folder-stream") and cfg.data.root is not None:
        size_from_folder(cfg)
        m = cfg.model
        options = {"size": m.image_size, "width": m.image_width, "channels": m.in_channels}
        stream = cfg.data.stream
        if name == "folder" and stream is None:
            from ..data.stream import should_stream

            stream = should_stream(cfg.data.root, m.image_size, width=m.image_width)
        return ("folder-stream" if name == "folder-stream" or stream else "folder"), options
    return name, {}


def size_from_folder(cfg: RunConfig) -> None:
    """model.image_size (and image_width) left unset: the median size of the folder's training photographs,
    rounded to the nearest size the patch grid tiles (`config.tiled_size`)."""
    m = cfg.model
    if m.image_size is not None:
        return
    from ..data.stream import median_size

    h, w = tiled_size(cfg, *median_size(cfg.data.root))
    m.image_size, m.image_width = h, (w if w != h else None)


def load_data(cfg: RunConfig, splits: tuple[str, ...] = ("train", "val")) -> tuple:
    """The splits a run reads, limits applied: (train, val) by default; "test" only when asked for."""
    set_max_pixels(cfg.data.max_pixels)  # the decompression-bomb guard, for this process and its workers
    name, options = source_options(cfg)
    out = []
    for split in splits:
        s = load_split(name, cfg.data.root, split, val_fraction=cfg.data.val_fraction, **options)
        n = {"train": cfg.data.train_limit, "val": cfg.data.val_limit, "test": cfg.data.test_limit}[split]
        out.append(limit(s, n))
    return tuple(out)


def epoch_split(cfg: RunConfig, train, epoch: int):
    """The training split of `epoch`: `train` itself, or with data.fresh_canvases, as many newly drawn canvases
    (the generator's seed is the epoch: epoch 0 is `train`, every later one is new and reproducible)."""
    if not cfg.data.fresh_canvases or epoch == 0:
        return train
    return load_split(cfg.data.name, cfg.data.root, "train", n=len(train), seed=epoch)


def check_fit(cfg: RunConfig, train) -> None:
    """The data must fit the model: channels, size, classes. Otherwise one clear line."""
    c, h, w = train.shape
    m = cfg.model
    width = getattr(m, "image_width", None) or m.image_size
    if (c, h, w) != (m.in_channels, m.image_size, width):
        raise UserError(f"the data has images of {c}x{h}x{w} but the model expects {m.in_channels}x{m.image_size}"
                        f"x{width}; set model.in_channels / model.image_size (and the patch grid) to fit, or "
                        "leave model.in_channels unset to read it from the data")
    if len(train.classes) != m.num_classes:
        raise UserError(f"the data has {len(train.classes)} classes but the model has {m.num_classes}; "
                        f"--set model.num_classes={len(train.classes)}, or leave it unset to read it from the data")


class _StopRequested(Exception):
    pass


def _check_finite(model: nn.Module, step: int) -> None:
    """UserError if any weight is NaN or infinite (checked before a checkpoint or metrics record is written)."""
    if not torch.stack([p.detach().isfinite().all() for p in model.parameters()]).all():
        raise UserError(f"the weights became NaN or infinite by step {step}; the last good checkpoint is kept. "
                        "Lower train.lr (or add warm-up) and start again, or --resume from that checkpoint")


def make_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW; weight decay on weight matrices and kernels only, never on biases or norms."""
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": cfg.train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.train.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.train.lr)
    if cfg.train.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.train.lr, momentum=cfg.train.momentum, nesterov=cfg.train.momentum > 0)
    raise UserError(f"unknown train.optimizer {cfg.train.optimizer!r}; use sgd or adamw")


def fit(cfg: RunConfig, out_dir: str | os.PathLike, *, resume: bool = False, progress: bool = True,
        data: tuple | None = None) -> dict:
    """Train `cfg` into run folder `out_dir`, validating every epoch on the validation split (held out from the
    training images; the test split is never read here). Returns the last epoch's metrics record."""
    out_dir = Path(out_dir)
    validate_config(cfg)
    device = resolve_device(cfg.train.device)
    rank, world, device = setup_distributed(device)
    if cfg.train.batch_size % world:
        raise UserError(f"train.batch_size={cfg.train.batch_size} must be divisible by the {world} processes")
    train, val = data or load_data(cfg)
    validate_config(derive(cfg, train.shape, train.classes))
    check_fit(cfg, train)
    if cfg.data.fresh_canvases:
        from ..data.registry import is_generated_canvases

        if not is_generated_canvases(cfg.data.name):
            raise UserError(f"data.fresh_canvases needs a generated data set (mnist-translated-60, "
                            f"mnist-cluttered-60, mnist-cluttered-100), not {cfg.data.name!r}")
    resumed = runs.check_resume(out_dir, cfg) if resume else None  # refuses a folder without a run, a changed config
    if resumed is None and (out_dir / runs.CHECKPOINT).exists():
        raise UserError(f"{str(out_dir)!r} already holds a run; pass --resume to continue it, or another --out")
    new_folder = not out_dir.exists()
    if rank == 0:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create {str(out_dir)!r} ({e.strerror}); choose another --out") from None
    try:
        return _fit(cfg, out_dir, train, val, resumed, progress, rank, world, device)
    except Stopped:
        raise
    except (UserError, MemoryError, RuntimeError):
        if rank == 0 and resumed is None and not (out_dir / runs.CHECKPOINT).exists():  # nothing half-written:
            for name in (runs.CONFIG, runs.CLASSES, runs.METRICS):  # a new run that never checkpointed leaves
                (out_dir / name).unlink(missing_ok=True)  # no files behind
            runs.remove_temp_files(out_dir)
            if new_folder and out_dir.is_dir() and not any(out_dir.iterdir()):
                out_dir.rmdir()
        raise


def _fit(cfg: RunConfig, out_dir: Path, train, val, resumed: dict | None, progress: bool, rank: int, world: int,
         device: str) -> dict:
    torch.manual_seed(cfg.train.seed)
    raw_model = build_model(cfg.model)
    raw_model.normalize.set_stats(*channel_stats(train))
    raw_model.to(device)
    if cfg.train.channels_last:
        raw_model.to(memory_format=torch.channels_last)
    if hasattr(raw_model, "generator"):  # exploration noise (choice=topk): seeded, saved with the checkpoint
        raw_model.generator = torch.Generator().manual_seed(cfg.train.seed)
    if cfg.train.init_from and resumed is None:
        init_weights(raw_model, cfg.train.init_from)
    if rank == 0 and resumed is None and getattr(raw_model, "weights_sha256", None):  # local weights files
        record = {"glance1_weights": cfg.model.glance1_weights, "glance2_weights": cfg.model.glance2_weights}
        record = {k: {"file": Path(v).name, "sha256": raw_model.weights_sha256[k.split("_")[0]
                                                                             if cfg.model.kind == "two" else "backbone"]}
                  for k, v in record.items() if v}
        text = json.dumps(record, indent=1) + "\n"
        atomic_write(out_dir / "initial_weights.json", lambda f: f.write(text.encode()))
    optimizer = make_optimizer(raw_model, cfg)
    steps_per_epoch = len(train) // cfg.train.batch_size
    if steps_per_epoch == 0:
        raise UserError(f"only {len(train)} training images for a batch of {cfg.train.batch_size}; "
                        "lower train.batch_size")
    total, warmup = steps_per_epoch * cfg.train.epochs, int(cfg.train.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total, warmup, cfg.train.schedule))
    start_epoch, step, last, start_batch, partial = 0, 0, {}, 0, None
    if resumed is not None:
        state = resumed["state"]
        try:
            raw_model.load_state_dict(state["model"])
        except RuntimeError:
            raise UserError(f"the checkpoint in {str(out_dir)!r} was trained with another model config; "
                            "resume with the same preset and --set values, or use another --out") from None
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, step = state["epoch"] + 1, state["step"]
        start_batch, partial = state.get("batch_in_epoch", 0), state.get("partial")  # a mid-epoch checkpoint
        if "rng" in state:  # the global generator (gumbel noise) continues where it was
            torch.set_rng_state(state["rng"])
        if "model_rng" in state and getattr(raw_model, "generator", None) is not None:
            raw_model.generator.set_state(state["model_rng"])
        if rank == 0:
            runs.remove_temp_files(out_dir)
            runs.truncate_metrics(out_dir, start_epoch, last_step=step if start_batch else None)
            print(runs.describe_resume(state, out_dir), flush=True)
            runs.append_metrics(out_dir, {"kind": "resume", "epoch": start_epoch, "step": step,
                                          "batch_in_epoch": start_batch, "changed": resumed["values"]})
    elif rank == 0:  # config.yaml is written once, when the run starts: the record of what made the weights
        (out_dir / runs.METRICS).unlink(missing_ok=True)
        runs.save_config(out_dir, cfg)
        runs.save_classes(out_dir, train.classes)
    model = raw_model
    if world > 1:
        model = nn.parallel.DistributedDataParallel(raw_model, device_ids=[device] if "cuda" in device else None)
    t = Trainer(model, raw_model, optimizer, scheduler, cfg, rank, world, device, out_dir, progress,
                last_save=time.monotonic())
    writer = _tensorboard(out_dir) if cfg.train.tensorboard and rank == 0 else None

    def save(epoch_done: int, at_step: int, batch_in_epoch: int = 0, sums: dict | None = None) -> None:
        """Checkpoint after `epoch_done` whole epochs (0-based, -1 for none) and `batch_in_epoch` batches of
        the next; never weights that are no longer finite (the last good checkpoint stays)."""
        _check_finite(raw_model, at_step)
        t.last_save = time.monotonic()
        runs.save_checkpoint(out_dir, {"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                                       "scheduler": scheduler.state_dict(), "epoch": epoch_done, "step": at_step,
                                       "batch_in_epoch": batch_in_epoch, "partial": sums,
                                       "rng": torch.get_rng_state(), "config": runs.to_dict(cfg),
                                       **({"model_rng": raw_model.generator.get_state()}
                                          if getattr(raw_model, "generator", None) is not None else {}),
                                       "preset": cfg.preset})

    stop = {"signal": None}
    handlers = _install_stop_handlers(stop)
    try:
        for epoch in range(start_epoch, cfg.train.epochs):
            first = epoch == start_epoch
            record = train_one_epoch(t, epoch_split(cfg, train, epoch), epoch, step,
                                     start_batch=start_batch if first else 0, partial=partial if first else None,
                                     stop=stop, checkpoint=(lambda s, b, sums, e=epoch: save(e - 1, s, b, sums))
                                     if rank == 0 else None)
            step = record["step"]
            if record.pop("stopped", False):
                raise _StopRequested
            if rank == 0:
                _check_finite(raw_model, step)
                record = {"kind": "epoch", "epoch": epoch + 1, "lr": scheduler.get_last_lr()[0], **record,
                          **validate(raw_model, val, cfg, device)}
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
        raise Stopped(f"stopped by {stop['signal']} at step {step}; the checkpoint is saved, continue with "
                      "--resume", 130 if stop["signal"] == "SIGINT" else 143) from None
    finally:
        _restore_handlers(handlers)
        if writer is not None:
            writer.close()
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
    return last


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
