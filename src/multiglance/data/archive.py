"""Safe reading of a folder, a .zip or a .tar[.gz|.bz2|.xz] as one `Tree` of regular files.

    with open_tree("tiny-imagenet-200.zip") as tree:
        tree = tree.find_root("wnids.txt")          # the same view for the zip and the unzipped folder
        wnids = tree.read("wnids.txt").decode().split()

Names are posix paths relative to the tree's root. Nothing is ever extracted to disk. An archive that
holds an absolute path, a `..` component, a link, a device or fifo, or an encrypted entry is refused as a
whole with a `DataError`. Decompression bombs are bounded: every read is capped at `max_entry_bytes`
(and, for zips, must match the size the entry declares), and all reads of one tree together at
`max_total_bytes`. Junk that archivers add (`__MACOSX/`, `._*` AppleDouble files, hidden files such as
`.DS_Store`) is left out of `names()`.
"""
from __future__ import annotations

import os
import re
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import IO, Iterable, Iterator

from ..errors import DataError

MAX_ENTRY_BYTES = 1 << 29  # 512 MiB: the largest single file a tree hands out (CIFAR batch: 31 MB)
MAX_TOTAL_BYTES = 1 << 35  # 32 GiB: all reads of one tree together (and the sum of a tar's member sizes)

_READ_ERRORS = (zipfile.BadZipFile, tarfile.TarError, zlib.error, OSError, EOFError, NotImplementedError,
                RuntimeError, ValueError)


def _clean_name(raw: str, where: str) -> str | None:
    """A safe posix relative name, None for a folder entry or junk; DataError for a hostile name."""
    name = raw.replace("\\", "/")
    if "\x00" in name:
        raise DataError(f"{where}: entry {raw!r} has a NUL byte in its name; the archive is corrupt or hostile")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise DataError(f"{where}: entry {raw!r} has an absolute path; refusing the archive, re-pack it "
                        "with relative paths")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DataError(f"{where}: entry {raw!r} climbs out of the archive with '..'; refusing it")
    if not parts or any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return None
    return "/".join(parts)


class _Backend:
    """One opened folder or archive: `entries` maps full name -> (handle, declared size, storage order)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, tuple[object, int, int]] = {}

    def _add(self, raw: str, handle: object, size: int, order: int) -> None:
        name = _clean_name(raw, str(self.path))
        if name is None:
            return
        if name in self.entries:
            raise DataError(f"{self.path}: holds two entries named {name!r}; re-pack it without duplicates")
        self.entries[name] = (handle, size, order)

    def open_read(self, handle: object, limit: int) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _FolderBackend(_Backend):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.real = os.path.realpath(path)
        self._walk(self.real, "", (self.real,))

    def _walk(self, folder: str, rel: str, ancestors: tuple[str, ...]) -> None:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            name = f"{rel}{e.name}"
            if e.is_symlink():  # followed only when it stays inside the folder
                target = os.path.realpath(e.path)
                if os.path.commonpath([target, self.real]) != self.real:
                    raise DataError(f"{self.path}: {name} is a link to {target}, outside the folder; "
                                    "copy the file in instead")
            if e.is_dir():
                real = os.path.realpath(e.path)
                if real not in ancestors and _clean_name(name, "") is not None:  # a link loop ends here
                    self._walk(e.path, name + "/", (*ancestors, real))
            elif e.is_file():
                self._add(name, e.path, e.stat().st_size, len(self.entries))
            elif not e.is_symlink() or os.path.exists(e.path):
                raise DataError(f"{self.path}: {name} is not a regular file (a device, fifo or socket); "
                                "remove it from the data folder")

    def open_read(self, handle: object, limit: int) -> bytes:
        with open(str(handle), "rb") as f:
            return f.read(limit + 1)


class _ArchiveBackend(_Backend):
    """An opened archive: `_scan` refuses what is unsafe and adds each file (the archive is closed again if it
    refuses); every read must hold the bytes its entry declares."""

    def __init__(self, path: Path, archive: zipfile.ZipFile | tarfile.TarFile) -> None:
        super().__init__(path)
        self.archive = archive
        try:
            self._scan()
        except BaseException:
            archive.close()
            raise

    def _scan(self) -> None:
        raise NotImplementedError

    def _open(self, handle: object) -> tuple[IO[bytes], str, int]:
        """The entry's stream, its name and the size it declares."""
        raise NotImplementedError

    def open_read(self, handle: object, limit: int) -> bytes:
        f, name, size = self._open(handle)
        with f:
            data = f.read(limit + 1)
        if len(data) != size:
            raise DataError(f"{self.path}: entry {name!r} declares {size} bytes but holds {len(data)}; the archive "
                            "is corrupt, get a fresh copy")
        return data

    def close(self) -> None:
        self.archive.close()


