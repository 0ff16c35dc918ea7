"""Batches for training and evaluation, from any split: whole-batch augmentation, never a loop per image.

Images stay uint8 in memory (or on disk, for lazy splits: `fetch` decodes them per batch in DataLoader worker
processes); a batch becomes float in [0, 1] only when it is drawn. The model normalises.
"""
from __future__ import annotations

import signal
import warnings

import torch
import torch.utils.data

from ..allocator import release_free_memory


def channel_stats(split, max_images: int = 10000, seed: int = 0,
                  max_pixels: int = 1 << 28) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std in [0, 1] units of a split (or of uint8 images (N, C, H, W)), from a seeded
    random sample of at most `max_images` images (and at most `max_pixels` pixel values): files are often
    sorted by class, so the first images would describe a few classes only. A split with fixed `stats`
    (megapixel MNIST) gives those."""
    if getattr(split, "stats", None) is not None:
        return split.stats
    n = len(split)
    c, h, w = split.shape if hasattr(split, "shape") and not isinstance(split, torch.Tensor) else split.shape[1:]
    n_sample = max(1, min(n, max_images, max_pixels // max(1, c * h * w)))
    index = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:n_sample].sort().values
    step = max(1, (16 << 20) // (c * h * w))  # images per chunk: about 16 M values (128 MB as float64)
    total = torch.zeros(c, dtype=torch.float64)
    square = torch.zeros(c, dtype=torch.float64)
    count = 0
    for start in range(0, n_sample, step):  # float64 sums chunk by chunk: the sample is never whole in memory
        i = index[start:start + step]
        x = split[i] if isinstance(split, torch.Tensor) else split.take(i)[0]  # (b, C, H, W) uint8
        chunk = x.double().div_(255)
        total += chunk.sum(dim=(0, 2, 3))
        square += chunk.square().sum(dim=(0, 2, 3))
        count += x.shape[0] * h * w
    mean = total / count
    var = (square - count * mean.square()) / max(count - 1, 1)
    return mean.float(), var.clamp_min(0).sqrt().float()


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Pad each image by `padding` (zeros) and cut a random crop of the original size: (B, C, H, W) -> same."""
    if padding <= 0:
        return x
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)  # (B, C, H+2p, W+2p)
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None]).to(x.device)  # (B, H)
    cols = (dx[:, None] + torch.arange(w)[None]).to(x.device)  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    # gather rows then columns with advanced indexing: (B, H, W, C) -> (B, C, H, W)
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the images left-right: (B, C, H, W) -> same."""
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    return torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)


def to_float(x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 in [0, 1], optionally channels_last."""
    x = x.float().div_(255)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def skip_draws(b: int, crop_padding: int, flip: bool, generator: torch.Generator) -> None:
    """Advance `generator` exactly as augmenting a batch of `b` images would (a resumed epoch's skipped batches)."""
    if crop_padding > 0:
        torch.randint(0, 2 * crop_padding + 1, (b,), generator=generator)
        torch.randint(0, 2 * crop_padding + 1, (b,), generator=generator)
    if flip:
        torch.rand(b, generator=generator)


def augment(x: torch.Tensor, keep: torch.Tensor, crop_padding: int, flip: bool,
            generator: torch.Generator) -> torch.Tensor:
    """Random crop and flip of the b' decoded images x (b', C, H, W) of a batch of b = len(keep): the random
    draws are those of the whole batch, so a file that failed to decode changes no other image's draw."""
    if not (crop_padding or flip):
        return x
    partial = not bool(keep.all())
    if partial:
        full = x.new_zeros((keep.shape[0], *x.shape[1:]))  # (b, C, H, W)
        full[keep.to(x.device)] = x
        x = full
    if crop_padding:
        x = random_crop(x, crop_padding, generator)
    if flip:
        x = random_flip(x, generator)
    return x[keep.to(x.device)] if partial else x


class _Batches(torch.utils.data.Dataset):
    """Batch i of a lazy split: `split.take(index_lists[i])`, decoded in a DataLoader worker. The worker's
    warnings (files that do not decode) travel back with the batch and are given in the main process."""

    def __init__(self, split, index_lists: list[torch.Tensor]):
        self.split, self.index_lists = split, index_lists

    def __len__(self) -> int:
        return len(self.index_lists)

    def __getitem__(self, i: int):
        index = self.index_lists[i]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            x, keep = self.split.take(index)
        return index, x, keep, [str(w.message) for w in caught]


