"""`multiglance data download {cifar10,tiny-imagenet,mnist} --root DIR`: the official archives from their
official addresses, checked, resumable, atomic, then unpacked safely.

    multiglance data download mnist --root data          # data/mnist/*.gz (read as they are)
    multiglance data download cifar10 --root data        # data/cifar-10-batches-py/
    multiglance data download tiny-imagenet --root data  # data/tiny-imagenet-200/

Each file is fetched with `urllib` into `NAME.part` (an interrupted download continues from where it
stopped with an HTTP Range request), its size and SHA-256 checked, and only then renamed to `NAME`: a
failed or cut download never leaves a file that looks complete, and a `.part` that fails its checksum is
deleted (it would never become right). Archives are unpacked through `archive.open_tree`, which refuses
absolute paths, `..`, links and devices and bounds decompression bombs, into a temporary folder that is
renamed into place when every file is out. `--url-base` fetches the same file names from a mirror.

Checksums: CIFAR-10's SHA-256 and size are the published ones; MNIST's are those of the official files
(bit-exact copies in the project's shared data, whose md5s match the published ones). For Tiny ImageNet no
SHA-256 is published: its md5 (as used by several public loaders) is checked instead, then the zip's own
CRC-32 of every entry and the official layout.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError, UserError
from ..files import fsync_folder
from .archive import open_tree


@dataclass(frozen=True)
class Remote:
    name: str  # file name, also under --url-base
    mirrors: tuple[str, ...]  # base addresses, tried in order
    size: int | None  # bytes; None when unknown
    sha256: str | None = None
    md5: str | None = None  # only where no SHA-256 is known


@dataclass(frozen=True)
class Dataset:
    files: tuple[Remote, ...]
    folder: str  # under --root: where the files go
    unpack: str | None  # the folder an archive unpacks to (checked to exist after), None to keep files as they are
    use: str  # how to train on it, for the closing message


MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
DATASETS: dict[str, Dataset] = {
    "cifar10": Dataset(
        (Remote("cifar-10-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/",), 170498071,
                "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"),),
        "", "cifar-10-batches-py", "--set data.name=cifar10 --data {root}/cifar-10-batches-py"),
    "mnist": Dataset(tuple(Remote(n, MNIST_MIRRORS, size, sha) for n, size, sha in [
        ("train-images-idx3-ubyte.gz", 9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        ("train-labels-idx1-ubyte.gz", 28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        ("t10k-images-idx3-ubyte.gz", 1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        ("t10k-labels-idx1-ubyte.gz", 4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6")]),
        "mnist", None, "--set data.name=mnist --data {root}/mnist"),
    "tiny-imagenet": Dataset(
        (Remote("tiny-imagenet-200.zip", ("http://cs231n.stanford.edu/",), None,
                md5="90528d7ca1a48142e341f4ef8d21d0de"),),
        "", "tiny-imagenet-200", "--set data.name=tiny-imagenet --data {root}/tiny-imagenet-200"),
}
CHUNK = 1 << 20
RETRY_WAIT = 0.5  # seconds before the first retry, doubled for each next one (at most 10)
USER_AGENT = "multiglance-data-download"
_RETRYABLE = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, socket.timeout)


def _digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, remote: Remote) -> str | None:
    """None if `path` is `remote`'s file (size, SHA-256 or md5, zip CRCs); otherwise what is wrong."""
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        return f"{size} bytes instead of {remote.size}"
    for algorithm in ("sha256", "md5"):
        expected = getattr(remote, algorithm)
        if expected and (found := _digest(path, algorithm)) != expected:
            return f"{algorithm} {found} instead of {expected}"
    if remote.name.endswith(".zip"):
        try:
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as e:
            return f"not a readable zip ({e})"
        if bad is not None:
            return f"entry {bad!r} fails its CRC check"
    return None


def fetch(url: str, dest: Path, remote: Remote, *, retries: int = 3, timeout: float = 60.0,
          progress: bool = True) -> Path:
    """Download `url` to `dest` through `dest.part`, resuming, then check it and rename it into place."""
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _transfer(url, part, remote, timeout, progress)
            break
        except _RETRYABLE as e:
            if isinstance(e, urllib.error.HTTPError) and e.code < 500 and e.code not in (408, 429):
                raise DataError(f"{url}: the server answered {e.code} {e.reason}; check the address "
                                "(--url-base)") from None
            if attempt == retries:
                raise DataError(f"{url}: download failed after {retries + 1} tries ({e}); run the same command "
                                f"again to continue from {part.stat().st_size if part.exists() else 0} bytes") from None
            time.sleep(min(RETRY_WAIT * 2 ** attempt, 10))
    problem = verify(part, remote)
    if problem:
        part.unlink()
        raise DataError(f"{url}: the downloaded file is not the official one ({problem}); it was deleted. Run "
                        "the command again; if it fails again the server or mirror serves another file")
    os.replace(part, dest)
    fsync_folder(dest.parent)
    return dest


