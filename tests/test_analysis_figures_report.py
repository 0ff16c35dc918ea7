"""Tests for analysis/figures.py, analysis/analyze.py, analysis/report.py and the analyze/report commands,
including the report in a real headless Chromium (skipped only when no chromium binary exists)."""
from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from multiglance.analysis import figures
from multiglance.analysis.analyze import FIGURES, analyze_run
from multiglance.analysis.report import write_report
from multiglance.cli import main
from multiglance.errors import UserError
from multiglance.models import create_model
from multiglance.runs import load_config
from multiglance.train import load_data


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG"
        img.load()
        return img.size


def test_weight_map_sums_the_patches_holding_each_pixel() -> None:
    boxes = create_model("digits-two").patch_boxes()  # 3x3 patches of 24, stride 12, on 48
    w = torch.zeros(9)
    w[0], w[4] = 0.25, 0.75
    heat = figures.weight_map(w, boxes, 48)
    assert heat[0, 0] == 0.25 and heat[13, 13] == 1.0 and heat[30, 30] == 0.75 and heat[40, 40] == 0.0
    # uniform weights: a corner pixel is in one patch, a middle one in 2 x 2
    heat = figures.weight_map(torch.full((9,), 1 / 9), boxes, 48)
    assert heat[0, 0] == pytest.approx(1 / 9) and heat[20, 20] == pytest.approx(4 / 9)


def test_mosaic_places_images_by_top_patch() -> None:
    boxes = create_model("digits-two").patch_boxes()
    images = torch.stack([torch.full((1, 48, 48), 10 * i, dtype=torch.uint8) for i in range(1, 6)])
    top = torch.tensor([4, 0, 4, 8, 4])
    m = figures.mosaic(images, top, boxes, grid=3, k=2, pad=2, gap=8)
    cell_w = 2 * 50 - 2
    assert m.shape == (3 * 56 - 8, 3 * (cell_w + 8) - 8, 3)
    # cell (1, 1) = patch 4 holds images 0 and 2 (the first two), not image 4; their interiors keep their value
    oy, ox = 56, cell_w + 8
    assert (m[oy + 1, ox + 1] == 10).all() and (m[oy + 1, ox + 50 + 1] == 30).all()
    assert (m[oy + 12, ox + 12] == figures.OUTLINE).all()  # patch 4's outline starts at (12, 12)
    assert (m[0, 0] == figures.OUTLINE).all() and (m[30, 30] == 20).all()  # patch 0's cell: image 1
    assert (m[2 * 56 + 1, 2 * (cell_w + 8) + 1] == 40).all()  # patch 8: image 3
    assert (m[0, cell_w + 8 + 1] == 200).all()  # patch 1: nobody looks there, grey


def test_analyze_run_writes_every_figure_and_the_summary(tiny_run, tmp_path) -> None:
    summary = analyze_run(tiny_run, out=tmp_path, limit=60, k=3, example=5)
    for name in FIGURES.values():
        w, h = png_size((tmp_path / name).read_bytes())
        assert w > 100 and h > 100
    on_disk = json.loads((tmp_path / "analysis.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert summary["images"] == 60 and summary["grid"] == [3, 3] and summary["skipped_images"] == 0
    weights = summary["weights"]
    assert sum(map(sum, weights["mean"])) == pytest.approx(1.0, abs=1e-4)
    assert sum(map(sum, weights["top_share"])) == pytest.approx(1.0)
    assert 0 <= weights["entropy_mean"] <= weights["entropy_max"]
    loc = summary["localisation"]  # cluttered digits know where their digit is
    for measure in ("overlap", "contains_centre", "coverage"):
        assert loc[measure]["best"] >= max(loc[measure]["random"], loc[measure]["model"]) - 1e-12
    assert 0 <= loc["overlap"]["random"] <= 1


def test_analyze_refuses_a_one_glance_run(tiny_run_one, tmp_path) -> None:
    with pytest.raises(UserError, match="one-glance"):
        analyze_run(tiny_run_one, out=tmp_path)


def test_analyze_cli_prints_json(tiny_run, tmp_path, capsys) -> None:
    assert main(["analyze", str(tiny_run), "--out", str(tmp_path), "--limit", "40", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 40 and set(summary["localisation"]) >= {"overlap", "coverage"}
    assert main(["analyze", str(tiny_run), "--out", str(tmp_path), "--limit", "40", "--example", "99"]) == 2
    assert "out of range" in capsys.readouterr().err


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory) -> Path:
    return write_report(tiny_run, tmp_path_factory.mktemp("report") / "report.html", limit=60, k=3)


def test_report_is_self_contained_with_every_figure(report) -> None:
    text = report.read_text()
    srcs = re.findall(r'<img alt="[^"]*" src="([^"]+)"', text)
    assert len(srcs) == len(FIGURES) + 1  # the analysis figures and the training curves
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        w, h = png_size(base64.b64decode(src.split(",", 1)[1]))
        assert w > 100 and h > 100
    assert not re.search(r'(src|href)="(https?:|//|file:)', text)  # nothing fetched from elsewhere
    assert "<h2>Localisation</h2>" in text and "contains_centre" in text and "val_acc_hard" in text


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (Debian: apt-get install -y chromium)")
def test_report_in_headless_chromium(report, tmp_path) -> None:
    url = report.resolve().as_uri()
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile1'}", "--enable-logging=stderr",
                          "--v=0", "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", dom.stdout).group(1)
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', body))
    assert attrs["data-images"] == str(len(FIGURES) + 1)
    assert attrs["data-images-loaded"] == attrs["data-images"]  # every image decoded (naturalWidth > 0)
    assert attrs["data-errors"] == "0"  # no script error, no failed resource
    assert not [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]  # the page logs nothing

    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", f"--screenshot={shot}",
                    "--window-size=1200,3000", url], capture_output=True, timeout=120)
    with Image.open(shot) as img:
        pixels = np.asarray(img.convert("L"), dtype=np.float64)
    assert pixels.shape == (3000, 1200)
    assert pixels.std() > 20  # not blank: text and figures
    # the figures sit in the page: well below the top, rows of the screenshot still differ from white
    assert (pixels[1500:] < 250).mean() > 0.01


