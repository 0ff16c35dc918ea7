"""data/batches.py: channel statistics from a seeded random sample, augmentation draws that survive dropped files."""
from __future__ import annotations

import torch

from multiglance.data import Split
from multiglance.data.batches import augment, channel_stats


def test_channel_stats_equal_a_plain_computation_and_sample_every_class():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (300, 3, 8, 8), dtype=torch.uint8, generator=g)
    images[150:] //= 4  # sorted by class: the second half is darker
    split = Split(images, torch.arange(300) // 150, ["bright", "dark"])
    mean, std = channel_stats(split)  # everything (300 < max_images)
    x = images.double() / 255
    assert torch.allclose(mean.double(), x.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(std.double(), x.std(dim=(0, 2, 3)), atol=1e-5)
    sample_mean, _ = channel_stats(split, max_images=100)  # a seeded random sample, not the first 100 (all bright)
    first_mean = images[:100].double().div(255).mean(dim=(0, 2, 3))
    whole = x.mean(dim=(0, 2, 3))
    assert (sample_mean.double() - whole).abs().max() < 0.05 < (first_mean - whole).abs().max()
    assert torch.equal(channel_stats(split, max_images=100)[0], sample_mean)  # the same sample every time
    assert torch.allclose(channel_stats(split, max_pixels=64 * 64 * 3)[0], channel_stats(split, max_images=64)[0])


def test_augment_draws_do_not_depend_on_dropped_images():
    x = torch.randint(0, 256, (4, 1, 6, 6), dtype=torch.uint8)
    keep = torch.tensor([True, False, True, True])
    full = augment(x, torch.ones(4, dtype=torch.bool), 2, True, torch.Generator().manual_seed(3))
    part = augment(x[keep], keep, 2, True, torch.Generator().manual_seed(3))
    assert torch.equal(part, full[keep])  # each image gets the crop and flip it would have had