def _transfer(url: str, part: Path, remote: Remote, timeout: float, progress: bool) -> None:
    """Append the missing bytes of `url` to `part` (Range request); raises a _RETRYABLE error if cut short."""
    have = part.stat().st_size if part.exists() else 0
    if remote.size is not None and have > remote.size:
        part.unlink()
        have = 0
    if remote.size is not None and have == remote.size:
        return
    headers = {"User-Agent": USER_AGENT, **({"Range": f"bytes={have}-"} if have else {})}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing past what we have: the part is whole (verify decides)
            return
        raise
    with response:
        if have and response.status != 206:  # the server ignores Range: start again
            have = 0
        elif have and not response.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
            raise http.client.HTTPException(f"the server resumed at the wrong place "
                                            f"({response.headers.get('Content-Range')!r}, wanted byte {have})")
        length = response.headers.get("Content-Length")
        expected = have + int(length) if length is not None and length.isdigit() else remote.size
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=expected, initial=have, unit="B", unit_scale=True, desc=part.name[:-5], leave=False,
                       file=sys.stderr)
        try:
            with open(part, "ab" if have else "wb") as f:
                got = have
                while block := response.read(CHUNK):
                    got += len(block)
                    if remote.size is not None and got > remote.size:
                        raise DataError(f"{url}: the server sends more than the {remote.size} bytes of the "
                                        "official file; check the address (--url-base)")
                    f.write(block)
                    if bar is not None:
                        bar.update(len(block))
                f.flush()
                os.fsync(f.fileno())
        finally:
            if bar is not None:
                bar.close()
        if expected is not None and got < expected:
            raise http.client.IncompleteRead(b"", expected - got)


def unpack(archive: Path, dest: Path, folder: str) -> Path:
    """Unpack `archive` into `dest` (via a temporary folder) and return `dest / folder`, which it must hold."""
    target = dest / folder
    tmp = dest / f".{folder}.unpacking"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with open_tree(archive) as tree:  # refuses hostile entries, bounds bombs
            for name, data in tree.iter_read(tree.names()):
                out = tmp / name
                if os.path.commonpath([out.resolve(), tmp.resolve()]) != str(tmp.resolve()):
                    raise DataError(f"{archive}:{name} would be written outside {tmp}; refusing the archive")
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(data)
        if not (tmp / folder).is_dir():
            raise DataError(f"{archive} does not hold the folder {folder}/; is it the right archive?")
        os.replace(tmp / folder, target)
    except OSError as e:
        raise UserError(f"cannot unpack {archive} into {dest} ({e.strerror or e}); check the free space and "
                        "permissions, then run the command again") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def download(name: str, root: str | os.PathLike, *, url_base: str | None = None, keep_archive: bool = False,
             progress: bool = True, retries: int = 3, timeout: float = 60.0) -> Path:
    """Download, check and unpack data set `name` under `root`; returns the path to pass as --data."""
    if name not in DATASETS:
        raise UserError(f"unknown data set {name!r}; choose one of: {', '.join(DATASETS)}")
    spec, root = DATASETS[name], Path(root)
    where = root / spec.folder
    if spec.unpack and (where / spec.unpack).is_dir():
        return where / spec.unpack  # unpacked before
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {str(where)!r} ({e.strerror}); choose another --root") from None
    for remote in spec.files:
        dest = where / remote.name
        if dest.exists() and verify(dest, remote) is None:
            continue
        bases = (url_base,) if url_base else remote.mirrors
        for i, base in enumerate(bases):
            url = base.rstrip("/") + "/" + remote.name
            if progress:
                print(f"downloading {url}", file=sys.stderr, flush=True)
            try:
                fetch(url, dest, remote, retries=retries, timeout=timeout, progress=progress)
                break
            except DataError:
                if i == len(bases) - 1:
                    raise
    if not spec.unpack:
        return where
    archive = where / spec.files[0].name
    out = unpack(archive, where, spec.unpack)
    if not keep_archive:
        archive.unlink()
    return out