def quiet_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: a worker ignores SIGINT and SIGTERM. Ctrl-C reaches the whole process group
    and `pkill` every process of the command; the main process alone stops cleanly (a checkpoint, one line) and
    shuts its workers down. Without it a worker killed by SIGTERM surfaced in the main process as a RuntimeError
    traceback ("DataLoader worker ... is killed by signal") and exit 1."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def fetch(split, index_lists: list[torch.Tensor], workers: int = 0):
    """Yield (index (b,), uint8 images (b', C, H, W), keep (b,) bool) for each index list, in order. In-memory
    splits are sliced in place; lazy ones (streamed files, rendered canvases) are decoded by `workers`
    DataLoader processes, a few batches ahead. A file that does not decode is named in one warning (once per
    file) and counted in `split.skipped`."""
    if isinstance(getattr(split, "images", None), torch.Tensor) or workers <= 0 or len(index_lists) <= 1:
        yield from ((i, *split.take(i)) for i in index_lists)  # take() warns and counts itself
        return
    release_free_memory()  # the workers fork from this process: they should not inherit its freed heap
    loader = torch.utils.data.DataLoader(_Batches(split, index_lists), batch_size=None, shuffle=False,
                                         num_workers=min(workers, len(index_lists)), prefetch_factor=2,
                                         worker_init_fn=quiet_worker)
    for index, x, keep, messages in loader:
        if messages and hasattr(split, "note_skipped"):
            failed = []
            for i in index[~keep].tolist():
                head = f"skipping {split.where(i)}: "
                failed.append((i, next((m[len(head):] for m in messages if m.startswith(head)), "it does not decode")))
            split.note_skipped(failed)  # warns once per file, here, and counts
        yield index, x, keep


def train_batches(split, *, batch_size: int, seed: int, epoch: int, crop_padding: int = 0, flip: bool = False,
                  rank: int = 0, world: int = 1, channels_last: bool = False, device: str | torch.device = "cpu",
                  start_batch: int = 0, workers: int = 0, as_float: bool = True):
    """Yield (images, labels) for one epoch: shuffled by (seed, epoch), split by rank, augmented; images are
    float in [0, 1] (or uint8 with `as_float=False`: the two-glance model converts only what it reads).

    The same (seed, epoch) gives the same batches, which is what makes `--resume` exact. `start_batch` skips
    the first batches (a resume from a mid-epoch checkpoint): their random draws are still made, so the
    batches that follow are exactly those of an uninterrupted epoch. A file that does not decode is left out
    of its batch (with a warning), never a crash.
    """
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    order = torch.randperm(len(split), generator=g)
    per_rank = batch_size // world
    n = (len(split) // batch_size) * batch_size  # drop the last partial batch: every rank equal
    index_lists = [order[start + rank * per_rank: start + (rank + 1) * per_rank] for start in range(0, n, batch_size)]
    for _ in range(start_batch):  # trained on before the checkpoint: advance the generator as that batch did
        skip_draws(per_rank, crop_padding, flip, g)
    for index, x, keep in fetch(split, index_lists[start_batch:], workers):
        x = augment(x.to(device, non_blocking=True), keep, crop_padding, flip, g)  # (b', C, H, W) uint8
        y = split.labels[index[keep]].to(device, non_blocking=True)
        if x.shape[0] == 0:
            continue
        yield (to_float(x, channels_last) if as_float else x), y


def eval_batches(split, *, batch_size: int, channels_last: bool = False, device: str | torch.device = "cpu",
                 workers: int = 0, as_float: bool = True):
    """Yield (images, labels) of a split in order (undecodable files left out, with a warning)."""
    index_lists = [torch.arange(s, min(s + batch_size, len(split))) for s in range(0, len(split), batch_size)]
    for index, x, keep in fetch(split, index_lists, workers):
        if x.shape[0] == 0:
            continue
        x = x.to(device, non_blocking=True)
        yield (to_float(x, channels_last) if as_float else x), split.labels[index[keep]].to(device, non_blocking=True)