class _ZipBackend(_ArchiveBackend):
    def __init__(self, path: Path) -> None:
        super().__init__(path, zipfile.ZipFile(path))

    def _scan(self) -> None:
        path = self.path
        for info in self.archive.infolist():
            if not info.filename:  # a damaged central directory (zipfile's is_dir() would raise IndexError)
                raise DataError(f"{path}: an entry has an empty name; the archive is corrupt, get a fresh copy")
            mode = info.external_attr >> 16
            if info.create_system == 3 and stat.S_ISLNK(mode):
                raise DataError(f"{path}: entry {info.filename!r} is a symbolic link; refusing the archive, "
                                "re-pack it without links")
            if info.create_system == 3 and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise DataError(f"{path}: entry {info.filename!r} is a device, fifo or socket; refusing the "
                                "archive")
            if info.flag_bits & 0x1:
                raise DataError(f"{path}: entry {info.filename!r} is encrypted; decrypt the archive first")
            if not info.is_dir():
                self._add(info.filename, info, info.file_size, info.header_offset)

    def _open(self, handle: object) -> tuple[IO[bytes], str, int]:
        assert isinstance(handle, zipfile.ZipInfo) and isinstance(self.archive, zipfile.ZipFile)
        return self.archive.open(handle), handle.filename, handle.file_size


class _TarBackend(_ArchiveBackend):
    def __init__(self, path: Path, max_total: int) -> None:
        self.max_total = max_total  # the sum of the members' sizes `_scan` accepts
        super().__init__(path, tarfile.open(path, mode="r:*"))

    def _scan(self) -> None:
        path, total = self.path, 0
        assert isinstance(self.archive, tarfile.TarFile)
        for m in self.archive:  # each step skips the previous member's data: bound that work
            if m.issym() or m.islnk():
                raise DataError(f"{path}: entry {m.name!r} is a link; refusing the archive, re-pack it "
                                "without links")
            if m.ischr() or m.isblk() or m.isfifo():
                raise DataError(f"{path}: entry {m.name!r} is a device or fifo; refusing the archive")
            if m.isreg():
                total += m.size
                if total > self.max_total:
                    raise DataError(f"{path}: members add up to over {self.max_total} bytes; refusing a "
                                    "possible decompression bomb (raise max_total_bytes if it is genuine)")
                self._add(m.name, m, m.size, m.offset_data)
            elif not m.isdir():
                raise DataError(f"{path}: entry {m.name!r} is not a file or folder; refusing the archive")

    def _open(self, handle: object) -> tuple[IO[bytes], str, int]:
        assert isinstance(handle, tarfile.TarInfo) and isinstance(self.archive, tarfile.TarFile)
        f = self.archive.extractfile(handle)
        assert f is not None
        return f, handle.name, handle.size


