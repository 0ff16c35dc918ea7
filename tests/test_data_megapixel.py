"""Tests for data/megapixel.py: the generator's rules, its determinism, the split separation, storage."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from multiglance.data.megapixel import (DIGIT, MegapixelSplit, load_megapixel_mnist_easy, make_megapixel,
                                        noise_patterns)
from multiglance.errors import DataError

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


def fake_mnist(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(1, 256, (n, DIGIT, DIGIT), dtype=np.uint8)  # no zero pixel: every write shows
    return images, np.arange(n) % 10


@pytest.fixture(scope="module")
def split() -> MegapixelSplit:
    images, labels = fake_mnist()
    return make_megapixel("train", images=images, labels=labels, n=40, size=200, n_noise=50, seed=3)


def reference_render(s: MegapixelSplit, i: int) -> np.ndarray:
    """A plain per-image loop: noise blocks in order, then digit blocks, each assigned."""
    canvas = np.zeros((s.size, s.size), np.uint8)
    for (r, c), p in zip(s.noise_positions[i].tolist(), s.noise_patterns[i].tolist()):
        canvas[r:r + DIGIT, c:c + DIGIT] = s.noise[p].numpy()
    for (r, c), d in zip(s.positions[i].tolist(), s.digits[i].numpy()):
        canvas[r:r + DIGIT, c:c + DIGIT] = d
    return canvas


def test_five_digits_three_of_the_label(split: MegapixelSplit) -> None:
    assert split.digits.shape == (40, 5, DIGIT, DIGIT)
    assert (split.digit_labels[:, :3] == split.labels[:, None]).all()
    assert (split.digit_labels[:, 3:] != split.labels[:, None]).all()
    images, labels = fake_mnist()
    assert torch.equal(split.digits, torch.from_numpy(images)[split.digit_index])
    assert torch.equal(split.digit_labels, torch.from_numpy(labels)[split.digit_index])


def test_digits_never_overlap_and_stay_inside(split: MegapixelSplit) -> None:
    pos = split.positions  # (N, 5, 2)
    assert pos.min() >= 0 and pos.max() <= split.size - DIGIT
    d = (pos[:, :, None] - pos[:, None, :]).abs()  # (N, 5, 5, 2)
    overlap = (d < DIGIT).all(-1) & ~torch.eye(5, dtype=torch.bool)
    assert not overlap.any()
    # all five digits are fully visible: digits are written last and never overlap
    canvas = split.render(torch.arange(len(split)))[:, 0]
    b = split.boxes()
    for i in range(3):
        for j in range(5):
            x0, y0, x1, y1 = b[i, j].tolist()
            assert torch.equal(canvas[i, y0:y1, x0:x1], split.digits[i, j])


def test_noise_count_and_placement(split: MegapixelSplit) -> None:
    assert split.noise.shape == (50, DIGIT, DIGIT) and split.noise_positions.shape == (40, 50, 2)
    assert split.noise_patterns.min() >= 0 and split.noise_patterns.max() < 50
    assert split.noise_positions.min() >= DIGIT and split.noise_positions.max() < split.size - DIGIT
    ink = split.noise > 0
    assert ink.any(-1).any(-1).all(), "every pattern draws something"
    assert split.noise[ink].min() >= int(0.8 * 255) - 1


def test_render_matches_a_plain_loop(split: MegapixelSplit) -> None:
    x = split.render(torch.tensor([5, 0, 17]))
    assert x.shape == (3, 1, 200, 200) and x.dtype == torch.uint8
    for row, i in enumerate([5, 0, 17]):
        assert np.array_equal(x[row, 0].numpy(), reference_render(split, i))
    assert torch.equal(split.render(slice(0, 2)), split.render(torch.tensor([0, 1])))


def test_easy_variant_has_no_noise() -> None:
    images, labels = fake_mnist()
    s = make_megapixel("test", images=images, labels=labels, n=10, size=150, n_noise=0)
    x = s.render(torch.arange(10))[:, 0]
    assert s.noise_positions.shape == (10, 0, 2)
    assert (x > 0).sum().item() == (s.digits > 0).sum().item()  # only the digits' pixels are inked


def test_deterministic_by_seed_and_split() -> None:
    images, labels = fake_mnist()
    a = make_megapixel("train", images=images, labels=labels, n=20, size=120, n_noise=5, seed=1)
    b = make_megapixel("train", images=images, labels=labels, n=20, size=120, n_noise=5, seed=1)
    c = make_megapixel("train", images=images, labels=labels, n=20, size=120, n_noise=5, seed=2)
    d = make_megapixel("test", images=images, labels=labels, n=20, size=120, n_noise=5, seed=1)
    assert torch.equal(a.render(torch.arange(20)), b.render(torch.arange(20)))
    assert not torch.equal(a.positions, c.positions)
    assert not torch.equal(a.positions, d.positions)


def test_noise_patterns_are_lines() -> None:
    p = noise_patterns(np.random.default_rng(0), 50)
    counts = (p > 0).reshape(50, -1).sum(1)
    assert p.shape == (50, 28, 28) and counts.min() >= 20 and counts.max() <= 2 * 56


def test_sparse_round_trip(split: MegapixelSplit, tmp_path: Path) -> None:
    split.save(tmp_path / "mm.pt")
    back = MegapixelSplit.load(tmp_path / "mm.pt")
    assert back.size == split.size and back.source == "train" and back.classes == split.classes
    assert torch.equal(back.render(torch.arange(len(back))), split.render(torch.arange(len(split))))
    assert split.nbytes() < len(split) * split.size ** 2  # smaller than dense (and far smaller at 1500)
    (tmp_path / "bad.pt").write_bytes(b"not a file")
    with pytest.raises(DataError):
        MegapixelSplit.load(tmp_path / "bad.pt")


@pytest.mark.skipif(not SHARED_MNIST.exists(), reason="needs ../shared/data/mnist")
def test_shared_train_and_test_digits_never_mixed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from multiglance.data.sources import load_mnist

    monkeypatch.setenv("MULTIGLANCE_CACHE", str(tmp_path))
    used = {}
    for split in ("train", "val", "test"):
        mm = load_megapixel_mnist_easy(SHARED_MNIST, split, n=50)
        assert mm.source == split and mm.size == 500
        mnist = load_mnist(SHARED_MNIST, "test" if split == "test" else "train")
        assert torch.equal(mm.digits, mnist.images[:, 0][mm.digit_index])
        used[split] = set(mm.digit_index.flatten().tolist())
    assert not used["train"] & used["val"]  # validation canvases use held-out training digits only
    assert len(list(tmp_path.glob("megapixel-500-test-*.pt"))) == 1  # the sparse cache was written
