"""Tests for the data rows of docs/RELIABILITY.md's "Careless input" table, through the code a run uses
(`train.load_data`, the `predict` command), and a check that every row's "rerun" cell names a test that exists."""
from __future__ import annotations

import argparse
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from multiglance.config import RunConfig, apply_overrides, validate
from multiglance.data import images
from multiglance.errors import ConfigError, UserError

REPO = Path(__file__).resolve().parents[1]


def tree(root: Path, sizes: dict[str, tuple[int, int]]) -> Path:
    """ROOT/train/CLASS/*.png only (no test/): {relative name: (width, height)}."""
    for name, (w, h) in sizes.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((h, w, 3), len(name), np.uint8)).save(root / name)
    return root


@pytest.fixture
def clean_limit(monkeypatch, tmp_path: Path):
    monkeypatch.delenv(images.ENV_MAX_PIXELS, raising=False)
    monkeypatch.setenv("MULTIGLANCE_CACHE", str(tmp_path / "cache"))
    yield
    images.set_max_pixels(None)


def config(root: Path, *overrides: str) -> RunConfig:
    return validate(apply_overrides(RunConfig(), ["data.name=folder", f"data.root={root}", "data.stream=false",
                                                  "model.image_size=8", *overrides]))


def test_data_max_pixels_is_applied_by_load_data(tmp_path: Path, clean_limit) -> None:
    from multiglance.train import load_data

    sizes = {f"train/{c}/{i}.png": (8, 8) for c in ("a", "b") for i in range(10)}
    root = tree(tmp_path / "d", {**sizes, "train/a/big.png": (8, 9)})  # 72 pixels, the others 64
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (train,) = load_data(config(root, "data.max_pixels=70"), ("train",))
    notes = [str(w.message) for w in caught]
    assert any("big.png: 8x9 pixels, over the limit of 70" in n and "data.max_pixels" in n for n in notes)
    assert any(n.startswith(f"no test/ split in {root}: testing on a seeded 10% of train/ (2 images)") for n in notes)
    assert train.skipped == 1 and images.pixel_limit() == 70
    load_data(config(root, "data.max_pixels=1000", "data.train_limit=1"), ("test",))
    assert images.pixel_limit() == 1000
    with pytest.raises(ConfigError, match=r"data.max_pixels=0 must be an integer >= 1 or none"):
        config(root, "data.max_pixels=0")


def test_predict_uses_the_runs_data_max_pixels(tmp_path: Path, clean_limit, monkeypatch) -> None:
    from multiglance import predict, runs
    from multiglance.analysis.commands import cmd_predict

    cfg = RunConfig()
    cfg.data.max_pixels = 123
    seen = []
    monkeypatch.setattr(runs, "load_run", lambda run: (None, cfg))
    monkeypatch.setattr(predict, "run_classes", lambda *a, **k: ["a", "b"])
    monkeypatch.setattr(predict, "predict_files", lambda *a, **k: seen.append(images.pixel_limit()) or ([], []))
    args = argparse.Namespace(run=str(tmp_path), data=None, images=[], top_k=1, patches=None, save_overlays=None,
                              json=False, csv=False)
    with pytest.raises(UserError, match="none of the 0 image files"):
        cmd_predict(args)
    assert seen == [123]


def careless_input_rows() -> list[tuple[str, str]]:
    text = (REPO / "docs" / "RELIABILITY.md").read_text()
    section = text.split("## Careless input", 1)[1].split("\n## ", 1)[0]
    return [(line, m.group(0)) for line in section.splitlines() if line.startswith("| ")
            for m in re.finditer(r'pytest tests/\S+\.py(?: -k (?:"[\w ]+"|\w+))?', line)]


def test_every_rerun_cell_names_an_existing_test() -> None:
    rows = careless_input_rows()
    assert len(rows) >= 15
    for line, command in rows:
        path, _, k = command.removeprefix("pytest ").partition(" -k ")
        k = k.strip('"')
        source = (REPO / path).read_text()
        names = re.findall(r"^def (test_\w+)", source, re.M)
        assert names, f"{path} (in {line[:60]}...) has no tests"
        for word in k.split(" or ") if k else []:
            assert any(word.strip() in n for n in names), f"-k {word} selects nothing in {path}"


def test_fit_validates_the_config_before_reading_data_or_writing(tmp_path: Path) -> None:
    from multiglance.train import fit

    cfg = RunConfig()
    cfg.train.epochs = 0  # through the Python API, not the CLI
    with pytest.raises(ConfigError, match=r"train.epochs=0 must be an integer >= 1"):
        fit(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
