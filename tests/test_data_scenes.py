"""Tests for data/scenes.py: rendering against a plain loop, determinism, split separation, folders, the cache."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import SHARED_DATA
from multiglance.data import load_split, scenes
from multiglance.data.scenes import (EXCLUDED_WNIDS, SceneSplit, load_scenes_cifar10_512, make_scenes,
                                     object_pool, source_paths, upscale, write_folder)
from multiglance.errors import DataError

CIFAR_ZIP, TINY_ZIP = SHARED_DATA / "cifar10" / "cifar10-jpeg.zip", SHARED_DATA / "tiny-imagenet-200.zip"
needs_data = pytest.mark.skipif(not (CIFAR_ZIP.is_file() and TINY_ZIP.is_file()),
                                reason=f"needs the shared CIFAR-10 and Tiny ImageNet zips in {SHARED_DATA}")


def fake(n: int = 30, size: int = 300, seed: int = 0, split: str = "train") -> SceneSplit:
    g = torch.Generator().manual_seed(0)
    objects = torch.randint(0, 256, (50, 3, 32, 32), dtype=torch.uint8, generator=g)
    photos = torch.randint(0, 256, (20, 3, 64, 64), dtype=torch.uint8, generator=g)
    return make_scenes(split, objects=objects, labels=np.arange(50) % 10, pool=np.arange(50), backgrounds=photos,
                       background_pool=np.arange(5, 20), n=n, size=size, seed=seed, classes=tuple("abcdefghij"))


def reference_render(s: SceneSplit, i: int) -> np.ndarray:
    """A plain per-image, per-tile loop."""
    t = s.tiles.shape[1]
    canvas = np.zeros((3, t * 128, t * 128), np.uint8)
    for r in range(t):
        for c in range(t):
            photo = s.backgrounds[s.tiles[i, r, c]]
            photo = photo.flip(-1) if s.flips[i, r, c] else photo
            canvas[:, r * 128:(r + 1) * 128, c * 128:(c + 1) * 128] = upscale(photo[None])[0].numpy()
    y, x = s.positions[i].tolist()
    canvas[:, y:y + 64, x:x + 64] = upscale(s.objects[i:i + 1])[0].numpy()
    return canvas[:, :s.size, :s.size]


# ---- the generator and renderer, on made-up sources (always run) --------------------------------------------
def test_upscale_is_bilinear() -> None:
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    ref = F.interpolate(x.float(), scale_factor=2, mode="bilinear", align_corners=False).round()
    y = upscale(x)
    assert y.shape == (4, 3, 64, 64) and y.dtype == torch.uint8
    assert (y.float() - ref).abs().max() <= 1 and (y.float() - ref).abs().mean() < 0.3  # off by one at most


@pytest.mark.parametrize("size", [300, 512, 1024])
def test_render_matches_a_plain_loop(size: int) -> None:
    s = fake(size=size)
    t = -(-size // 128)
    assert s.tiles.shape == (30, t, t) and s.flips.shape == (30, t, t) and s.shape == (3, size, size)
    assert s.flips.any() and not s.flips.all()
    x = s.render(torch.tensor([4, 0, 17]))
    assert x.shape == (3, 3, size, size) and x.dtype == torch.uint8
    for row, i in enumerate([4, 0, 17]):
        assert np.array_equal(x[row].numpy(), reference_render(s, i))
    one_by_one = torch.cat([s.render(i) for i in range(len(s))])
    assert torch.equal(s.render(slice(None)), one_by_one)
    images, keep = s.take(torch.tensor([2, 3]))
    assert torch.equal(images, one_by_one[2:4]) and keep.dtype == torch.bool and keep.tolist() == [True, True]
    assert s.render(torch.zeros(0, dtype=torch.long)).shape == (0, 3, size, size)


def test_objects_inside_boxes_and_pools_respected() -> None:
    s = fake(n=200, size=300)
    b = s.boxes
    assert b.shape == (200, 4) and b.min() >= 0 and b[:, 2:].max() <= 300
    assert ((b[:, 2] - b[:, 0]) == 64).all() and ((b[:, 3] - b[:, 1]) == 64).all()
    assert s.tiles.min() >= 5, "only background_pool photographs are drawn"
    assert torch.equal(s.labels, s.object_index % 10)
    assert (s.labels.bincount(minlength=10) == 20).all(), "each class n/10 times"
    for c in range(10):  # a class's 5 images all come before any of them comes again
        assert len(set(s.object_index[s.labels == c][:5].tolist())) == 5
    assert (s.object_index.bincount(minlength=50) == 4).all(), "then every object equally often"
    odd = fake(n=23)
    assert odd.labels.bincount(minlength=10).tolist() == [3, 3, 3] + [2] * 7
    x0, y0, x1, y1 = b[7].tolist()
    assert torch.equal(s.render(7)[0, :, y0:y1, x0:x1], upscale(s.objects[7:8])[0])


def test_deterministic_in_split_and_seed() -> None:
    a, b = fake(seed=1), fake(seed=1)
    for name in ("labels", "objects", "object_index", "positions", "tiles", "flips"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.positions, fake(seed=2).positions)
    assert not torch.equal(a.positions, fake(seed=1, split="val").positions)


def test_subset_and_sizes() -> None:
    s = fake()
    sub = s.subset(torch.tensor([3, 1]))
    assert len(sub) == 2 and sub.backgrounds is s.backgrounds
    assert torch.equal(sub.render(slice(None)), s.render(torch.tensor([3, 1])))
    assert torch.equal(s.subset(slice(0, 4)).boxes, s.boxes[:4])
    assert s.nbytes() < 30 * 3 * 300 * 300 / 10
    with pytest.raises(DataError, match="at least 128"):
        fake(size=100)


def test_save_load_round_trip_and_damage(tmp_path) -> None:
    s = fake()
    s.save(tmp_path / "s.pt")
    back = SceneSplit.load(tmp_path / "s.pt", s.backgrounds)
    assert back.classes == s.classes and back.split == "train" and back.size == 300
    assert torch.equal(back.render(slice(None)), s.render(slice(None)))
    with pytest.raises(DataError, match="tiles do not fit"):
        SceneSplit.load(tmp_path / "s.pt", s.backgrounds[:3])
    (tmp_path / "s.pt").write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="delete it to rebuild"):
        SceneSplit.load(tmp_path / "s.pt", s.backgrounds)


def test_write_folder_tree(tmp_path) -> None:
    from multiglance.data.sources import load_folder

    s = fake(n=12, size=256, split="test")
    out = write_folder(s, tmp_path, fmt="png")
    assert out == tmp_path / "test"
    files = sorted(out.glob("*/*.png"))
    counts = np.bincount(s.labels.numpy(), minlength=10)
    assert len(files) == 12
    for c, name in enumerate(s.classes):
        assert len(list((out / name).glob("*.png"))) == counts[c]
    first = np.asarray(Image.open(out / s.classes[int(s.labels[0])] / "00.png"))  # PNG: lossless
    assert np.array_equal(first, s.render(0)[0].permute(1, 2, 0).numpy())
    folder = load_folder(tmp_path, "test", cache=False)
    assert len(folder) == 12 and folder.images.shape[1:] == (3, 256, 256)
    rows = (out / "boxes.csv").read_text().splitlines()
    assert rows[0] == "file,label,x0,y0,x1,y1" and len(rows) == 13
    assert rows[1].split(",")[2:] == [str(v) for v in s.boxes[0].tolist()]
    jpg = write_folder(s.subset(slice(0, 3)), tmp_path / "jpg", quality=90)
    assert len(list(jpg.glob("*/*.jpg"))) == 3 and (jpg / "boxes.csv").is_file()
    name = next(jpg.glob(f"{s.classes[int(s.labels[0])]}/0.jpg"))
    pixels = np.asarray(Image.open(name)).astype(int)  # (S, S, 3)
    error, other = (np.abs(pixels - s.render(i)[0].permute(1, 2, 0).numpy()).mean() for i in (0, 1))
    assert pixels.shape == (256, 256, 3) and error < 20 and error < other / 2, (error, other)  # lossy (noise tiles)
    with pytest.raises(DataError, match="cannot write scenes as"):
        write_folder(s, tmp_path, fmt="gif")


def test_missing_tiny_imagenet_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "cifar10-jpeg.zip").write_bytes(b"")
    with pytest.raises(DataError, match="Tiny ImageNet not found.*tiny=PATH"):
        source_paths(tmp_path)
    (tmp_path / "tiny-imagenet-200.zip").write_bytes(b"")
    for root in (tmp_path, tmp_path / "cifar10", tmp_path / "cifar10" / "cifar10-jpeg.zip"):
        assert source_paths(root) == (tmp_path / "cifar10" / "cifar10-jpeg.zip", tmp_path / "tiny-imagenet-200.zip")


# ---- the real benchmark, on the shared CIFAR-10 and Tiny ImageNet -------------------------------------------
@pytest.fixture(scope="module")
def real() -> dict[str, SceneSplit]:
    if not (CIFAR_ZIP.is_file() and TINY_ZIP.is_file()):
        pytest.skip(f"needs the shared CIFAR-10 and Tiny ImageNet zips in {SHARED_DATA}")
    sizes = {"train": 1000, "val": 200, "test": 200}
    return {split: load_scenes_cifar10_512(SHARED_DATA, split, n=n, cache=False) for split, n in sizes.items()}


@needs_data
def test_real_scenes_shapes_labels_and_sources(real) -> None:
    from multiglance.data.sources import CIFAR10_CLASSES, load_cifar10, load_tiny_imagenet

    for split, s in real.items():
        assert s.split == split and s.classes == CIFAR10_CLASSES and s.shape == (3, 512, 512)
        assert s.tiles.shape == (len(s), 4, 4) and s.objects.shape == (len(s), 3, 32, 32)
        cifar = load_cifar10(CIFAR_ZIP, "test" if split == "test" else "train")
        assert torch.equal(s.objects, cifar.images[s.object_index])
        assert torch.equal(s.labels, cifar.labels[s.object_index])
        tiny = load_tiny_imagenet(TINY_ZIP, "test" if split == "test" else "train")
        assert s.backgrounds.shape == tiny.images.shape
        assert not set(np.asarray(tiny.classes)[tiny.labels[s.tiles.reshape(-1)].numpy()]) & EXCLUDED_WNIDS
        assert (np.bincount(s.labels.numpy(), minlength=10) == len(s) // 10).all(), "balanced labels"
        assert len(s.object_index.unique()) == len(s), "no object twice"
    x, keep = real["train"].take(torch.arange(4))
    assert x.shape == (4, 3, 512, 512) and keep.all()
    x0, y0, x1, y1 = real["train"].boxes[2].tolist()
    assert torch.equal(x[2, :, y0:y1, x0:x1], upscale(real["train"].objects[2:3])[0])
    assert real["train"].backgrounds is real["val"].backgrounds, "train and val share one Tiny ImageNet copy"


@needs_data
def test_train_and_val_never_share_a_cifar_image(real) -> None:
    from multiglance.data.sources import load_cifar10

    labels = load_cifar10(CIFAR_ZIP, "train").labels.numpy()
    train_pool, val_pool = object_pool("train", labels), object_pool("val", labels)
    assert len(train_pool) == 45000 and len(val_pool) == 5000 and not np.intersect1d(train_pool, val_pool).size
    assert (np.bincount(labels[val_pool]) == 500).all()
    assert np.isin(real["train"].object_index.numpy(), train_pool).all()
    assert np.isin(real["val"].object_index.numpy(), val_pool).all()
    other_seed = load_scenes_cifar10_512(SHARED_DATA, "train", n=45000, seed=5, cache=False)
    assert not np.intersect1d(other_seed.object_index.numpy(), real["val"].object_index.numpy()).size
    assert len(np.unique(other_seed.object_index.numpy())) == 45000, "n = the pool: every image once"
    assert len(object_pool("test", np.zeros(10000))) == 10000  # test objects: CIFAR-10's own test split


@needs_data
def test_real_scenes_are_deterministic_and_registered(real) -> None:
    again = load_split("scenes-cifar10-512", CIFAR_ZIP, "val", n=200, cache=False)
    assert isinstance(again, SceneSplit)
    assert torch.equal(again.render(torch.arange(3)), real["val"].render(torch.arange(3)))
    assert torch.equal(again.positions, real["val"].positions)


@needs_data
def test_cache_round_trip_and_damaged_cache_rebuilt(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(scenes, "_cache_root", lambda: tmp_path)
    built = load_scenes_cifar10_512(SHARED_DATA, "test", n=50)
    (path,) = tmp_path.glob("scenes-cifar10-512-test-50-0-*.pt")

    def fail(*args, **kwargs):
        raise AssertionError("the cache should have been used")
    monkeypatch.setattr(scenes, "make_scenes", fail)
    cached = load_scenes_cifar10_512(SHARED_DATA, "test", n=50)
    for name in ("labels", "objects", "object_index", "positions", "tiles", "flips"):
        assert torch.equal(getattr(cached, name), getattr(built, name)), name
    assert torch.equal(cached.render(torch.arange(4)), built.render(torch.arange(4)))
    monkeypatch.undo()
    monkeypatch.setattr(scenes, "_cache_root", lambda: tmp_path)
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.warns(UserWarning, match="rebuilding"):
        rebuilt = load_scenes_cifar10_512(SHARED_DATA, "test", n=50)
    assert torch.equal(rebuilt.positions, built.positions)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SceneSplit.load(path, built.backgrounds)  # the rebuilt file is whole again
    assert len(list(tmp_path.glob("*.pt"))) == 1
