"""Memory of a process and its descendants (the DataLoader workers), as the benches report it: the summed
proportional set size (PSS: shared pages split among their users), read from /proc (Linux).

    tree_pss_mb(pid)                 # MB now
    with PeakPss() as peak: ...      # peak.mb: the largest sum seen while the block ran (sampled every 0.2 s)
"""
from __future__ import annotations

import os
import threading


def descendants(pid: int) -> list[int]:
    """`pid` and all its descendants (from /proc/*/stat)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += parents.get(p, [])
    return out


def pss_mb(pid: int) -> float:
    """Proportional set size of one process, MB; 0 if it is gone (or /proc has no smaps_rollup)."""
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tree_pss_mb(pid: int) -> float:
    """Summed PSS of `pid` and its descendants, MB."""
    return sum(pss_mb(p) for p in descendants(pid))


class PeakPss:
    """The peak of `tree_pss_mb(os.getpid())` while a `with` block runs, sampled by a thread every `every` s."""

    def __init__(self, every: float = 0.2):
        self.every, self.mb = every, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            self.mb = max(self.mb, tree_pss_mb(os.getpid()))
            if self._stop.wait(self.every):
                return

    def __enter__(self) -> "PeakPss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
