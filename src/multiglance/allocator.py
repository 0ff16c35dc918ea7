"""Keep glibc from handing freed activations back to the OS after every training step.

By default glibc serves large blocks with mmap and trims the heap on free, so every step pays page faults for
its activations again (training time flipped between 17 and 31 ms/step). The Makefile sets
MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ for that; `tune_allocator()` does the same from inside a running
process (mallopt), for commands started any other way. It changes no value, only where memory comes from.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest allowed value: blocks below it come from the heap
TRIM_THRESHOLD = 2 ** 31 - 1  # mallopt takes an int: 2 GiB, never reached by these runs


def tune_allocator() -> str:
    """Apply the thresholds (unless the environment already sets them); returns what was done, for records."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") and os.environ.get("MALLOC_TRIM_THRESHOLD_"):
        return "environment (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_)"
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and libc.mallopt(M_TRIM_THRESHOLD,
                                                                                  TRIM_THRESHOLD) == 1
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS): nothing to tune
        return "default (no mallopt)"
    return "mallopt (mmap threshold 32 MiB, no trim)" if ok else "default (mallopt refused)"


def release_free_memory() -> bool:
    """Hand the heap's free pages back to the OS now (glibc `malloc_trim(0)`); True if any were. Called before
    DataLoader workers are forked: with the thresholds above the heap keeps the last steps' freed activations,
    and a forked worker inherits every page of it. Each page the main process writes again afterwards is copied,
    and the worker's old copy stays its own: measured on GTSDB (photos-two), 1.5 GB per worker."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0) == 1
    except (OSError, AttributeError, TypeError):  # not glibc: nothing to release
        return False
