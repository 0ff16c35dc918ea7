"""The training loop: one explicit loop for every model and image size, SGD or AdamW, a learning-rate
schedule, per-epoch validation on the held-out validation split, atomic checkpoints, exact `--resume`, lazy
data decoded in DataLoader workers, and DDP under torchrun.

    multiglance train --preset digits-two --out runs/digits-two
    multiglance train --preset paper-cifar10-two --set train.epochs=30 --out runs/c10-two --resume
    torchrun --standalone --nproc_per_node=2 -m multiglance train --preset digits-two --out runs/ddp

    multiglance train --preset large-two --data PHOTOS --set model.image_size=1024   # a folder of large photos

From Python: `fit(cfg, out_dir)` with a `RunConfig` (e.g. `get_preset("digits-two")`). On CPU with a fixed
seed a run that was stopped and resumed ends with exactly the weights of one that never stopped.
SIGINT/SIGTERM stop after the current step with a checkpoint (under DDP every process after the same step);
SIGKILL loses at most the steps since the last checkpoint (every epoch, or every N steps with
`--set train.checkpoint_every=N`). See docs/RELIABILITY.md.

Read top to bottom: `fit` (checks, the run folder) -> `_fit` (a `Trainer`, started or resumed) -> `_run_epochs`
(`epoch.train_one_epoch`, then rank 0's `_end_of_epoch`: validate, record, checkpoint). Beside it: `inputs.py`
(what a run reads), `epoch.py` (one epoch, one step), `checkpoint.py` (save, resume), `distributed.py` and
`stopping.py` (what the processes agree on).
"""
from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from .. import runs
from ..config import RunConfig, derive
from ..config import validate as validate_config
from ..data.batches import channel_stats
from ..errors import Stopped, UserError
from ..models import build_model
from . import checkpoint as ckpt
from .distributed import resolve_device, setup_distributed, teardown_distributed
from .epoch import Trainer, train_one_epoch
from .evaluation import validate
from .inputs import check_fit, check_fresh_canvases, epoch_split, load_data
from .objectives import lr_factor
from .stopping import StopSignal


def fit(cfg: RunConfig, out_dir: str | os.PathLike, *, resume: bool = False, progress: bool = True,
        data: tuple | None = None) -> dict:
    """Train `cfg` into run folder `out_dir`, validating every epoch on the validation split (held out from the
    training images; the test split is never read here). Returns the last epoch's metrics record."""
    out_dir = Path(out_dir)
    validate_config(cfg)
    rank, world, device = setup_distributed(resolve_device(cfg.train.device))
    if cfg.train.batch_size % world:
        raise UserError(f"train.batch_size={cfg.train.batch_size} must be divisible by the {world} processes")
    train, val = data or load_data(cfg)
    validate_config(derive(cfg, train.shape, train.classes))
    check_fit(cfg, train)
    check_fresh_canvases(cfg)
    if rank == 0 and warmup_epochs(cfg) != cfg.train.warmup_epochs:
        warnings.warn(f"train.warmup_epochs={cfg.train.warmup_epochs:g} is not shorter than train.epochs="
                      f"{cfg.train.epochs}: the warm-up is shortened to {warmup_epochs(cfg):g} epochs")
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
    t = new_trainer(cfg, train, device=device, rank=rank, world=world, run_dir=out_dir, progress=progress)
    start = _start(t, train, resumed)
    if world > 1:
        t.model = nn.parallel.DistributedDataParallel(t.raw_model, device_ids=[device] if "cuda" in device else None)
    writer = _tensorboard(out_dir) if cfg.train.tensorboard and rank == 0 else None
    try:
        return _run_epochs(t, train, val, *start, writer=writer)
    finally:
        if writer is not None:
            writer.close()
        # DDP's reducer holds the process group: let it go first, so that the group ends in destroy_process_group,
        # never later in the reducer's destructor (which holds the GIL while gloo's threads may need it: a hang)
        t.model = t.raw_model
        teardown_distributed(world)


# ---- the model, its optimiser and schedule -------------------------------------------------------------------
def new_trainer(cfg: RunConfig, train, *, device: str = "cpu", rank: int = 0, world: int = 1,
                run_dir: Path | None = None, progress: bool = False) -> Trainer:
    """The model (seeded with train.seed, normalised with `train`'s channel statistics, on `device`), its
    optimiser and learning-rate schedule, as every run starts them (and `bench speed` times them)."""
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model)
    model.normalize.set_stats(*channel_stats(train))
    model.to(device)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    if hasattr(model, "generator"):  # exploration noise (choice=topk): seeded, saved with the checkpoint
        model.generator = torch.Generator().manual_seed(cfg.train.seed)
    steps_per_epoch = len(train) // cfg.train.batch_size
    if steps_per_epoch == 0:
        raise UserError(f"only {len(train)} training images for a batch of {cfg.train.batch_size}; "
                        "lower train.batch_size")
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch)
    return Trainer(model, model, optimizer, scheduler, cfg, rank, world, device, run_dir, progress,
                   last_save=time.monotonic())


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


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: RunConfig, steps_per_epoch: int):
    """The learning rate per step (`objectives.lr_factor`): a linear warm-up, then train.schedule."""
    total, warmup = steps_per_epoch * cfg.train.epochs, int(warmup_epochs(cfg) * steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup, cfg.train.schedule))


