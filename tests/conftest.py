"""Shared fixtures: tiny trained runs (seconds on CPU), the location of ../shared/data, and two rules for the run.

Property tests (Hypothesis) are repeatable: the default profile, "multiglance-ci", is derandomized (each test draws
the same examples on every run and machine, from a hash of the test; no example database). The large random sweep
is opt-in:

    MULTIGLANCE_FUZZ=1 .venv/bin/python -m pytest tests/test_config_fuzz.py tests/test_data_fuzz.py \
        tests/test_data_archive.py tests/test_data_images.py tests/test_decode_fuzz.py

loads "multiglance-fuzz": fresh random examples each run (a failure is saved in .hypothesis/ and replayed first next
time), FUZZ_FACTOR times as many (`examples(n)`), and a new seed for the seeded decode sweep, named in its failures.
A property test writes `@settings(max_examples=examples(n), deadline=None)` and sets no seed of its own.

Tests that need ../shared/data skip without it, and say so in the summary (pyproject's `-ra` lists every skip with
its reason). When ../shared/data exists, a data-backed test must run: a skip whose reason names ../shared/data (the
words, or the folder's path) is reported as a failure (`pytest_runtest_makereport` below), so a missing file or a
moved folder cannot pass CI silently.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

FUZZ = os.environ.get("MULTIGLANCE_FUZZ", "") not in ("", "0")
FUZZ_FACTOR = 20  # MULTIGLANCE_FUZZ=1: this many times each property test's CI examples
settings.register_profile("multiglance-ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("multiglance-fuzz", derandomize=False, deadline=None, print_blob=True)
settings.load_profile("multiglance-fuzz" if FUZZ else "multiglance-ci")  # before any test module is imported


def examples(n: int) -> int:
    """max_examples for a property test: n in CI (derandomized), FUZZ_FACTOR x n in the opt-in random sweep."""
    return n * FUZZ_FACTOR if FUZZ else n


# -------------------------------------------------------------------------- data-backed tests must run #

def names_shared_data(reason: str, shared: Path = SHARED_DATA) -> bool:
    """Whether a skip's reason says the test wanted ../shared/data (by those words or by the folder's path)."""
    return "../shared/data" in reason or str(shared) in reason


def skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr  # a skip's is (path, line, "Skipped: reason")
    reason = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


def fail_data_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Turn a skip whose reason names ../shared/data into a failure while ../shared/data exists."""
    if report.skipped and not hasattr(report, "wasxfail") and SHARED_DATA.is_dir():
        reason = skip_reason(report)
        if names_shared_data(reason, SHARED_DATA):
            report.outcome = "failed"
            report.longrepr = (f"skipped ({reason}) although {SHARED_DATA} exists: a test that needs the shared "
                               "data must run when it is there (is a file missing from it, or did its path move?)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A data-backed test that skipped while ../shared/data exists fails (an error when it skipped in setup, as
    a `skipif` mark does): either way the run's exit status is non-zero."""
    report = yield
    fail_data_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    """The same for a whole module skipped at import (`pytest.skip(..., allow_module_level=True)`)."""
    report = yield
    fail_data_skip(report)
    return report


def tiny_config(preset: str = "digits-two", **overrides):
    """A preset shrunk to train in a few seconds: 512 training images, 128 test images, 1 epoch."""
    from multiglance.config import apply_overrides
    from multiglance.models import get_preset

    cfg = get_preset(preset)
    settings = {"data.train_limit": 512, "data.test_limit": 128, "data.val_limit": 128, "train.epochs": 1,
                "train.batch_size": 64, "train.log_every": 2} | overrides
    return apply_overrides(cfg, [f"{k}={v}" for k, v in settings.items()])


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run folder of a digits-two model trained for one short epoch (mechanics, not accuracy)."""
    from multiglance.train import fit

    out = tmp_path_factory.mktemp("runs") / "tiny-two"
    fit(tiny_config(), out, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_run_one(tmp_path_factory) -> Path:
    from multiglance.train import fit

    out = tmp_path_factory.mktemp("runs") / "tiny-one"
    fit(tiny_config("digits-one"), out, progress=False)
    return out
