"""bench/memory.py: the PSS of a process tree, and its peak over a block."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np

from multiglance.bench.memory import PeakPss, descendants, tree_pss_mb


def test_the_tree_holds_a_child_and_counts_its_memory():
    child = subprocess.Popen([sys.executable, "-c", "import time; b = bytearray(200 << 20); b[::4096] = b'1' * "
                              "len(b[::4096]); time.sleep(30)"])
    try:
        deadline = time.time() + 20
        while tree_pss_mb(child.pid) < 200 and time.time() < deadline:
            time.sleep(0.1)
        assert child.pid in descendants(os.getpid())
        assert 200 <= tree_pss_mb(child.pid) < 400
    finally:
        child.kill()
        child.wait()


def test_the_peak_sees_a_block_that_is_freed_before_it_ends():
    before = tree_pss_mb(os.getpid())
    with PeakPss(every=0.02) as peak:
        a = np.ones(300 << 20, dtype=np.uint8)  # 300 MB, touched
        time.sleep(0.3)
        del a
    assert peak.mb >= before + 250
    assert tree_pss_mb(os.getpid()) < peak.mb - 200  # gone again: the peak is not today's size