def warmup_epochs(cfg: RunConfig) -> float:
    """train.warmup_epochs, or half the run where the warm-up would last the whole of it (a preset tried for
    fewer epochs than it warms up, `--epochs 1`; `fit` says so once)."""
    warmup, epochs = cfg.train.warmup_epochs, cfg.train.epochs
    return warmup if warmup < epochs else epochs / 2


# ---- start or resume, then the epochs ------------------------------------------------------------------------
def _start(t: Trainer, train, resumed: dict | None) -> tuple[int, int, int, dict | None]:
    """Start afresh (train.init_from's weights, if any) or continue from the checkpoint `resumed` holds. Returns
    (first epoch, step, batches of that epoch done, their running sums). Rank 0 writes the run folder's
    records: config.yaml and the classes once, when the run starts (what made the weights); a resume's line."""
    cfg, out_dir = t.cfg, t.run_dir
    if resumed is None:
        if cfg.train.init_from:
            ckpt.init_weights(t.raw_model, cfg.train.init_from)
        if t.rank == 0:
            ckpt.record_initial_weights(t)
            (out_dir / runs.METRICS).unlink(missing_ok=True)
            runs.save_config(out_dir, cfg)
            runs.save_classes(out_dir, train.classes)
        return 0, 0, 0, None
    start = epoch, step, batch, _ = ckpt.resume(t, resumed["state"])
    if t.rank == 0:
        runs.remove_temp_files(out_dir)
        runs.truncate_metrics(out_dir, epoch, last_step=step if batch else None)
        print(runs.describe_resume(resumed["state"], out_dir), flush=True)
        runs.append_metrics(out_dir, {"kind": "resume", "epoch": epoch, "step": step, "batch_in_epoch": batch,
                                      "changed": resumed["values"]})
    return start


def _run_epochs(t: Trainer, train, val, start_epoch: int, step: int, start_batch: int, partial: dict | None, *,
                writer=None) -> dict:
    """The epochs from `start_epoch` on (of which `start_batch` batches are done). A signal stops every process
    after the same step, with a checkpoint. Returns the last epoch's record."""
    last = {}
    with StopSignal() as stop:
        for epoch in range(start_epoch, t.cfg.train.epochs):
            first = epoch == start_epoch
            record = train_one_epoch(t, epoch_split(t.cfg, train, epoch), epoch, step,
                                     start_batch=start_batch if first else 0, partial=partial if first else None,
                                     checkpoint=lambda s, b, sums, e=epoch: ckpt.save(t, e - 1, s, b, sums),
                                     stop=stop)
            step = record["step"]
            if record.pop("stopped", False):
                raise stop.stopped(step)
            last = _end_of_epoch(t, val, epoch, record, writer) if t.rank == 0 else record
            # rank 0 validated and checkpointed alone: the others wait here for it (so that none tears the process
            # group down while it still uses it), and a signal any process received during it stops them all
            if stop.agree(t.world, t.device)[0]:
                raise stop.stopped(step)
    return last


def _end_of_epoch(t: Trainer, val, epoch: int, record: dict, writer) -> dict:
    """Rank 0, after an epoch: validate, append the epoch's record, checkpoint, log; returns the record."""
    step = record["step"]
    ckpt.check_finite(t.raw_model, step)
    record = {"kind": "epoch", "epoch": epoch + 1, "lr": t.scheduler.get_last_lr()[0], **record,
              **validate(t.raw_model, val, t.cfg, t.device)}
    # the record first: a crash between the two leaves a record that --resume drops and redoes, never a
    # checkpoint whose epoch has no record
    runs.append_metrics(t.run_dir, record)
    ckpt.save(t, epoch, step)
    if writer is not None:
        for key, value in record.items():
            if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                writer.add_scalar(key, value, step)
    if t.progress:
        soft = f" soft {record['val_acc_soft']:.4f}" if "val_acc_soft" in record else ""
        print(f"epoch {epoch + 1}/{t.cfg.train.epochs}  loss {record['train_loss']:.4f}  "
              f"val {record['val_acc_hard']:.4f}{soft}  {record['images_per_s']:.0f} img/s", flush=True)
    return record


def _tensorboard(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("train.tensorboard=true needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter(str(out_dir / "tensorboard"))
