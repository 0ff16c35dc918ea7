"""The real data sets as `Split`s: CIFAR-10, Tiny ImageNet, MNIST and any class-folder tree.

Each loader is `(root, split) -> Split` with split "train" or "test", and reads a folder or an archive
directly (see `archive.open_tree`):

- `load_cifar10`: the official python batches (`cifar-10-batches-py/`, a folder holding it, or
  `cifar-10-python.tar.gz`), read with a restricted unpickler, or a class-folder tree/zip such as
  `cifar10-jpeg.zip` (`train/<class>/*.jpg`, `test/<class>/*.jpg`), classes in the official order.
- `load_folder`: `ROOT/train/CLASS/**/*.jpg|png|...` and `ROOT/test/...` (or `val/`), classes sorted; a tree
  with train/ alone or a flat `ROOT/CLASS/` tree tests on a seeded 10% held out of it (`classes.list_split`).
  EXIF orientation is applied (photos), as the streaming loader does.
- `load_tiny_imagenet`: the official `tiny-imagenet-200/` layout; "test" is its labelled `val/`.
  Boxes come from `*_boxes.txt` / `val_annotations.txt`, whose inclusive ends become exclusive.
- `load_mnist`: the official IDX files, gzipped or raw.

Loaded splits are cached as raw .npy files in `$MULTIGLANCE_CACHE` (default `~/.cache/multiglance`), keyed
by the source's path, size and mtime: CIFAR-10 train from the JPEG zip takes about 3 s cold, 0.3 s warm.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import struct
import warnings
import zlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import DataError
from . import Split
from .archive import MAX_ENTRY_BYTES, Tree, open_tree
from .classes import IMAGE_EXTENSIONS, Listing, list_split
from .classes import natural as _natural
from .images import decode_image, fit

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CACHE_VERSION = 1  # bump when a loader's output changes, so old cache entries are not reused
FOLDER_CACHE_VERSION = 2  # load_folder alone: 2 = EXIF orientation applied, test held out of train-only trees


def _decode_all(tree: Tree, names: Sequence[str], *, orient: bool = False,
                size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode `names` into one uint8 array (n, 3, H, W) and the (N,) bool mask of the names it holds: a file that
    does not decode is skipped with one warning naming it; every image must have the first one's size, or, with
    `size` = (H, W), is brought to it by the resize rule of data/stream.py (scale to cover, centre crop).
    `orient`: apply EXIF orientation (a user's photos; never for the published data sets)."""
    if not names:
        raise DataError(f"{tree.where('')}: no images found; check the data path and layout")
    index, out, first = {n: i for i, n in enumerate(names)}, None, ""
    keep = np.zeros(len(names), bool)
    for name, data in tree.iter_read(names):
        try:
            img = decode_image(data, tree.where(name), orient=orient)  # (h, w, 3)
            if size is not None:
                img = fit(img, *size)  # (H, W, 3)
        except DataError as e:
            warnings.warn(f"skipping {e}")
            continue
        if out is None:
            out, first = np.empty((len(names), 3, *img.shape[:2]), np.uint8), name  # (N, 3, H, W)
        elif img.shape[:2] != out.shape[2:]:
            (h, w), (eh, ew) = img.shape[:2], out.shape[2:]
            raise DataError(f"{tree.where(name)} is {w}x{h} but {tree.where(first)} is {ew}x{eh}; all images "
                            f"must have one size: resize them first (e.g. all to {ew}x{eh}), or stream them "
                            "resized to model.image_size with --set data.stream=true")
        out[index[name]] = img.transpose(2, 0, 1)
        keep[index[name]] = True
    if out is None:
        raise DataError(f"{tree.where('')}: none of the {len(names)} images decodes; check the files")
    return out[keep], keep


def _split(images: np.ndarray, labels: Sequence[int] | np.ndarray, classes: Sequence[str],
           boxes: np.ndarray | None = None) -> Split:
    return Split(torch.from_numpy(images), torch.as_tensor(np.asarray(labels, np.int64)), list(classes),
                 None if boxes is None else torch.from_numpy(np.asarray(boxes, np.int64)))


# ---------------------------------------------------------------------------------------------- cache #

