"""Tests for data/stream.py: streamed class folders read like the in-memory loader, resize by the documented
rule, skip bad files with one warning each, and give the same batches whatever the number of workers."""
from __future__ import annotations

import io
import pickle
import tarfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from multiglance.data import load_split, stream
from multiglance.data.stream import (StreamSplit, count_images, decode_fitted, detect_channels, loader, open_stream,
                                     should_stream)
from multiglance.data.synthetic_folders import make_shape_folder
from multiglance.errors import DataError


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """train: 6 circles + 6 squares of 48x48; test: 3 + 3."""
    return make_shape_folder(tmp_path_factory.mktemp("shapes") / "shapes", n_per_class=6, size=48, seed=1)


def save(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def pack(folder: Path, out: Path, kind: str) -> Path:
    """`folder` inside a top folder of a zip or plain tar (so find_root must look one level down)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if kind == "zip":
        with zipfile.ZipFile(out, "w") as z:
            for p in files:
                z.write(p, f"top/{p.relative_to(folder)}")
    else:
        with tarfile.open(out, "w") as t:
            t.add(folder, arcname="top")
    return out


# ------------------------------------------------------------------------------------------ layouts #

@pytest.mark.parametrize("kind", ["folder", "zip", "tar"])
def test_layouts_give_the_same_split(shapes: Path, tmp_path: Path, kind: str) -> None:
    root = shapes if kind == "folder" else pack(shapes, tmp_path / f"shapes.{kind}", kind)
    train, test = open_stream(root, "train", size=32), open_stream(root, "test", size=32)
    assert train.classes == test.classes == ["circle", "square"]
    assert len(train) == 12 and len(test) == 6 and count_images(root, "train") == 12
    assert train.labels.dtype == torch.int64 and train.labels.tolist() == [0] * 6 + [1] * 6
    assert train.files[0] == "train/circle/circle_0000.jpg" and train.shape == (3, 32, 32) and train.boxes is None
    images, keep = train.take(torch.tensor([0, 11]))
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.uint8 and keep.all()
    ref, _ = open_stream(shapes, "train", size=32).take(torch.tensor([0, 11]))
    assert torch.equal(images, ref)  # the same pixels from the folder and from its archive
    if kind != "folder":  # each worker opens its own archive handle: the same batches as in-process
        order = torch.randperm(12, generator=torch.Generator().manual_seed(0))
        here, there = (list(loader(train, order, 4, workers=w)) for w in (0, 2))
        assert all(torch.equal(x, y) for a, b in zip(here, there) for x, y in zip(a, b)) and len(there) == 3


def test_subset_and_registry(shapes: Path) -> None:
    full = load_split("folder-stream", shapes, "test", size=16)
    assert isinstance(full, StreamSplit) and full.shape == (3, 16, 16)
    sub = full.subset(torch.tensor([5, 0]))
    assert sub.files == [full.files[5], full.files[0]] and sub.labels.tolist() == [1, 0]
    assert torch.equal(sub.take(torch.tensor([0]))[0], full.take(torch.tensor([5]))[0])
    assert full.subset(full.labels == 1).files == full.files[3:] and full.subset(slice(0, 2)).labels.tolist() == [0, 0]
    train, val = (load_split("folder-stream", shapes, s, size=16) for s in ("train", "val"))
    assert len(train) + len(val) == 12 and not set(train.files) & set(val.files)
    with pytest.raises(DataError, match="needs an image size"):
        load_split("folder-stream", shapes, "train")


def test_compressed_tar_is_refused_with_advice(shapes: Path, tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "s.tar.gz", "w:gz") as t:
        t.add(shapes, arcname="top")
    with pytest.raises(DataError, match="decompress it"):
        open_stream(tmp_path / "s.tar.gz", "train", size=16)


# -------------------------------------------------------------------------------------- resize rule #

def test_resize_is_cover_then_centre_crop() -> None:
    # 300x200: columns 0-49 red, 50-149 green, 150-249 blue, 250-299 white; the crop keeps columns 50-249
    a = np.zeros((200, 300, 3), np.uint8)
    a[:, :50] = (255, 0, 0)
    a[:, 50:150] = (0, 255, 0)
    a[:, 150:250] = (0, 0, 255)
    a[:, 250:] = 255
    out = decode_fitted(save(Image.fromarray(a)), "x.png", height=128, width=128)
    assert out.shape == (128, 128, 3)
    assert (out[:, 1:63] == (0, 255, 0)).all() and (out[:, 65:127] == (0, 0, 255)).all()
    assert out[:, 0, 0].max() < 40 and out[:, 127, :2].max() < 40  # at most a trace of red / white at the edges
    # a non-square target covers H x W: 300x200 -> 96 wide x 128 high keeps the middle 150 columns (75-224)
    tall = decode_fitted(save(Image.fromarray(a)), "x.png", height=128, width=96)
    assert tall.shape == (128, 96, 3)
    assert (tall[:, :47] == (0, 255, 0)).all() and (tall[:, 49:] == (0, 0, 255)).all()


def test_exif_orientation_is_honoured() -> None:
    a = np.zeros((64, 96, 3), np.uint8)
    a[:, :48] = 255  # stored: left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise: the left half becomes the top half
    out = decode_fitted(save(Image.fromarray(a), "JPEG", quality=95, exif=exif.tobytes()), "x.jpg",
                        height=96, width=64)
    assert out[:40].min() > 230 and out[56:].max() < 25


def test_draft_decodes_big_jpegs_close_to_the_full_decode() -> None:
    rng = np.random.default_rng(0)
    big = np.asarray(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).resize((1024, 1024)))
    data = save(Image.fromarray(big), "JPEG", quality=90)
    fast = decode_fitted(data, "x.jpg", height=128, width=128).astype(int)
    full = decode_fitted(data, "x.jpg", height=128, width=128, draft=False).astype(int)
    assert fast.shape == full.shape == (128, 128, 3) and np.abs(fast - full).mean() < 4


@pytest.mark.parametrize("name,img,channels,expect", [
    ("gray.png", Image.new("L", (40, 30), 200), 3, (200, 200, 200)),
    ("rgba.png", Image.new("RGBA", (40, 30), (255, 0, 0, 128)), 3, (128, 0, 0)),  # composited on black
    ("cmyk.jpg", Image.new("CMYK", (40, 30), (0, 255, 255, 0)), 3, (255, 0, 0)),
    ("palette.png", Image.new("RGB", (40, 30), (0, 0, 255)).convert("P"), 3, (0, 0, 255)),
    ("deep.png", Image.fromarray(np.full((30, 40), 40000, np.uint16)), 3, (156, 156, 156)),  # top 8 bits
    ("color.png", Image.new("RGB", (40, 30), (255, 0, 0)), 1, (76,)),  # luma of red
])
def test_modes_convert_to_the_split_channels(name: str, img: Image.Image, channels: int, expect: tuple) -> None:
    data = save(img, "JPEG" if name.endswith(".jpg") else "PNG")
    out = decode_fitted(data, name, height=20, width=20, channels=channels)
    assert out.shape == (20, 20, channels)
    assert np.abs(out.reshape(-1, channels).astype(int) - expect).max() <= 3


def test_odd_mode_folder_and_detected_channels(tmp_path: Path) -> None:
    root = make_shape_folder(tmp_path / "odd", n_per_class=2, size=40, seed=2, modes=True, fmt="png")
    split = open_stream(root, "train", size=24)
    assert split.channels == 3 and len(split) == 4 + 6  # 2 per class + 6 odd files in circle/
    images, keep = split.take(torch.arange(len(split)))
    assert keep.all() and images.shape == (10, 3, 24, 24) and split.skipped == 0
    gray = tmp_path / "gray"
    for part in ("train", "test"):
        (gray / part / "a").mkdir(parents=True)
        (gray / part / "a" / "1.png").write_bytes(save(Image.new("L", (8, 8), 9)))
    assert detect_channels(gray) == 1 and open_stream(gray, "test", size=8).shape == (1, 8, 8)
    assert detect_channels(root) == 3


# ---------------------------------------------------------------------------------- skipping + loader #

def test_corrupt_files_are_skipped_with_one_warning_each(tmp_path: Path) -> None:
    root = make_shape_folder(tmp_path / "bad", n_per_class=3, size=32, seed=3, corrupt=2)
    split = open_stream(root, "train", size=16)
    assert len(split) == 8 and split.files[:2] == ["train/circle/circle_0000.jpg", "train/circle/circle_0001.jpg"]
    bad = [i for i, f in enumerate(split.files) if "corrupt" in f]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):  # two epochs: still one warning per file
            batches = list(loader(split, torch.arange(8), 4, workers=0))
        images, keep = split.take(torch.tensor([0, bad[0]]))
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and all(m.startswith("skipping ") for m in messages)
    assert {m.split(":")[0] for m in messages} == {f"skipping {split.where(i)}" for i in bad}
    assert split.skipped == 2 and keep.tolist() == [True, False] and images.shape[0] == 1
    assert sum(len(b[0]) for b in batches) == 6
    assert all(b[0].shape[0] == b[1].shape[0] == b[2].shape[0] for b in batches)
    assert not any(i in b[0].tolist() for b in batches for i in bad)


def test_workers_give_identical_batches_and_learn_skips(tmp_path: Path) -> None:
    root = make_shape_folder(tmp_path / "w", n_per_class=5, size=32, seed=4, corrupt=1)
    order = torch.randperm(11, generator=torch.Generator().manual_seed(0))
    results = {}
    for workers in (0, 2):
        split = open_stream(root, "train", size=16)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results[workers] = list(loader(split, order, 3, workers=workers))
        assert split.skipped == 1 and len(caught) == 1 and "corrupt_00.jpg" in str(caught[0].message)
    assert len(results[0]) == len(results[2]) == 3  # 11 // 3, the partial batch dropped
    for a, b in zip(results[0], results[2]):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    bad = split.files.index("train/circle/corrupt_00.jpg")
    assert torch.cat([b[0] for b in results[0]]).tolist() == [i for i in order[:9].tolist() if i != bad]


def test_start_batch_skips_exactly_and_drop_last(shapes: Path) -> None:
    split = open_stream(shapes, "train", size=16)
    order = torch.randperm(12, generator=torch.Generator().manual_seed(1))
    full = list(loader(split, order, 5, workers=0, drop_last=False))
    assert [b[0].tolist() for b in full] == [order[:5].tolist(), order[5:10].tolist(), order[10:].tolist()]
    rest = loader(split, order, 5, workers=0, drop_last=False, start_batch=1)
    assert len(rest) == 2
    for a, b in zip(rest, full[1:]):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert len(loader(split, order, 5, workers=0)) == 2 and list(loader(split, order, 5, start_batch=9)) == []
    index, images, labels = full[0]
    assert torch.equal(labels, split.labels[index]) and torch.equal(images, split.take(index)[0])


def test_streaming_holds_no_pixels(shapes: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    split = open_stream(shapes, "train", size=32)
    reads = []
    real = stream._Reader.read
    monkeypatch.setattr(stream._Reader, "read", lambda self, name: reads.append(name) or real(self, name))
    it = loader(split, torch.arange(12), 4, workers=0)
    next(it)
    assert len(reads) == 4  # one batch decoded, not the split
    list(it)
    # the split (what each worker receives) holds names and labels only: no decoded image anywhere
    assert len(pickle.dumps(split)) < 4000
    held = [v for v in vars(split).values() if isinstance(v, (np.ndarray, torch.Tensor))]
    assert all(t.dtype == torch.int64 and t.shape == (12,) for t in held)


def test_should_stream_estimates_decoded_bytes(shapes: Path) -> None:
    # 18 files: at 32x32x3 that is 55 kB; at 8192 x 8192 it is 3.6 GB
    assert not should_stream(shapes, 32) and should_stream(shapes, 8192)
    assert not should_stream(shapes, None) and should_stream(shapes, None, budget_bytes=1000)


def test_native_size_matches_the_in_memory_loader(shapes: Path) -> None:
    from multiglance.data.sources import load_folder

    split, memory = open_stream(shapes, "train", size=48), load_folder(shapes, "train", cache=False)
    assert split.files and split.labels.tolist() == memory.labels.tolist() and split.classes == memory.classes
    assert torch.equal(split.take(torch.arange(len(split)))[0], memory.images)  # no resize at the native size


def test_pixel_limit_is_checked_before_decoding() -> None:
    data = save(Image.new("L", (300, 200)))
    with pytest.raises(DataError, match="x.png: 300x200 pixels, over the limit of 1000"):
        decode_fitted(data, "x.png", height=8, width=8, max_pixels=1000)


@pytest.mark.parametrize("size", [48, 16])  # the native size (no resize) and a resize
def test_one_channel_decode_gives_writable_tensors_without_a_warning(shapes: Path, size: int) -> None:
    split = open_stream(shapes, "train", size=size, channels=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns "The given NumPy array is not writable" on read-only arrays
        x = split.decode(0)
    assert x.shape == (1, size, size) and x.dtype == torch.uint8
    x[0, 0, 0] = 7  # writable, and its own memory
