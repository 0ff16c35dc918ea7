"""allocator.py: mallopt is applied on glibc (or the environment's setting is reported), and changes no value."""
from __future__ import annotations

import subprocess
import sys


def _run(env: dict) -> str:
    code = ("from multiglance.allocator import tune_allocator; import torch; torch.manual_seed(0); "
            "print(tune_allocator()); print(float(torch.randn(1000).sum()))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout


def test_tune_allocator_reports_what_it_did_and_changes_no_value():
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    tuned = _run(base).splitlines()
    from_env = _run(base | {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "4294967296"}).splitlines()
    assert tuned[0].startswith(("mallopt", "default")) and from_env[0].startswith("environment")
    assert tuned[1] == from_env[1]  # same numbers either way


def test_release_free_memory_hands_the_freed_heap_back():
    """With the thresholds set, 400 MB of freed 1 MB tensors stay resident until release_free_memory()."""
    import os

    code = ("import torch\nfrom multiglance.allocator import release_free_memory, tune_allocator\n"
            "from multiglance.bench.memory import pss_mb\nimport os\ntune_allocator()\n"
            "xs = [torch.ones(1 << 18) for _ in range(400)]\nmid = pss_mb(os.getpid())\ndel xs\n"
            "kept = pss_mb(os.getpid())\nprint(release_free_memory(), mid - kept, kept - pss_mb(os.getpid()))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    released, freed_at_del, freed_by_trim = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                                           text=True, env=env, check=True).stdout.split()
    assert released == "True" and float(freed_at_del) < 50 and float(freed_by_trim) > 350