def test_publish_stores_data_and_regenerates_the_section(tiny_run, tmp_path, capsys) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "RESULTS.md").write_text("# Results\n\n<!-- BEGIN analysis -->\nSTALE-TEXT\n<!-- END analysis -->\n\nkept\n")
    assert main(["analyze", str(tiny_run), "--out", str(tmp_path / "a"), "--limit", "40", "--publish", "tiny",
                 "--docs", str(docs), "--json", "--allow-dirty"]) == 0
    summary = json.loads(capsys.readouterr().out)
    record = json.loads((docs / "results" / "analysis" / "tiny.json").read_text())
    assert record["command"].startswith("multiglance") and record["config"]["preset"] == "digits-two"
    assert str(tmp_path) not in json.dumps(record)  # no path of this machine
    cfg = load_config(tiny_run)  # how the analysed run was trained: its own split sizes, selected on validation
    train, val = load_data(cfg)
    assert (record["train_images"], record["val_images"], record["selection"]) == (len(train), len(val), "val")
    assert record["localisation"] == summary["localisation"]
    with Image.open(docs / "analysis-tiny-grid.png") as small, Image.open(tmp_path / "a" / FIGURES["grid"]) as big:
        assert small.mode == "P" and small.width == min(1400, big.width)  # a palette copy, at most 1400 wide
        assert abs(small.height / small.width - big.height / big.width) < 0.01
    page = (docs / "RESULTS.md").read_text()
    assert "STALE-TEXT" not in page and page.rstrip().endswith("kept")
    assert f"{summary['localisation']['coverage']['random']:.1%}" in page
    assert "](analysis-tiny-grid.png)" in page


def test_publish_refuses_a_dirty_tree_unless_allowed(tiny_run, tmp_path, monkeypatch, capsys) -> None:
    import multiglance.results

    monkeypatch.setattr(multiglance.results, "git_commit", lambda: "0123abcd-dirty")
    docs = tmp_path / "docs"
    assert main(["analyze", str(tiny_run), "--limit", "8", "--publish", "tiny", "--docs", str(docs)]) == 2
    assert "uncommitted changes" in capsys.readouterr().err and not docs.exists()  # refused before any work


def test_grid_cells_whole_grid_or_most_used_positions() -> None:
    top = torch.tensor([3, 3, 1])
    assert figures.grid_cells(top, (2, 3)).tolist() == [[0, 1, 2], [3, 4, 5]]
    top = torch.tensor([200, 7, 200, 7, 200, 9, 100])  # a 15x15 grid: 225 positions, too many cells
    assert figures.grid_cells(top, 15).tolist() == [[200], [7], [9], [100]]  # by count, ties by position
    assert figures.grid_cells(torch.arange(225).repeat(2), 15).shape == (figures.TOP_ROWS, 1)
    cells = figures.grid_cells(top, 15)
    assert figures.pick_images(top, cells, k=2).tolist() == [0, 1, 2, 3, 5, 6]