class Tree:
    """A read-only view of the regular files under one folder of a folder or archive."""

    def __init__(self, backend: _Backend, prefix: str, max_entry_bytes: int, max_total_bytes: int,
                 counter: list[int] | None = None) -> None:
        self.path = backend.path  # the folder or archive that was opened
        self.prefix = prefix  # "" or "some/folder/": where this view is rooted inside it
        self._backend = backend
        self._names = [n[len(prefix):] for n in backend.entries if n.startswith(prefix)]
        self._max_entry, self._max_total = max_entry_bytes, max_total_bytes
        self._read = counter if counter is not None else [0]  # shared by all views of one backend

    def names(self) -> list[str]:
        """Posix paths of the regular files, relative to this view's root, in storage order."""
        return list(self._names)

    def __contains__(self, name: str) -> bool:
        return self.prefix + name in self._backend.entries

    def where(self, name: str) -> str:
        """`name` as a user can find it: 'data.zip:train/cat/1.jpg' or 'data/train/cat/1.jpg'."""
        sep = "/" if isinstance(self._backend, _FolderBackend) else ":"
        return f"{self.path}{sep}{self.prefix}{name}"

    def read(self, name: str) -> bytes:
        """The bytes of file `name`; DataError if it is missing, over a limit, or corrupt."""
        try:
            handle, size, _ = self._backend.entries[self.prefix + name]
        except KeyError:
            raise DataError(f"{self.where(name)} not found; check the data path and layout") from None
        if size > self._max_entry:
            raise DataError(f"{self.where(name)} is {size} bytes, over the limit of {self._max_entry}; "
                            "refusing a possible decompression bomb")
        try:
            data = self._backend.open_read(handle, self._max_entry)
        except DataError:
            raise
        except _READ_ERRORS as e:
            raise DataError(f"cannot read {self.where(name)}: {e}; the file or archive is corrupt") from e
        if len(data) > self._max_entry:
            raise DataError(f"{self.where(name)} is over the limit of {self._max_entry} bytes; refusing it")
        self._read[0] += len(data)
        if self._read[0] > self._max_total:
            raise DataError(f"{self.path}: over {self._max_total} bytes read in all; refusing a possible "
                            "decompression bomb")
        return data

    def iter_read(self, names: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        """(name, bytes) for each of `names`, in storage order (sequential, fast even for a .tar.gz)."""
        entries = self._backend.entries
        order = sorted(names, key=lambda n: entries[self.prefix + n][2] if self.prefix + n in entries else -1)
        for name in order:
            yield name, self.read(name)

    def find_root(self, *markers: str, max_depth: int = 3, hint: str = "") -> "Tree":
        """The view rooted at the shallowest folder holding any of `markers` (a file, or a folder if it
        ends in '/'), so a zip of `tiny-imagenet-200/...` reads like the folder itself."""
        files = set(self._names)
        dirs = {"/".join(n.split("/")[:i]) + "/" for n in self._names for i in range(1, n.count("/") + 1)}
        candidates = sorted({""} | {d for d in dirs if d.count("/") <= max_depth}, key=lambda d: (d.count("/"), d))
        for d in candidates:
            if any((d + m in dirs) if m.endswith("/") else (d + m in files) for m in markers):
                return Tree(self._backend, self.prefix + d, self._max_entry, self._max_total, self._read)
        raise DataError(f"{self.path}: no {' or '.join(markers)} found (looked {max_depth} folders deep)"
                        + (f"; {hint}" if hint else ""))

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> "Tree":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_tree(path: str | os.PathLike, *, max_entry_bytes: int = MAX_ENTRY_BYTES,
              max_total_bytes: int = MAX_TOTAL_BYTES) -> Tree:
    """Open a folder, .zip or .tar[.gz|.bz2|.xz] (recognised by content, not by name) as a `Tree`."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p} does not exist; check the data path")
    try:
        if p.is_dir():
            backend: _Backend = _FolderBackend(p)
        elif zipfile.is_zipfile(p):
            backend = _ZipBackend(p)
        elif tarfile.is_tarfile(p):
            backend = _TarBackend(p, max_total_bytes)
        else:
            raise DataError(f"{p} is not a folder, .zip or .tar archive; point at the data set's folder or archive")
    except DataError:
        raise
    except _READ_ERRORS as e:
        raise DataError(f"cannot read {p}: {e}; the archive is corrupt or truncated, get a fresh copy") from e
    return Tree(backend, "", max_entry_bytes, max_total_bytes)
