"""Shared fixtures: tiny trained runs (seconds on CPU) and the location of ../shared/data."""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


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
