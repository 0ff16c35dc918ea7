"""Class-folder data that streams: files are decoded a batch at a time, never the whole split at once.

    split = open_stream("photos.zip", "train", size=256)     # a StreamSplit: labels, classes, files; no pixels
    for index, images, labels in loader(split, torch.randperm(len(split)), 64, workers=4):
        ...  # images (b', C, 256, 256) uint8, decoded in worker processes; b' < 64 when files were unreadable

Layout as `sources.load_folder`, both read through `classes.list_split`: a folder, .zip or plain .tar holding
ROOT/train/CLASS/**/*.jpg|png|... and ROOT/test/ (or val/), classes sorted from train/; a tree with train/ alone,
or a flat ROOT/CLASS/ tree, tests on a seeded 10% held out of it, with the same warnings. A compressed tar is
refused (streaming reads files in any order, which a .tar.gz can only do by decompressing from its start every
time). Per-file limits
(`images.MAX_FILE_BYTES`, `images.pixel_limit()`) hold as for in-memory data; the archive's all-reads total does
not (a stream reads every file again each epoch).

Resize rule, the same for every file: EXIF orientation applied; converted to the split's channels as
`images.decode_image` does (grayscale expanded, RGBA composited on black, CMYK / palette converted, 16-bit
scaled to 8 bits); then scaled, bilinear with antialiasing (Pillow), by the one factor that makes the image
just cover H x W (the shorter side for a square target), and centre-cropped to (H, W): one `Image.resize`
with a sub-pixel crop box. A JPEG much larger than the target is first decoded at 1/2, 1/4 or 1/8 scale
(`Image.draft`, never below the covering size): a 1024x1024 JPEG (640 kB) -> 256x256 takes about 6 ms
instead of 12-15 ms on one CPU core, and 64 of them -> 512x512 stream at 90-170 images/s with 0-2 workers.

A file that cannot be decoded is dropped from its batch (`keep` False in `take`), warned about once per file
(`skipping WHERE: REASON`, in the main process) and counted in `split.skipped`; the batch is still yielded,
possibly with b' = 0 images, so batch numbers stay aligned for an exact resume with `start_batch`.
"""
from __future__ import annotations

import io
import os
import warnings
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import DataError
from .archive import open_tree
from .batches import quiet_worker
from .classes import list_split
from .images import MAX_FILE_BYTES, decode_image, fit
from .synthetic_folders import make_shape_folder, shape_image  # noqa: F401 - re-exported (moved there)

STREAM_BUDGET_BYTES = 2 << 30  # `should_stream`: stream when the decoded uint8 splits would exceed 2 GiB
_GRAY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"(\xb5/\xfd")  # gzip, bzip2, xz, zstd


# -------------------------------------------------------------------------------------- decoding #

def decode_fitted(data: bytes, name: str, *, height: int, width: int, channels: int = 3, draft: bool = True,
                  max_pixels: int | None = None) -> np.ndarray:
    """Image file bytes -> uint8 (height, width, channels) by the module's resize rule; DataError if unreadable.
    `max_pixels`: refuse larger images (default: `images.pixel_limit()`, checked before decoding); `draft`:
    decode a large JPEG at a reduced scale that still covers the target."""
    pixels = decode_image(data, name, "L" if channels == 1 else "RGB", max_pixels=max_pixels, orient=True,
                          cover=(height, width) if draft else None)  # (h, w, C)
    return fit(pixels, height, width)


# ----------------------------------------------------------------------------------------- files #

