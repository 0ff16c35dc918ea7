"""Writing files so that a crash never leaves half of one: the base every later stage writes through.

    atomic_write(path, lambda f: f.write(data))   # a temporary file beside `path`, fsync, rename, fsync the folder
    fsync_folder(folder)                          # make a rename inside `folder` survive a power cut

Run folders (runs.py), data caches (data/megapixel.py, data/scenes.py), downloads (data/download.py), published
results and shipped weights all write through here; it imports nothing of the package but its errors.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import UserError


def fsync_folder(folder: Path) -> None:
    """Make a rename inside `folder` survive a power cut (best effort: not every file system lets a folder be
    opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write) -> None:
    """Call write(file) on a temporary file beside `path`, fsync it, then rename it over `path`: readers see the
    old file or the new one, never a part. An OSError is one `UserError` naming the file; the old file is kept."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise UserError(f"cannot write in {str(path.parent)!r} ({e.strerror}); make that folder writable or choose "
                        "a writable --out") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_folder(path.parent)  # the rename itself survives a power cut
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"could not write {str(path)!r} ({e.strerror}); the previous file is kept") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