def test_mosaic_non_square_grid_and_downscaled_tiles() -> None:
    from multiglance.models.glances import TwoGlance

    model = TwoGlance(in_channels=1, num_classes=2, image_size=20, image_width=30, channels=(4,), pool_stride=2,
                      patch_size=10, patch_stride=10, thumb_size=10)
    assert model.grid == (2, 3)
    images = torch.full((3, 1, 20, 30), 50, dtype=torch.uint8)
    m = figures.mosaic(images, torch.tensor([5, 0, 5]), model.patch_boxes(), model.grid, k=2, pad=2, gap=8)
    cell_w = 2 * 32 - 2
    assert m.shape == (2 * 28 - 8, 3 * (cell_w + 8) - 8, 3)
    oy, ox = 28, 2 * (cell_w + 8)  # cell (1, 2) = patch 5, whose box is x 20..30, y 10..20
    assert (m[oy + 10, ox + 20] == figures.OUTLINE).all() and (m[oy + 1, ox + 1] == 50).all()
    assert (m[oy + 10, ox + 32 + 20] == figures.OUTLINE).all()  # the second image of the cell
    # a large image: tiles downscaled to MAX_TILE, the boxes with them
    big = torch.full((1, 3, 256, 256), 90, dtype=torch.uint8)
    boxes = torch.tensor([[64, 128, 96, 160]])
    m = figures.mosaic(big, torch.tensor([0]), boxes, (1, 1), k=1)
    assert m.shape == (128, 128, 3)
    assert (m[64, 32] == figures.OUTLINE).all() and (m[79, 47] == figures.OUTLINE).all() and (m[70, 40] == 90).all()


def test_large_grid_figures_decode_only_the_images_shown(tmp_path) -> None:
    boxes = create_model("digits-two").patch_boxes()
    heat = figures.weight_map(torch.full((9,), 1 / 9), boxes, (48, 60))  # a (H, W) map
    assert heat.shape == (48, 60) and heat[0, 59] == 0.0
    from multiglance.models.glances import TwoGlance

    model = TwoGlance(in_channels=3, num_classes=2, image_size=64, image_width=96, channels=(4,), pool_stride=2,
                      patch_size=8, patch_stride=4, thumb_size=16)  # a 15 x 23 grid
    p = model.num_patches
    top = torch.randint(0, p, (300,), generator=torch.Generator().manual_seed(0))
    asked = []

    def images(positions: torch.Tensor) -> torch.Tensor:
        asked.append(positions)
        return torch.randint(0, 255, (positions.shape[0], 3, 64, 96), dtype=torch.uint8)

    figures.top_patch_grid(images, top, model.patch_boxes(), model.grid, tmp_path / "grid.png", k=3)
    [positions] = asked
    assert positions.shape[0] <= figures.TOP_ROWS * 3 and torch.equal(positions, positions.sort().values)
    w, h = png_size((tmp_path / "grid.png").read_bytes())
    assert w > 100 and h > 100
    weights = torch.softmax(torch.randn(p), -1)
    figures.stats_figure(weights, weights, weights, model.grid, tmp_path / "stats.png")
    figures.ranks_figure(images(torch.zeros(1, dtype=torch.long))[0], weights, model.patch_boxes(), tmp_path / "r.png")
    figures.heatmap_figure(images(torch.zeros(1, dtype=torch.long))[0], weights, model.patch_boxes(),
                           tmp_path / "h.png", normalized=weights - weights.mean())
    assert all(png_size((tmp_path / n).read_bytes())[0] > 100 for n in ("stats.png", "r.png", "h.png"))


def test_analyze_shipped_weights_and_publish_their_training_record(tmp_path, capsys) -> None:
    from conftest import SHARED_DATA

    from multiglance.weights import SHIPPED

    name = "cifar10__two-logits-s2__seed0"
    if not (SHIPPED / f"{name}.pt").is_file() or not (SHARED_DATA / "cifar10").is_dir():
        pytest.skip(f"needs docs/weights/{name}.pt and ../shared/data/cifar10")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "RESULTS.md").write_text("# Results\n\n<!-- BEGIN analysis -->\nold\n<!-- END analysis -->\n")
    argv = ["analyze", "--weights", name, "--out", str(tmp_path / "a"), "--limit", "40", "--publish", "w",
            "--docs", str(docs), "--json", "--allow-dirty"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["shipped_weights"] == name and summary["run"] is None and summary["images"] == 40
    record = json.loads((docs / "results" / "analysis" / "w.json").read_text())
    published = json.loads((SHIPPED.parent / "results" / f"{name}.json").read_text())
    assert record["config"]["preset"] == published["config"]["preset"]
    assert (record["selection"], record["train_images"], record["val_images"]) == \
        ("val", published["train_images"], published["val_images"])
    assert (tmp_path / "a" / FIGURES["grid"]).is_file()


def test_analyze_needs_exactly_one_of_run_and_weights(tiny_run, capsys) -> None:
    assert main(["analyze"]) == 2
    assert "give a run folder or --weights NAME" in capsys.readouterr().err
    assert main(["analyze", str(tiny_run), "--weights", "cifar10__two-logits-s2__seed0"]) == 2
    assert main(["analyze", "--weights", "cifar10__two-logits-s2__seed0"]) == 2
    assert "give --out" in capsys.readouterr().err
