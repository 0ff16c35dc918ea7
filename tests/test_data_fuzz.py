"""Property-based tests of the loaders (data/sources.py) over mutated files: MNIST IDX files (raw and gzipped),
class-folder zips of images, and CIFAR-10 python batches. Each either loads a well-formed Split or raises a
one-line DataError; nothing else comes out, and a mutated pickle never runs code."""
from __future__ import annotations

import gzip
import io
import pickle
import struct
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from multiglance.data import Split
from multiglance.data.sources import load_cifar10, load_folder, load_mnist
from multiglance.errors import DataError

from conftest import examples

RNG = np.random.default_rng(0)
EDITS = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=6)
CUT = st.one_of(st.none(), st.integers(0, 1 << 20))


def mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    out = bytearray(data)
    for pos, value in edits:
        out[pos % len(out)] = value
    return bytes(out if cut is None else out[: cut % (len(out) + 1)])


def check(load, *args) -> None:
    """`load(*args)` gives a consistent Split or a one-line DataError."""
    try:
        split = load(*args)
    except DataError as e:
        assert "\n" not in str(e)
        return
    assert isinstance(split, Split) and len(split) == len(split.labels)
    assert split.labels.min() >= 0 and split.labels.max() < len(split.classes)


def mnist_bytes() -> dict[str, bytes]:
    files = {}
    for prefix, n in [("train", 4), ("t10k", 2)]:
        files[f"{prefix}-images-idx3-ubyte"] = struct.pack(">IIII", 2051, n, 28, 28) + bytes(
            RNG.integers(0, 256, n * 784, dtype=np.uint8))
        labels = RNG.integers(0, 10, n, dtype=np.uint8)
        files[f"{prefix}-labels-idx1-ubyte"] = struct.pack(">II", 2049, n) + bytes(labels)
    return files


MNIST = mnist_bytes()


@settings(max_examples=examples(80), deadline=None)
@given(which=st.sampled_from(sorted(MNIST)), gz=st.booleans(), edits=EDITS, cut=CUT)
def test_mutated_mnist_files(which: str, gz: bool, edits: list, cut: int | None) -> None:
    with tempfile.TemporaryDirectory() as d:
        for name, data in MNIST.items():
            data = gzip.compress(data, mtime=0) if gz else data
            if name == which:
                data = mutate(data, edits, cut)
            (Path(d) / (name + (".gz" if gz else ""))).write_bytes(data)
        check(load_mnist, d, "train" if which.startswith("train") else "test")


def png(seed: int, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    shape = (8, 8, 3) if mode == "RGB" else (8, 8)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8), mode).save(buf, "PNG")
    return buf.getvalue()


FOLDER = {f"{split}/{cls}/{i}.png": png(seed, "RGB" if i else "L")  # fixed seeds (str hashes change per process)
          for seed, (split, cls, i) in enumerate((s, c, i) for s in ("train", "test") for c in ("cat", "dog")
                                                 for i in range(2))}


@settings(max_examples=examples(60), deadline=None)
@given(which=st.sampled_from(sorted(FOLDER)), edits=EDITS, cut=CUT, zipped=st.booleans())
def test_mutated_images_in_a_class_folder(which: str, edits: list, cut: int | None, zipped: bool) -> None:
    files = dict(FOLDER, **{which: mutate(FOLDER[which], edits, cut)})
    with tempfile.TemporaryDirectory() as d:
        if zipped:
            root = Path(d) / "data.zip"
            with zipfile.ZipFile(root, "w") as z:
                for name, data in files.items():
                    z.writestr(name, data)
        else:
            root = Path(d)
            for name, data in files.items():
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_bytes(data)
        check(lambda: load_folder(root, which.split("/")[0], cache=False))


def cifar_batch(n: int = 3) -> bytes:
    return pickle.dumps({b"batch_label": b"x", b"labels": [int(v) for v in RNG.integers(0, 10, n)],
                         b"data": RNG.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"a.png"] * n},
                        protocol=2)


BATCH = cifar_batch()


@settings(max_examples=examples(120), deadline=None)
@given(edits=EDITS, cut=CUT, tail=st.binary(max_size=40))
def test_mutated_cifar_batches_never_run_code(edits: list, cut: int | None, tail: bytes) -> None:
    """Mutations, and random pickle opcodes spliced in (GLOBAL, REDUCE, ...): only DataError, and no global
    outside the unpickler's short list is ever looked up."""
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "cifar-10-batches-py"
        folder.mkdir()
        for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
            (folder / name).write_bytes(BATCH)
        blob = mutate(BATCH, edits, cut)
        cut_at = len(blob) // 2
        (folder / "test_batch").write_bytes(blob[:cut_at] + tail + blob[cut_at:] if tail else blob)
        check(lambda: load_cifar10(folder, "test", cache=False))


@settings(max_examples=examples(60), deadline=None)
@given(module=st.sampled_from(["os", "posix", "builtins", "subprocess", "numpy", "numpy.core.multiarray"]),
       name=st.sampled_from(["system", "eval", "exec", "getattr", "load", "frombuffer", "_reconstruct", "ndarray"]))
def test_any_other_global_in_a_cifar_batch_is_refused(module: str, name: str) -> None:
    allowed = {("numpy", "ndarray"), ("numpy.core.multiarray", "_reconstruct")}
    payload = f"\x80\x02c{module}\n{name}\nX\x04\x00\x00\x00echo\x85R.".encode("latin1")
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "cifar-10-batches-py"
        folder.mkdir()
        (folder / "test_batch").write_bytes(payload)
        try:
            load_cifar10(folder, "test", cache=False)
            raise AssertionError("loaded a hostile pickle")
        except DataError as e:
            if (module, name) not in allowed:
                assert f"refers to {module}.{name}" in str(e)
