"""Whole-batch augmentation and batching: tensor ops over the batch, never a Python loop per image.

Images stay uint8 in memory; a batch becomes float in [0, 1] only when it is drawn. The model normalises.
"""
from __future__ import annotations

import torch


def channel_stats(images: torch.Tensor, max_images: int = 10000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std in [0, 1] units of uint8 images (N, C, H, W), from at most `max_images`."""
    x = images[:max_images].float().div_(255)  # (n, C, H, W)
    return x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))


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


def train_batches(images: torch.Tensor, labels: torch.Tensor, *, batch_size: int, seed: int, epoch: int,
                  crop_padding: int = 0, flip: bool = False, rank: int = 0, world: int = 1,
                  channels_last: bool = False, device: str | torch.device = "cpu", start_batch: int = 0):
    """Yield (float images, labels) for one epoch: shuffled by (seed, epoch), split by rank, augmented.

    The same (seed, epoch) gives the same batches, which is what makes `--resume` exact. `start_batch` skips
    the first batches (a resume from a mid-epoch checkpoint): their augmentation is still drawn, so the
    batches that follow are exactly those of an uninterrupted epoch.
    """
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    order = torch.randperm(images.shape[0], generator=g)
    per_rank = batch_size // world
    n = (images.shape[0] // batch_size) * batch_size  # drop the last partial batch: every rank equal
    for i, start in enumerate(range(0, n, batch_size)):
        index = order[start + rank * per_rank: start + (rank + 1) * per_rank]
        if i < start_batch:  # trained on before the checkpoint: advance the generator as that batch did
            x = images[index]  # (b, C, H, W) uint8, on the CPU: only the random draws matter
            if crop_padding:
                random_crop(x, crop_padding, g)
            if flip:
                random_flip(x, g)
            continue
        x = images[index].to(device, non_blocking=True)  # (b, C, H, W) uint8
        if crop_padding:
            x = random_crop(x, crop_padding, g)
        if flip:
            x = random_flip(x, g)
        yield to_float(x, channels_last), labels[index].to(device, non_blocking=True)


def eval_batches(images: torch.Tensor, labels: torch.Tensor, *, batch_size: int, channels_last: bool = False,
                 device: str | torch.device = "cpu"):
    for start in range(0, images.shape[0], batch_size):
        x = images[start:start + batch_size].to(device, non_blocking=True)
        yield to_float(x, channels_last), labels[start:start + batch_size].to(device, non_blocking=True)
