"""Training: one explicit loop (`loop.py`: fit) over epochs (`epoch.py`: train_one_epoch, train_step), what a run
reads (`inputs.py`), checkpoints and resume (`checkpoint.py`), DDP and signals (`distributed.py`, `stopping.py`),
validation (`evaluation.py`) and the objectives (`objectives.py`: one loss per model.choice, the learning-rate
schedule). See `loop.py` for how to run it."""
from ..data.split import limit
from .distributed import resolve_device, setup_distributed
from .epoch import train_one_epoch, train_step
from .evaluation import SOFT_MAX_PATCHES, evaluate, validate
from .inputs import check_fit, epoch_split, load_data
from .loop import fit
from .objectives import entropy, loss_fn, lr_factor, oracle_loss, uniform_loss

__all__ = ["SOFT_MAX_PATCHES", "check_fit", "entropy", "epoch_split", "evaluate", "fit", "limit", "load_data",
           "loss_fn", "lr_factor", "oracle_loss", "resolve_device", "setup_distributed", "train_one_epoch",
           "train_step", "uniform_loss", "validate"]
