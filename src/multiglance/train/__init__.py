"""Training: one explicit loop (`loop.py`: fit, train_one_epoch, evaluate, DDP, resume) and the objectives
(`objectives.py`: one loss per model.choice, the learning-rate schedule). See `loop.py` for how to run it."""
from ..data.split import limit
from .loop import (SOFT_MAX_PATCHES, check_fit, epoch_split, evaluate, fit, load_data, resolve_device,
                   setup_distributed, train_one_epoch, validate)
from .objectives import entropy, loss_fn, lr_factor, oracle_loss, uniform_loss

__all__ = ["SOFT_MAX_PATCHES", "check_fit", "entropy", "epoch_split", "evaluate", "fit", "limit", "load_data",
           "loss_fn", "lr_factor", "oracle_loss", "resolve_device", "setup_distributed", "train_one_epoch",
           "uniform_loss", "validate"]