class _Reader:
    """Reads the files of one folder or archive by name. Each process opens its own archive handle, lazily:
    an open ZipFile shared across fork would share its file position with the parent's."""

    def __init__(self, path: Path, prefix: str, kind: str) -> None:
        self.path, self.prefix, self.kind = path, prefix, kind  # kind: "folder", "zip" or "tar"
        self._tree, self._pid = None, -1

    def where(self, name: str) -> str:
        return f"{self.path}{'/' if self.kind == 'folder' else ':'}{self.prefix}{name}"

    def read(self, name: str) -> bytes:
        if self.kind == "folder":
            path = os.path.join(self.path, self.prefix + name)
            try:
                size = os.stat(path).st_size
                if size > MAX_FILE_BYTES:
                    raise DataError(f"{self.where(name)}: {size} bytes, over the limit of {MAX_FILE_BYTES} for "
                                    "one image; resize it first")
                with open(path, "rb") as f:
                    return f.read(MAX_FILE_BYTES + 1)
            except OSError as e:
                raise DataError(f"{self.where(name)}: cannot read the file ({e.strerror}); check it") from e
        if self._tree is None or self._pid != os.getpid():
            self._tree = open_tree(self.path, max_entry_bytes=MAX_FILE_BYTES, max_total_bytes=1 << 62)
            self._pid = os.getpid()
        return self._tree.read(self.prefix + name)

    def close(self) -> None:
        if self._tree is not None and self._pid == os.getpid():
            self._tree.close()
        self._tree = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_tree": None, "_pid": -1}


def _scan(root: str | os.PathLike, split: str, classes: Sequence[str] | None = None, *, warn: bool = True):
    """(reader, files, labels, classes) of `split` of a class-folder tree: `classes.list_split`, as the in-memory
    loader reads it (a test split held out of a tree that has none; the same warnings, given when `warn`)."""
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; use 'train' or 'test'")
    path = Path(root)
    if not path.exists():
        raise DataError(f"{path} does not exist; check the data path")
    kind = "folder" if path.is_dir() else "zip" if zipfile.is_zipfile(path) else "tar"
    if kind == "tar":
        with open(path, "rb") as f:
            if f.read(6).startswith(_COMPRESSED):
                raise DataError(f"{path} is a compressed archive, which cannot be read in random order fast; "
                                "decompress it to a plain .tar (e.g. gunzip -k) or unpack it into a folder")
    with open_tree(path, max_entry_bytes=MAX_FILE_BYTES, max_total_bytes=1 << 62) as top:
        listing = list_split(top, split, classes=classes)
    for note in listing.notes if warn else ():
        warnings.warn(note, stacklevel=3)
    reader = _Reader(path, listing.tree.prefix, kind)
    return reader, listing.files, torch.from_numpy(listing.labels), listing.classes


def _sample_channels(reader: _Reader, files: Sequence[str], samples: int = 16) -> int:
    """1 if every one of `samples` evenly spaced files that opens is stored grayscale, else 3 (headers only)."""
    picks = sorted({int(i) for i in np.linspace(0, len(files) - 1, min(samples, len(files)))}) if files else []
    gray = []
    for i in picks:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(io.BytesIO(reader.read(files[i]))) as img:
                    gray.append(img.mode in _GRAY_MODES)
        except Exception:  # noqa: BLE001 - an unreadable file says nothing about the others
            continue
    return 1 if gray and all(gray) else 3


def median_size(root: str | os.PathLike, samples: int = 64) -> tuple[int, int]:
    """The median (height, width) of up to `samples` evenly spaced training images, as displayed (EXIF
    orientation applied), from their headers alone; DataError if none opens."""
    reader, files, _, _ = _scan(root, "train", warn=False)
    picks = sorted({int(i) for i in np.linspace(0, len(files) - 1, min(samples, len(files)))}) if files else []
    sizes = []
    try:
        for i in picks:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    with Image.open(io.BytesIO(reader.read(files[i]))) as img:
                        w, h = img.size
                        turned = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientation: a quarter turn
                sizes.append((w, h) if turned else (h, w))
            except Exception:  # noqa: BLE001 - an unreadable file is skipped when training reaches it
                continue
    finally:
        reader.close()
    if not sizes:
        raise DataError(f"none of the sampled training images of {root} opens; check the files")
    hs, ws = zip(*sizes)
    return int(np.median(hs)), int(np.median(ws))


# ------------------------------------------------------------------------------------------ split #

