"""Several processes under torchrun, as nanoGPT does it, and the few things they must agree on.

    torchrun --standalone --nproc_per_node=2 -m multiglance train --preset digits-two --out runs/ddp

Each process (rank) trains on its share of every batch (data/batches.py `train_batches(rank=, world=)`) and
DDP averages the gradients. Beyond the gradients the processes agree, each time with one small all-reduce, on
what a single process would decide alone: whether to stop or checkpoint after a step (a signal reaches each
process at its own moment; `stopping.py`), whether to stop after an epoch (rank 0 validates alone, so a signal
during its validation must stop the others too), and the epoch's training loss and accuracy (summed over
every share, not rank 0's alone). In one process nothing here communicates.
"""
from __future__ import annotations

import os

import torch

from ..errors import UserError


def resolve_device(name: str) -> str:
    """train.device as a torch device: "auto" is CUDA when present; "cuda" without a CUDA device is refused."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("train.device=cuda but no CUDA device is available; use train.device=cpu")
    return name


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


def teardown_distributed(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()


def over_ranks(values: list[float], world: int, device: str, op: str = "sum") -> list[float]:
    """Each value summed ("sum") or maximised ("max") over the processes: one all-reduce, the same answer in
    every process; the values themselves in one process."""
    if world == 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return t.tolist()
