"""Translated / cluttered MNIST canvases: the generator on small fake digits, and the real loaders on MNIST."""
from pathlib import Path

import numpy as np
import pytest
import torch

from multiglance.data import load_split
from multiglance.data.canvases import make_canvases

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
needs_mnist = pytest.mark.skipif(not MNIST.exists(), reason=f"MNIST files not found at {MNIST}")


def fake_digits(value: int, m: int = 7, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """m solid square 'digits' of one pixel value, so every pixel on a canvas says where it came from."""
    return np.full((m, size, size), value, np.uint8), np.arange(m) % 10


def test_digit_inside_and_box_matches():
    digits, labels = fake_digits(200)
    s = make_canvases(digits, labels, n=300, canvas=60, clutter=0, seed=1)
    assert s.images.shape == (300, 1, 60, 60) and s.images.dtype == torch.uint8
    x0, y0, x1, y1 = s.boxes.T
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= 60).all() and (y1 <= 60).all()
    assert ((x1 - x0) == 28).all() and ((y1 - y0) == 28).all()
    for i in range(0, 300, 37):  # the box holds exactly the digit: 28*28 pixels of 200, nothing elsewhere
        img = s.images[i, 0]
        assert (img[y0[i]:y1[i], x0[i]:x1[i]] == 200).all()
        assert (img > 0).sum() == 28 * 28
    assert len(set(s.boxes[:, 0].tolist())) > 20  # positions spread over the canvas


def test_clutter_count_size_and_clipping():
    digits, labels = fake_digits(1)  # value 1: a pixel's value counts the pieces that cover it
    s = make_canvases(digits, labels, n=200, canvas=100, clutter=8, clutter_size=8, seed=2)
    img = s.images[:, 0].long()
    mask = torch.zeros_like(img, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(s.boxes.tolist()):
        mask[i, y0:y1, x0:x1] = True
    clutter_mass = torch.where(mask, img - 1, img).sum(dim=(1, 2))  # digit pixels carry 1 of their own
    assert (clutter_mass == 8 * 8 * 8).all()  # exactly 8 pieces of 8x8 per canvas
    loud, _ = fake_digits(200)
    s = make_canvases(loud, labels, n=200, canvas=30, clutter=8, seed=3)  # overlaps on a small canvas
    assert s.images.max() == 255  # 200 + 200 clipped, not wrapped around
    assert set(np.unique(s.images.numpy())) <= {0, 200, 255}


def test_deterministic_by_seed_and_chunked():
    digits = np.random.default_rng(0).integers(0, 256, (50, 28, 28)).astype(np.uint8)
    labels = np.arange(50) % 10
    a = make_canvases(digits, labels, n=64, canvas=60, clutter=4, seed=5)
    b = make_canvases(digits, labels, n=64, canvas=60, clutter=4, seed=5)
    c = make_canvases(digits, labels, n=64, canvas=60, clutter=4, seed=6)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and torch.equal(a.boxes, b.boxes)
    assert not torch.equal(a.images, c.images)


def test_loader_uses_only_its_split(monkeypatch):
    """Fake MNIST whose train digits are all 1s and test digits all 2s: no canvas mixes them."""
    from multiglance.data import Split, canvases, sources

    def fake_mnist(root, split, **_):
        value = 1 if split == "train" else 2
        return Split(torch.full((20, 1, 28, 28), value, dtype=torch.uint8), torch.arange(20) % 10,
                     [str(d) for d in range(10)])

    monkeypatch.setattr(sources, "load_mnist", fake_mnist)
    train = canvases.load_mnist_cluttered_60("unused", "train", n=50, seed=0)
    test = canvases.load_mnist_cluttered_60("unused", "test", n=50, seed=0)
    # test canvases are sums of 2s: all even; train canvases are sums of 1s, odd wherever one piece lies alone
    assert (test.images % 2 == 0).all() and (test.images == 2).any()
    assert (train.images == 1).any() and train.images.max() <= 5  # digit + at most 4 overlapping pieces


@needs_mnist
@pytest.mark.parametrize("name,size,clutter", [("mnist-translated-60", 60, 0), ("mnist-cluttered-60", 60, 4),
                                               ("mnist-cluttered-100", 100, 8)])
def test_real_loaders(name, size, clutter):
    from multiglance.data.sources import load_mnist

    train = load_split(name, MNIST, "train", n=500, seed=0)
    again = load_split(name, MNIST, "train", n=500, seed=0)
    test = load_split(name, MNIST, "test", n=500, seed=0)
    assert train.images.shape == (500, 1, size, size) and torch.equal(train.images, again.images)
    assert not torch.equal(train.images, test.images)
    # train canvases hold train digits only: the crop under each box equals some train digit exactly when
    # there is no clutter, and never a test digit
    if clutter == 0:
        src_train = load_mnist(MNIST, "train").images[:, 0].reshape(60000, -1)
        src_test = load_mnist(MNIST, "test").images[:, 0].reshape(10000, -1)
        for split, own, other in ((train, src_train, src_test), (test, src_test, src_train)):
            for i in range(0, 500, 50):
                x0, y0, x1, y1 = split.boxes[i].tolist()
                crop = split.images[i, 0, y0:y1, x0:x1].reshape(1, -1)
                assert (own == crop).all(1).any() and not (other == crop).all(1).any()
    else:  # clutter adds 8x8 pieces: the digit's own pixels are at most brightened, mass outside the box > 0
        outside = train.images.clone()
        for i, (x0, y0, x1, y1) in enumerate(train.boxes.tolist()):
            outside[i, 0, y0:y1, x0:x1] = 0
        assert (outside.flatten(1).sum(1) > 0).float().mean() > 0.9