class StreamSplit:
    """A labelled split whose images stay in their files until `take` or `loader` decodes them."""

    boxes = None  # class folders never know where the object is

    def __init__(self, *, root: str | os.PathLike, split: str, size: int, width: int | None = None,
                 channels: int | None = None, classes: Sequence[str] | None = None) -> None:
        if int(size) < 1 or (width is not None and int(width) < 1):
            raise DataError(f"image size must be at least 1 pixel, got {size}x{width}; set model.image_size "
                            "(and model.image_width for non-square images)")
        if channels not in (None, 1, 3):
            raise DataError(f"channels must be 1 or 3 (or unset to detect), got {channels!r}")
        self._reader, self.files, self.labels, self.classes = _scan(root, split, classes)
        self.root, self.split = Path(root), split
        self.height, self.width = int(size), int(width if width is not None else size)
        self.channels = channels if channels is not None else _sample_channels(self._reader, self.files)
        self._bad: set[str] = set()  # files found undecodable so far, in this process

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.channels, self.height, self.width

    @property
    def skipped(self) -> int:
        """How many of this split's files were found undecodable so far in this process."""
        return len(self._bad)

    def where(self, i: int) -> str:
        """File `i` as a user finds it: 'photos.zip:train/cat/1.jpg' or 'photos/train/cat/1.jpg'."""
        return self._reader.where(self.files[i])

    def subset(self, index: torch.Tensor | slice | Sequence[int]) -> "StreamSplit":
        """The split over files `index` (labels follow); shares nothing decoded, counts its own skips."""
        index = torch.arange(len(self))[index] if isinstance(index, slice) else torch.as_tensor(index)
        index = index.nonzero()[:, 0] if index.dtype == torch.bool else index.long().reshape(-1)
        out = object.__new__(StreamSplit)
        out.__dict__.update(self.__dict__)
        out.files = [self.files[i] for i in index.tolist()]
        out.labels, out._bad = self.labels[index], set()
        return out

    def decode(self, i: int) -> torch.Tensor:
        """File `i` as uint8 (C, H, W); DataError if it cannot be read or decoded."""
        data = self._reader.read(self.files[i])
        pixels = decode_fitted(data, self.where(i), height=self.height, width=self.width, channels=self.channels)
        chw = np.ascontiguousarray(pixels.transpose(2, 0, 1))  # (C, H, W)
        return torch.from_numpy(chw if chw.flags.writeable else chw.copy())  # Pillow's arrays are read-only

    def reason(self, i: int, error: DataError) -> str:
        """`error`'s message without the file name it starts with."""
        msg, where = str(error), self.where(i)
        return msg[len(where) + 2:] if msg.startswith(where + ": ") else msg

    def note_skipped(self, failed: Sequence[tuple[int, str]]) -> None:
        """Count and warn once about each (file index, reason) that could not be decoded."""
        for i, reason in failed:
            if self.files[i] not in self._bad:
                self._bad.add(self.files[i])
                warnings.warn(f"skipping {self.where(i)}: {reason}", stacklevel=3)

    def take(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode files `index` (b,) here, in order: (uint8 (b', C, H, W), keep (b,) bool); unreadable ones dropped."""
        index = torch.as_tensor(index).long().reshape(-1)
        keep = torch.zeros(index.shape[0], dtype=torch.bool)
        out, failed = [], []
        for k, i in enumerate(index.tolist()):
            try:
                out.append(self.decode(i))
                keep[k] = True
            except DataError as e:
                failed.append((i, self.reason(i, e)))
        self.note_skipped(failed)
        images = torch.stack(out) if out else torch.empty((0, *self.shape), dtype=torch.uint8)  # (b', C, H, W)
        return images, keep

    def close(self) -> None:
        self._reader.close()


# ----------------------------------------------------------------------------------------- loader #

class _Files(torch.utils.data.Dataset):
    """Items are single files: (index, uint8 (C, H, W) or None, reason or None). Holds no pixels."""

    def __init__(self, split: StreamSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return i, self.split.decode(i), None
        except DataError as e:
            return i, None, self.split.reason(i, e)

    def collate(self, items: list) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, str]]]:
        ok = [(i, x) for i, x, _ in items if x is not None]
        index = torch.tensor([i for i, _ in ok], dtype=torch.int64)  # (b',)
        images = (torch.stack([x for _, x in ok]) if ok
                  else torch.empty((0, *self.split.shape), dtype=torch.uint8))  # (b', C, H, W)
        return index, images, [(i, reason) for i, x, reason in items if x is None]


class StreamLoader:
    """Iterator of (index (b',), uint8 images (b', C, H, W), labels (b',)): the batches order[k*bs:(k+1)*bs]
    for k = start_batch, ..., less the files that failed to decode; `len` is the number of batches left.
    At most 2 * workers + 1 batches are decoded at any time (DataLoader's prefetch of 2 per worker)."""

    def __init__(self, split: StreamSplit, order: torch.Tensor, batch_size: int, *, workers: int = 2,
                 drop_last: bool = True, start_batch: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        order = torch.as_tensor(order).long().reshape(-1)
        n = len(order) // batch_size if drop_last else -(-len(order) // batch_size)
        self.batches = [order[k * batch_size:(k + 1) * batch_size].tolist() for k in range(start_batch, n)]
        self.split, self.workers, self._it = split, workers, None

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> "StreamLoader":
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._it is None:
            if not self.batches:
                raise StopIteration
            files = _Files(self.split)
            self._it = iter(torch.utils.data.DataLoader(
                files, batch_sampler=self.batches, num_workers=self.workers, collate_fn=files.collate,
                pin_memory=False, persistent_workers=False, worker_init_fn=quiet_worker))
        index, images, failed = next(self._it)
        self.split.note_skipped(failed)  # in the main process: workers' warnings may never reach the user
        return index, images, self.split.labels[index]


def loader(split: StreamSplit, order: torch.Tensor, batch_size: int, *, workers: int = 2, drop_last: bool = True,
           start_batch: int = 0) -> StreamLoader:
    """Batches of `split` in `order` (N,), decoded by `workers` processes (0: here); see `StreamLoader`."""
    return StreamLoader(split, order, batch_size, workers=workers, drop_last=drop_last, start_batch=start_batch)


# -------------------------------------------------------------------------------------- entry points #

def open_stream(root: str | os.PathLike, split: str, *, size: int, width: int | None = None,
                channels: int | None = None) -> StreamSplit:
    return StreamSplit(root=root, split=split, size=size, width=width, channels=channels)


def load_folder_stream(root: str | os.PathLike | None, split: str, *, size: int | None = None,
                       width: int | None = None, channels: int | None = None, cache: bool = True) -> StreamSplit:
    """The registry's "folder-stream": `open_stream` (`cache` is accepted like other loaders' and unused)."""
    if root is None:
        raise DataError("data set 'folder-stream' needs a path: pass --data PATH (ROOT/train/CLASS/*.jpg)")
    if size is None:
        raise DataError("data set 'folder-stream' needs an image size: set model.image_size (e.g. 256; "
                        "model.image_width too for non-square images)")
    return open_stream(root, split, size=size, width=width, channels=channels)


def count_images(root: str | os.PathLike, split: str) -> int:
    """How many image files `split` of a class-folder tree holds (no image is opened)."""
    return len(_scan(root, split, warn=False)[1])


def detect_channels(root: str | os.PathLike) -> int:
    """1 if the sampled training images are all stored grayscale, else 3 (reads a few headers only)."""
    reader, files, _, _ = _scan(root, "train", warn=False)
    try:
        return _sample_channels(reader, files)
    finally:
        reader.close()


def should_stream(root: str | os.PathLike, size: int | None, *, width: int | None = None, channels: int = 3,
                  budget_bytes: int = STREAM_BUDGET_BYTES) -> bool:
    """True when train + test decoded as uint8 (N, C, H, W) would exceed `budget_bytes` (2 GiB by default).
    `size` None means the images' own size, read from the first training image's header."""
    reader, files, _, _ = _scan(root, "train", warn=False)
    n = len(files)
    try:
        n += count_images(root, "test")
    except DataError:
        pass  # no test split
    if size is None:
        with Image.open(io.BytesIO(reader.read(files[0]))) as img:
            w, h = img.size
    else:
        h, w = size, width if width is not None else size
    reader.close()
    return n * channels * h * w > budget_bytes
