"""Tests for data/sources.py: tiny copies of each official format round-trip exactly; the cache is reused.

Tests named `test_shared_*` read the project's real data in ../shared/data (skipped when absent) and use the
normal cache ($MULTIGLANCE_CACHE or ~/.cache/multiglance), so they are fast from the second run on.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from multiglance.data import sources
from multiglance.data.sources import (CIFAR10_CLASSES, load_cifar10, load_folder, load_mnist,
                                      load_tiny_imagenet)
from multiglance.errors import DataError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def private_cache(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not request.node.name.startswith("test_shared_"):
        monkeypatch.setenv("MULTIGLANCE_CACHE", str(tmp_path / "cache"))


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def write_files(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def write_tar_gz(path: Path, folder: Path) -> Path:
    with tarfile.open(path, "w:gz") as t:
        t.add(folder, arcname=folder.name)
    return path


def assert_split(split, images: np.ndarray, labels: list[int], classes: list[str]) -> None:
    assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
    np.testing.assert_array_equal(split.images.numpy(), images)
    assert split.labels.tolist() == labels and split.classes == classes


# --------------------------------------------------------------------------------------- CIFAR-10 #

def _s(b: bytes) -> bytes:  # a Python 2 str
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b


def _i(i: int) -> bytes:
    return b"K" + bytes([i]) if 0 <= i < 256 else b"J" + struct.pack("<i", i)


def py2_pickle(d: dict[bytes, object]) -> bytes:
    """`d` pickled the way Python 2 cPickle (protocol 2) and numpy 1.x wrote the official batches."""
    out = [b"\x80\x02}("]
    for k, v in d.items():
        out.append(_s(k))
        if isinstance(v, bytes):
            out.append(_s(v))
        elif isinstance(v, int):
            out.append(_i(v))
        elif isinstance(v, list):
            out.append(b"](" + b"".join(_s(x) if isinstance(x, bytes) else _i(x) for x in v) + b"e")
        else:
            assert isinstance(v, np.ndarray) and v.dtype == np.uint8 and v.ndim == 2
            out += [b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n", _i(0), b"\x85", _s(b"b"), b"\x87R",
                    b"(", _i(1), _i(v.shape[0]), _i(v.shape[1]), b"\x86",
                    b"cnumpy\ndtype\n", _s(b"u1"), _i(0), _i(1), b"\x87R",
                    b"(", _i(3), _s(b"|"), b"NNN", _i(-1), _i(-1), _i(0), b"tb", b"\x89", _s(v.tobytes()), b"tb"]
    return b"".join(out) + b"u."


BATCHES = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]


def write_cifar_batches(folder: Path) -> dict[str, tuple[np.ndarray, list[int]]]:
    """The official cifar-10-batches-py/ layout with 2-3 images a batch, in three pickle dialects."""
    content = {}
    for i, name in enumerate(BATCHES):
        data = RNG.integers(0, 256, (2 + i % 2, 3072), dtype=np.uint8)
        labels = RNG.integers(0, 10, len(data)).tolist()
        d = {b"batch_label": b"batch", b"labels": labels, b"data": data, b"filenames": [b"x.png"] * len(data)}
        blob = [py2_pickle(d), pickle.dumps(d, protocol=2),
                pickle.dumps({k.decode(): v for k, v in d.items()}, protocol=5)][i % 3]
        write_files(folder, {name: blob})
        content[name] = (data.reshape(-1, 3, 32, 32), labels)
    meta = {b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_cases_per_batch": 10000}
    write_files(folder, {"batches.meta": py2_pickle(meta), "readme.html": b"<html>"})
    return content


def expected_cifar(content: dict[str, tuple[np.ndarray, list[int]]], split: str) -> tuple[np.ndarray, list[int]]:
    names = BATCHES[:5] if split == "train" else BATCHES[5:]
    return np.concatenate([content[n][0] for n in names]), sum((content[n][1] for n in names), [])


@pytest.mark.parametrize("form", ["batches folder", "parent folder", "tar.gz", "folder with the tar.gz"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar_python_batches(tmp_path: Path, form: str, split: str) -> None:
    content = write_cifar_batches(tmp_path / "src" / "cifar-10-batches-py")
    (tmp_path / "dl").mkdir()
    tgz = write_tar_gz(tmp_path / "dl" / "cifar-10-python.tar.gz", tmp_path / "src" / "cifar-10-batches-py")
    root = {"batches folder": tmp_path / "src" / "cifar-10-batches-py", "parent folder": tmp_path / "src",
            "tar.gz": tgz, "folder with the tar.gz": tmp_path / "dl"}[form]
    assert_split(load_cifar10(root, split), *expected_cifar(content, split), list(CIFAR10_CLASSES))


class Evil:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return os.makedirs, (str(self.target),)


@pytest.mark.parametrize("payload", ["os.makedirs", "object array", "huge array", "truncated", "not a dict"])
def test_cifar_hostile_or_corrupt_pickle_is_refused(tmp_path: Path, payload: str) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_batches(folder)
    blob = {"os.makedirs": pickle.dumps({b"data": Evil(tmp_path / "pwned")}, protocol=2),
            "object array": pickle.dumps({b"data": np.array([1, "x"], dtype=object)}, protocol=2),
            "huge array": b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _i(10**9) + b"\x85"
                          + _s(b"b") + b"\x87R.",
            "truncated": (folder / "data_batch_2").read_bytes()[:500],
            "not a dict": pickle.dumps([1, 2, 3])}[payload]
    (folder / "data_batch_2").write_bytes(blob)
    with pytest.raises(DataError, match="data_batch_2") as err:
        load_cifar10(folder, "train", cache=False)
    assert not (tmp_path / "pwned").exists() and "\n" not in str(err.value)
    assert load_cifar10(folder, "test", cache=False).images.shape == (3, 3, 32, 32)  # the test batch is fine


def cifar_class_files(classes: list[str]) -> tuple[dict[str, bytes], dict[str, tuple[np.ndarray, list[int]]]]:
    files, expected = {}, {}
    for split, per_class in [("train", 2), ("test", 1)]:
        images, labels = [], []
        for cls in classes:
            for i in range(per_class):
                img = RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                files[f"{split}/{cls}/{i:04d}.png"] = png(img)
                images.append(img.transpose(2, 0, 1))
                labels.append(CIFAR10_CLASSES.index(cls))
        expected[split] = (np.stack(images), labels)
    return files, expected


@pytest.mark.parametrize("classes", [list(CIFAR10_CLASSES), ["cat", "truck"]])
def test_cifar_class_folder_zip_uses_official_label_order(tmp_path: Path, classes: list[str]) -> None:
    files, expected = cifar_class_files(classes)
    root = write_zip(tmp_path / "cifar10-png.zip", files)
    for split in ("train", "test"):
        assert_split(load_cifar10(root, split), *expected[split], list(CIFAR10_CLASSES))
    with pytest.raises(DataError, match="dragon"):
        load_cifar10(write_zip(tmp_path / "x.zip", {**files, "test/dragon/0.png": files["test/cat/0000.png"]}), "test")


# ----------------------------------------------------------------------------------------- folders #

def folder_files(size: tuple[int, int] = (6, 5)) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    pixels = {f"{s}/{c}/img_{i}.png": RNG.integers(0, 256, (*size, 3), dtype=np.uint8)
              for s in ("train", "val") for c in ("dog", "cat") for i in (10, 2, 1)}
    return {n: png(p) for n, p in pixels.items()}, pixels


@pytest.mark.parametrize("form", ["folder", "zip with a top folder", "tar.gz"])
def test_folder_classes_sorted_files_in_natural_order(tmp_path: Path, form: str) -> None:
    files, pixels = folder_files()
    data = write_files(tmp_path / "mydata", files)
    root = {"folder": data, "zip with a top folder": write_zip(tmp_path / "d.zip", {f"mydata/{n}": b for n, b in
                                                                                   files.items()}),
            "tar.gz": write_tar_gz(tmp_path / "d.tar.gz", data)}[form]
    for split, folder in [("train", "train"), ("test", "val")]:
        order = [f"{folder}/{c}/img_{i}.png" for c in ("cat", "dog") for i in (1, 2, 10)]
        expected = np.stack([pixels[n].transpose(2, 0, 1) for n in order])
        assert_split(load_folder(root, split), expected, [0, 0, 0, 1, 1, 1], ["cat", "dog"])


def test_folder_errors(tmp_path: Path) -> None:
    files, _ = folder_files()
    odd = write_files(tmp_path / "odd", {**files, "train/cat/big.png": png(np.zeros((9, 9, 3), np.uint8))})
    with pytest.raises(DataError, match=r"is (9x9|5x6) but .* is (5x6|9x9); all images must have one size: resize"):
        load_folder(odd, "train")
    bad = write_files(tmp_path / "bad", {**files, "train/dog/broken.jpg": b"\xff\xd8\xff garbage"})
    with pytest.warns(UserWarning, match="skipping .*train/dog/broken.jpg: not an image"):
        skipped = load_folder(bad, "train", cache=False)
    assert len(skipped) == 6 and skipped.skipped == 1
    new_class = write_files(tmp_path / "new", {**files, "val/cow/1.png": files["val/cat/img_1.png"]})
    with pytest.raises(DataError, match="cow"):
        load_folder(new_class, "test")
    with pytest.raises(DataError, match="no images in train/CLASS/"):
        load_folder(write_files(tmp_path / "t", {"val/a/1.png": files["val/cat/img_1.png"]}), "train")
    with pytest.raises(DataError, match="no train/ or test/ or val/ found .* or ROOT/CLASS/\*.jpg"):
        load_folder(write_files(tmp_path / "e", {"x.txt": b""}), "train")


# ----------------------------------------------------------------------------------- Tiny ImageNet #

WNIDS = ["n02", "n01", "n03"]  # not sorted: wnids.txt decides the label order


def tiny_files() -> tuple[dict[str, bytes], dict[str, tuple[np.ndarray, list[int], np.ndarray]]]:
    files: dict[str, bytes] = {"wnids.txt": "\n".join(WNIDS).encode() + b"\n", "words.txt": b"n01\tthing\n"}
    train_img, train_lab, train_box = [], [], []
    for label, w in enumerate(WNIDS):
        lines = []
        for i in (0, 1, 2, 10):
            img = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            if label == 1 and i == 2:  # grayscale, as 616 official images are
                img = np.repeat(img[..., :1], 3, 2)
                files[f"train/{w}/images/{w}_{i}.JPEG"] = png(img[..., 0])
            else:
                files[f"train/{w}/images/{w}_{i}.JPEG"] = png(img)
            box = [i % 3, 1, 5, 7]  # inclusive ends, as in the official files
            lines.append(f"{w}_{i}.JPEG\t" + "\t".join(map(str, box)))
            train_img.append(img.transpose(2, 0, 1)), train_lab.append(label), train_box.append(box)
        files[f"train/{w}/{w}_boxes.txt"] = ("\n".join(reversed(lines)) + "\n").encode()
    val_img, val_lab, val_box, lines = [], [], [], []
    for i, w in enumerate(["n03", "n01", "n03", "n02"]):
        img = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        files[f"val/images/val_{i}.JPEG"] = png(img)
        box = [0, i, 7, 6]
        lines.append(f"val_{i}.JPEG\t{w}\t" + "\t".join(map(str, box)))
        val_img.append(img.transpose(2, 0, 1)), val_lab.append(WNIDS.index(w)), val_box.append(box)
    files["val/val_annotations.txt"] = ("\n".join(lines) + "\n").encode()
    exclusive = np.array([0, 0, 1, 1])
    return files, {"train": (np.stack(train_img), train_lab, np.array(train_box) + exclusive),
                   "test": (np.stack(val_img), val_lab, np.array(val_box) + exclusive)}


@pytest.mark.parametrize("form", ["folder", "parent folder", "zip"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_tiny_imagenet_official_layout(tmp_path: Path, form: str, split: str) -> None:
    files, expected = tiny_files()
    top = write_files(tmp_path / "tiny-imagenet-200", files)
    root = {"folder": top, "parent folder": tmp_path,
            "zip": write_zip(tmp_path / "t.zip", {f"tiny-imagenet-200/{n}": b for n, b in files.items()})}[form]
    images, labels, boxes = expected[split]
    got = load_tiny_imagenet(root, split)
    assert_split(got, images, labels, WNIDS)
    assert got.boxes is not None and got.boxes.dtype == torch.int64
    np.testing.assert_array_equal(got.boxes.numpy(), boxes)


def test_tiny_imagenet_damaged_layout(tmp_path: Path) -> None:
    files, _ = tiny_files()
    files["train/n01/n01_boxes.txt"] = b"n01_0.JPEG\t0\t1\t5\t7\n"
    with pytest.raises(DataError, match="has no box for train/n01/images/n01_1.JPEG"):
        load_tiny_imagenet(write_files(tmp_path / "a", files), "train")
    files["val/val_annotations.txt"] = b"val_0.JPEG\tn09\t0\t0\t1\t1\n"
    with pytest.raises(DataError, match="class n09 of val_0.JPEG is not in wnids.txt"):
        load_tiny_imagenet(write_files(tmp_path / "b", files), "test")
    files["val/val_annotations.txt"] = b"val_0.JPEG\tn01\t0\t0\n"
    with pytest.raises(DataError, match="line 1: expected 6 fields"):
        load_tiny_imagenet(write_files(tmp_path / "c", files), "test")


# ------------------------------------------------------------------------------------------- MNIST #

def idx(array: np.ndarray) -> bytes:
    return struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_mnist(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    data = {}
    for prefix, n, pack in [("train", 5, gzip.compress), ("t10k", 3, lambda b: b)]:
        images = RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = RNG.integers(0, 10, n).astype(np.uint8)
        suffix = ".gz" if prefix == "train" else ""
        write_files(folder, {f"{prefix}-images-idx3-ubyte{suffix}": pack(idx(images)),
                             f"{prefix}-labels-idx1-ubyte{suffix}": pack(idx(labels))})
        data["train" if prefix == "train" else "test"] = (images[:, None], labels.astype(np.int64))
    return data


@pytest.mark.parametrize("split", ["train", "test"])
def test_mnist_gz_and_raw_idx(tmp_path: Path, split: str) -> None:
    expected = write_mnist(tmp_path / "mnist")
    images, labels = expected[split]
    assert_split(load_mnist(tmp_path / "mnist", split), images, labels.tolist(), [str(d) for d in range(10)])
    zipped = write_zip(tmp_path / "m.zip", {f"x/{p.name}": p.read_bytes() for p in (tmp_path / "mnist").iterdir()})
    assert load_mnist(zipped, split).labels.tolist() == labels.tolist()


def test_mnist_damaged_files(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    write_mnist(folder)
    raw = (folder / "t10k-images-idx3-ubyte").read_bytes()
    (folder / "t10k-images-idx3-ubyte").write_bytes(raw[:-10])
    with pytest.raises(DataError, match="truncated"):
        load_mnist(folder, "test")
    (folder / "t10k-images-idx3-ubyte").write_bytes((folder / "t10k-labels-idx1-ubyte").read_bytes())
    with pytest.raises(DataError, match="magic number 2051"):
        load_mnist(folder, "test")
    (folder / "t10k-images-idx3-ubyte").write_bytes(raw)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(idx(np.zeros(2, np.uint8)))
    with pytest.raises(DataError, match="3 t10k images but 2 labels"):
        load_mnist(folder, "test")
    gz = (folder / "train-images-idx3-ubyte.gz").read_bytes()
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        load_mnist(folder, "train")
    with pytest.raises(DataError, match="no train-images-idx3-ubyte"):
        load_mnist(write_files(tmp_path / "empty", {"x": b""}), "train")


# ------------------------------------------------------------------------------------------- cache #

def test_cache_is_reused_rebuilt_when_damaged_and_invalidated_by_changes(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    files, expected = tiny_files()
    root = write_zip(tmp_path / "tiny.zip", {f"tiny-imagenet-200/{n}": b for n, b in files.items()})
    first = load_tiny_imagenet(root, "test")
    stems = sorted((tmp_path / "cache" / "data").iterdir())
    assert sorted(p.name.split(".", 1)[1] for p in stems) == ["boxes.npy", "images.npy", "json", "labels.npy"]
    decode = sources._decode_all
    monkeypatch.setattr(sources, "_decode_all", lambda *a: pytest.fail("decoded despite the cache"))
    second = load_tiny_imagenet(root, "test")
    for a, b in [(first.images, second.images), (first.labels, second.labels), (first.boxes, second.boxes)]:
        assert torch.equal(a, b)
    monkeypatch.setattr(sources, "_decode_all", decode)
    images_npy = next(p for p in stems if p.name.endswith(".images.npy"))
    damaged = bytearray(images_npy.read_bytes())
    damaged[-5] ^= 0xFF
    images_npy.write_bytes(bytes(damaged))
    with pytest.warns(UserWarning, match="damaged cache entry"):
        third = load_tiny_imagenet(root, "test")
    assert torch.equal(third.images, first.images)
    assert torch.equal(load_tiny_imagenet(root, "test").images, first.images)  # rebuilt: no warning now
    files["val/images/val_0.JPEG"] = png(np.zeros((8, 8, 3), np.uint8))
    write_zip(root, {f"tiny-imagenet-200/{n}": b for n, b in files.items()})
    os.utime(root, ns=(root.stat().st_atime_ns, root.stat().st_mtime_ns + 10**9))
    assert load_tiny_imagenet(root, "test").images[0].sum() == 0


def test_cache_off_and_unwritable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files, _ = folder_files()
    root = write_files(tmp_path / "d", files)
    load_folder(root, "train", cache=False)
    assert not (tmp_path / "cache").exists()
    (tmp_path / "not-a-folder").write_bytes(b"")
    monkeypatch.setenv("MULTIGLANCE_CACHE", str(tmp_path / "not-a-folder"))
    with pytest.warns(UserWarning, match="cannot write the data cache"):
        assert len(load_folder(root, "train")) == 6


# ------------------------------------------------------------------------------------- shared data #

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"the project's data copies are not at {SHARED}")


@needs_shared
def test_shared_mnist_test_split() -> None:
    split = load_mnist(SHARED / "mnist", "test")
    assert split.images.shape == (10000, 1, 28, 28)
    assert split.labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@needs_shared
def test_shared_tiny_imagenet_val() -> None:
    split = load_tiny_imagenet(SHARED / "tiny-imagenet-200.zip", "test")
    assert split.images.shape == (10000, 3, 64, 64) and len(split.classes) == 200
    assert split.labels.bincount().tolist() == [50] * 200 and split.boxes is not None
    b = split.boxes
    assert (b >= 0).all() and (b <= 64).all() and (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
    assert b[0].tolist() == [0, 32, 45, 63]  # val_0.JPEG  n03444034  0 32 44 62, ends made exclusive


@needs_shared
def test_shared_cifar10_test_from_jpeg_zip() -> None:
    split = load_cifar10(SHARED / "cifar10" / "cifar10-jpeg.zip", "test")
    assert split.images.shape == (10000, 3, 32, 32) and split.classes == list(CIFAR10_CLASSES)
    assert split.labels.bincount().tolist() == [1000] * 10
    with zipfile.ZipFile(SHARED / "cifar10" / "cifar10-jpeg.zip") as z:
        first = np.asarray(Image.open(io.BytesIO(z.read("test/airplane/0000.jpg"))).convert("RGB"))
    np.testing.assert_array_equal(split.images[0].numpy(), first.transpose(2, 0, 1))
