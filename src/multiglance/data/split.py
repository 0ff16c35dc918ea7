"""The validation split: a fixed, seeded, stratified share of a data set's training images, never trained on.

    train_idx, val_idx = holdout(labels, fraction=0.1)     # (N_train,), (N_val,) sorted int64 indices

Every class gives round(fraction * n_c) of its images to validation (at least one when it has two or more),
chosen by a generator seeded with `seed` alone: the same data always gives the same split, whatever the run.
Real data sets (CIFAR-10, Tiny ImageNet, MNIST, class folders) get their "val" split this way from "train";
generated data sets draw validation canvases from held-out *source* images instead (`source_indices`), so no
object of a validation canvas is ever seen in training.
"""
from __future__ import annotations

import numpy as np
import torch

VAL_FRACTION = 0.1  # the default share of training images held out for validation
VAL_SEED = 0  # one split per data set, shared by every run


def holdout(labels: torch.Tensor | np.ndarray, fraction: float = VAL_FRACTION,
            seed: int = VAL_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified split of indices 0..N-1 by `labels` (N,): (train indices, validation indices), each sorted."""
    labels = torch.as_tensor(np.asarray(labels)).long()
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(labels.shape[0], generator=g)  # (N,) one shuffle, then per class in that order
    shuffled = labels[order]
    val = []
    for c in torch.unique(labels).tolist():
        members = order[shuffled == c]  # (n_c,) this class's images, shuffled
        n_val = int(round(fraction * members.shape[0]))
        n_val = max(n_val, 1) if members.shape[0] >= 2 else 0
        val.append(members[:n_val])
    val_idx = torch.cat(val).sort().values if val else torch.zeros(0, dtype=torch.long)
    keep = torch.ones(labels.shape[0], dtype=torch.bool)
    keep[val_idx] = False
    return keep.nonzero()[:, 0], val_idx


def source_indices(labels: torch.Tensor | np.ndarray, split: str, fraction: float = VAL_FRACTION) -> np.ndarray:
    """For generated data sets: the indices of the source images (of the source's own training split) that
    canvases of `split` may use: "train" the held-in share, "val" the held-out share (`holdout` of the labels)."""
    train_idx, val_idx = holdout(labels, fraction)
    return (train_idx if split == "train" else val_idx).numpy()


def limit(split, n: int | None):
    """A fixed random subset of n images (files are often sorted by class, so never just the first n)."""
    if not n or n >= len(split):
        return split
    keep = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:n].sort().values
    return split.subset(keep)