def cache_dir() -> Path:
    """Where decoded data sets are cached: `$MULTIGLANCE_CACHE`, else `~/.cache/multiglance`."""
    return Path(os.environ.get("MULTIGLANCE_CACHE") or Path.home() / ".cache" / "multiglance")


def _fingerprint(root: Path) -> list:
    if root.is_file():
        st = root.stat()
        return [st.st_size, st.st_mtime_ns]
    h = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(root)):
        for f in sorted(files):
            st = os.stat(os.path.join(folder, f))
            h.update(f"{os.path.relpath(folder, root)}/{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return [h.hexdigest()]


def _cache_get(stem: str) -> Split | None:
    """The cached Split at `stem`, or None if absent or damaged in any way (it is then rebuilt)."""
    try:
        meta = json.loads(Path(f"{stem}.json").read_text())
        arrays = {k: np.load(f"{stem}.{k}.npy", allow_pickle=False) for k in meta["crc"]}
        if any(list(a.shape) != meta["shape"][k] or zlib.crc32(a.data) != meta["crc"][k] for k, a in arrays.items()):
            raise ValueError("the arrays do not match their record")
        split = _split(arrays["images"], arrays["labels"], meta["classes"], arrays.get("boxes"))
        split.skipped = int(meta.get("skipped", 0))
        return split
    except (FileNotFoundError, NotADirectoryError):
        return None
    except Exception as e:  # noqa: BLE001 - any damage means: rebuild
        warnings.warn(f"ignoring a damaged cache entry {stem} ({e}); rebuilding it")
        return None


def _cache_put(stem: str, split: Split) -> None:
    """Write .npy files, then the .json record that makes them valid; each atomically (tmp + rename)."""
    arrays = {"images": split.images.numpy(), "labels": split.labels.numpy()}
    if split.boxes is not None:
        arrays["boxes"] = split.boxes.numpy()
    meta = {"classes": split.classes, "skipped": split.skipped, "shape": {k: list(a.shape) for k, a in arrays.items()},
            "crc": {k: zlib.crc32(np.ascontiguousarray(a).data) for k, a in arrays.items()}}
    writes = [(f"{stem}.{k}.npy", lambda f, a=a: np.save(f, a)) for k, a in arrays.items()]
    writes.append((f"{stem}.json", lambda f: f.write(json.dumps(meta).encode())))
    try:
        os.makedirs(os.path.dirname(stem), exist_ok=True)
        for path, write in writes:
            tmp = f"{path}.{os.getpid()}.tmp"
            try:
                with open(tmp, "wb") as f:
                    write(f)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
    except OSError as e:
        warnings.warn(f"cannot write the data cache in {cache_dir()} ({e}); set MULTIGLANCE_CACHE to a "
                      "writable folder to load faster next time")


def _cached(kind: str, root: str | os.PathLike, split: str, build: Callable[[], Split], cache: bool) -> Split:
    """`build()`, or its earlier result from the disk cache when `root` has not changed since."""
    if not cache:
        return build()
    path = Path(root).resolve()
    key = json.dumps([CACHE_VERSION, kind, split, str(path), _fingerprint(path)])
    stem = str(cache_dir() / "data" / f"{kind}-{split}-{hashlib.sha256(key.encode()).hexdigest()[:20]}")
    result = _cache_get(stem)
    if result is None:
        result = build()
        _cache_put(stem, result)
    return result


# ------------------------------------------------------------------------------------- class folders #

def _class_listing(tree: Tree, split: str, classes: Sequence[str] | None = None, *,
                   holdout_test: bool = True) -> Listing:
    """`classes.list_split`, its notes given as warnings (empty class folders, classes a split lacks, a test
    split held out from train/)."""
    listing = list_split(tree, split, classes=classes, holdout_test=holdout_test)
    for note in listing.notes:
        warnings.warn(note)
    return listing


def _class_folders(tree: Tree, split: str, classes: Sequence[str] | None = None, *, folder: bool = True,
                   size: tuple[int, int] | None = None) -> Split:
    """The images of `split` of a class-folder tree (`classes.list_split`). `folder`: a user's tree (a test split
    is held out from train/ when there is none; EXIF orientation applied); False: a published data set's zip.
    `size`: (H, W) every image is brought to (`_decode_all`)."""
    listing = _class_listing(tree, split, classes, holdout_test=folder)
    images, keep = _decode_all(listing.tree, listing.files, orient=folder, size=size)
    split = _split(images, listing.labels[keep], listing.classes)
    split.skipped = int((~keep).sum())
    return split


def load_folder(root: str | os.PathLike, split: str, *, size: int | None = None, width: int | None = None,
                channels: int | None = None, cache: bool = True) -> Split:
    """A class-folder tree (folder, .zip or .tar): ROOT/train/CLASS/**/*.jpg and ROOT/test/ (or val/); a tree
    with train/ alone, or a flat ROOT/CLASS/ one, tests on a seeded 10% of its images (`classes.list_split`).
    `size` (and `width`): bring every image to size x width by the resize rule of data/stream.py, as streaming
    does; None: every image must have the first one's size. `channels` is the stream's option, unused here."""
    shape = None if size is None else (size, width or size)

    def build() -> Split:
        with open_tree(root) as tree:
            return _class_folders(tree, split, size=shape)
    if cache:  # the class-folder warnings, even when the pixels come from the cache (a listing: no decoding)
        with open_tree(root) as tree:
            _class_listing(tree, split)
    kind = f"folder-v{FOLDER_CACHE_VERSION}" + ("" if shape is None else f"-{shape[0]}x{shape[1]}")
    return _cached(kind, root, split, build, cache)


# -------------------------------------------------------------------------------------------- CIFAR-10 #

def _safe_dtype(spec: object, *args: object) -> np.dtype:
    spec = spec.decode() if isinstance(spec, bytes) else spec
    if spec not in ("u1", "i1", "b1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8"):
        raise DataError(f"the pickle asks for numpy dtype {spec!r}, which a CIFAR-10 batch never holds")
    return np.dtype(spec, *args)  # type: ignore[call-overload]


def _latin1(text: str, encoding: str = "utf-8") -> bytes:
    if encoding not in ("latin1", "latin-1"):
        raise DataError(f"the pickle asks for codec {encoding!r}, which a CIFAR-10 batch never uses")
    return text.encode("latin1")


def _reconstruct(cls: type, shape: tuple, typecode: bytes) -> np.ndarray:
    if cls is not np.ndarray or tuple(shape) != (0,):  # numpy always writes (ndarray, (0,), b'b')
        raise DataError(f"the pickle rebuilds an array oddly ({cls}, {shape}); refusing it")
    return np.ndarray((0,), np.uint8)  # __setstate__ then gives it its real shape, dtype and bytes


def _frombuffer(buf: bytes, dtype: object, shape: tuple, order: str) -> np.ndarray:
    dtype = dtype if isinstance(dtype, np.dtype) else _safe_dtype(dtype)
    return np.frombuffer(buf, dtype).reshape(shape, order=order)  # type: ignore[call-overload]


_PICKLE_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): _safe_dtype, ("_codecs", "encode"): _latin1,
    **{(f"numpy.{m}.multiarray", "_reconstruct"): _reconstruct for m in ("core", "_core")},
    **{(f"numpy.{m}.numeric", "_frombuffer"): _frombuffer for m in ("core", "_core")},
}


class _BatchUnpickler(pickle.Unpickler):
    """Rebuilds only dicts, lists, strings, numbers and plain numpy arrays: nothing can run code."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _PICKLE_GLOBALS:
            raise DataError(f"the pickle refers to {module}.{name}, which a CIFAR-10 batch never does; "
                            "refusing to load it (get the official cifar-10-python.tar.gz)")
        return _PICKLE_GLOBALS[(module, name)]


def _unpickle(tree: Tree, name: str) -> dict[str, object]:
    data = tree.read(name)
    try:
        obj = _BatchUnpickler(io.BytesIO(data), encoding="bytes").load()
    except DataError as e:
        raise DataError(f"{tree.where(name)}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a corrupt pickle raises many types
        first = (str(e).strip().splitlines() or [""])[0][:120]  # some pickle errors span several lines
        raise DataError(f"{tree.where(name)}: not a CIFAR-10 python batch ({type(e).__name__}: {first})") from e
    if not isinstance(obj, dict):
        raise DataError(f"{tree.where(name)}: not a CIFAR-10 python batch (holds a {type(obj).__name__})")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _cifar_batches(tree: Tree, split: str) -> Split:
    classes = list(CIFAR10_CLASSES)
    if "batches.meta" in tree:
        names = _unpickle(tree, "batches.meta").get("label_names", classes)
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]  # type: ignore[union-attr]
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels = [], []
    for f in files:
        batch = _unpickle(tree, f)
        data, lab = batch.get("data"), batch.get("labels")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise DataError(f"{tree.where(f)}: 'data' is not a uint8 array (N, 3072); the batch is corrupt")
        try:
            lab = np.asarray(lab, dtype=np.int64).reshape(-1)
        except (TypeError, ValueError):
            raise DataError(f"{tree.where(f)}: 'labels' is not a list of integers; the batch is corrupt") from None
        if len(lab) != len(data) or lab.min(initial=0) < 0 or lab.max(initial=0) >= len(classes):
            raise DataError(f"{tree.where(f)}: {len(lab)} labels in 0..{len(classes) - 1} expected for "
                            f"{len(data)} images; the batch is corrupt")
        images.append(data.reshape(-1, 3, 32, 32))  # (n, 3, 32, 32): rows are R, G, B planes
        labels.append(lab)
    return _split(np.concatenate(images), np.concatenate(labels), classes)


def load_cifar10(root: str | os.PathLike, split: str, *, cache: bool = True) -> Split:
    """CIFAR-10 from the official python batches (folder or .tar.gz) or a class-folder tree or zip."""
    path = Path(root)
    if (path / "cifar-10-python.tar.gz").is_file() and not any(path.glob("*/data_batch_1")):
        path = path / "cifar-10-python.tar.gz"

    def build() -> Split:
        with open_tree(path) as tree:
            marker = "data_batch_1" if split == "train" else "test_batch"
            try:
                batches = tree.find_root(marker)
            except DataError:
                return _class_folders(tree, split, CIFAR10_CLASSES, folder=False)
            return _cifar_batches(batches, split)
    return _cached("cifar10", path, split, build, cache)


# --------------------------------------------------------------------------------------- Tiny ImageNet #

def _rows(tree: Tree, name: str, fields: int) -> list[list[str]]:
    rows = []
    for i, line in enumerate(tree.read(name).decode("utf-8", "replace").splitlines(), 1):
        if line.strip():
            row = line.split()
            if len(row) != fields or not all(v.lstrip("-").isdigit() for v in row[fields - 4:]):
                raise DataError(f"{tree.where(name)} line {i}: expected {fields} fields ending in 4 integers, "
                                f"got {line!r}")
            rows.append(row)
    return rows


def _tiny(root: str | os.PathLike, split: str) -> Split:
    with open_tree(root) as top:
        tree = top.find_root("wnids.txt", hint="expected the official tiny-imagenet-200/ layout")
        wnids = tree.read("wnids.txt").decode("utf-8", "replace").split()
        if not wnids or len(set(wnids)) != len(wnids):
            raise DataError(f"{tree.where('wnids.txt')}: expected one unique class id per line")
        label_of = {w: i for i, w in enumerate(wnids)}
        items: list[tuple[str, int, list[int]]] = []  # (file, label, inclusive box)
        if split == "train":
            by_class: dict[str, list[str]] = {}  # wnid -> train/<wnid>/images/* files
            for n in tree.names():
                parts = n.split("/")
                if len(parts) == 4 and parts[0] == "train" and parts[2] == "images":
                    by_class.setdefault(parts[1], []).append(n)
            for label, wnid in enumerate(wnids):
                boxes_txt = f"train/{wnid}/{wnid}_boxes.txt"
                table = {r[0]: [int(v) for v in r[1:]] for r in _rows(tree, boxes_txt, 5)}
                for n in sorted(by_class.get(wnid, []), key=_natural):
                    if n.lower().endswith(IMAGE_EXTENSIONS):
                        if n.rsplit("/", 1)[1] not in table:
                            raise DataError(f"{tree.where(boxes_txt)} has no box for {n}; the layout is damaged")
                        items.append((n, label, table[n.rsplit("/", 1)[1]]))
        else:
            for file, wnid, *box in _rows(tree, "val/val_annotations.txt", 6):
                if wnid not in label_of:
                    raise DataError(f"{tree.where('val/val_annotations.txt')}: class {wnid} of {file} is not "
                                    "in wnids.txt")
                items.append((f"val/images/{file}", label_of[wnid], [int(v) for v in box]))
        names = [n for n, _, _ in items]
        images, keep = _decode_all(tree, names)  # (N, 3, 64, 64), grayscale expanded to RGB
        items = [item for item, k in zip(items, keep) if k]
    h, w = images.shape[2:]
    boxes = np.asarray([b for _, _, b in items], np.int64).reshape(-1, 4) + [0, 0, 1, 1]  # exclusive ends
    return _split(images, [label for _, label, _ in items], wnids, np.clip(boxes, 0, [w, h, w, h]))


def load_tiny_imagenet(root: str | os.PathLike, split: str, *, cache: bool = True) -> Split:
    """Tiny ImageNet (official layout, folder or .zip): "train" from train/, "test" = the labelled val/."""
    return _cached("tiny-imagenet", root, split, lambda: _tiny(root, split), cache)


# ---------------------------------------------------------------------------------------------- MNIST #

def _idx(tree: Tree, stem: str, magic: int) -> np.ndarray:
    """The array in IDX file `stem` (raw or .gz, '-idx' or '.idx' spelling) whose magic number is `magic`."""
    wanted = {stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"}
    hits = sorted((n for n in tree.names() if n.rsplit("/", 1)[-1] in wanted), key=lambda n: n.count("/"))
    if not hits:
        raise DataError(f"{tree.path}: no {stem}[.gz] found; point at the folder with the 4 official MNIST files")
    name, data = hits[0], tree.read(hits[0])
    if data[:2] == b"\x1f\x8b":
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as g:
                data = g.read(MAX_ENTRY_BYTES + 1)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{tree.where(name)}: corrupt or truncated gzip ({e}); get a fresh copy") from e
        if len(data) > MAX_ENTRY_BYTES:
            raise DataError(f"{tree.where(name)}: unpacks to over {MAX_ENTRY_BYTES} bytes; refusing a possible bomb")
    ndim = magic & 0xFF
    if len(data) < 4 + 4 * ndim or struct.unpack(">I", data[:4])[0] != magic:
        found = struct.unpack(">I", data[:4])[0] if len(data) >= 4 else None
        raise DataError(f"{tree.where(name)}: not an IDX file with magic number {magic} (found {found}); "
                        "is it the right file?")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = data[4 + 4 * ndim:]
    if len(body) != int(np.prod(dims)):
        raise DataError(f"{tree.where(name)}: header says {'x'.join(map(str, dims))} = {int(np.prod(dims))} "
                        f"bytes of data but the file has {len(body)}; it is truncated or damaged, get a fresh copy")
    return np.frombuffer(body, np.uint8).reshape(dims)


def load_mnist(root: str | os.PathLike, split: str, *, cache: bool = True) -> Split:
    """MNIST from the official IDX files (raw or .gz) in a folder or archive: images (N, 1, 28, 28).
    `cache` is accepted like the other loaders' but unused: the IDX files read in well under a second."""
    prefix = "train" if split == "train" else "t10k"
    with open_tree(root) as tree:
        images = _idx(tree, f"{prefix}-images-idx3-ubyte", 2051)  # (N, 28, 28)
        labels = _idx(tree, f"{prefix}-labels-idx1-ubyte", 2049)  # (N,)
    if len(images) != len(labels) or labels.max(initial=0) > 9:
        raise DataError(f"{root}: {len(images)} {prefix} images but {len(labels)} labels, largest "
                        f"{labels.max(initial=0)} (must be one label 0-9 per image); the files do not belong together")
    return _split(images[:, None].copy(), labels, [str(d) for d in range(10)])
