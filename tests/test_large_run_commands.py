"""Every command opens a large-image run: a `large-two` run trained (1 epoch, seconds) on a streamed class folder
of 256x256 JPEGs with corrupt files, then `eval` (test, val, inference-time --set, a refused key), `predict`
(any size, the k patches in original pixels, overlays, a corrupt file skipped), `analyze` and `report`, all
through `multiglance.cli.main` in this process."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from multiglance.analysis.analyze import FIGURES
from multiglance.cli import main
from multiglance.data.stream import StreamSplit
from multiglance.data.synthetic_folders import make_shape_folder, shape_image
from multiglance.runs import load_config, load_run, read_metrics
from multiglance.train import load_data

PER_CLASS, CORRUPT = 24, 2  # per class in train/ (12 in test/), corrupt files in train/circle/


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = make_shape_folder(tmp_path_factory.mktemp("data") / "photos", n_per_class=PER_CLASS, size=256, seed=0,
                             corrupt=CORRUPT)
    (root / "test" / "circle" / "corrupt_test.jpg").write_bytes(b"\xff\xd8\xff not the rest of a JPEG")
    return root


@pytest.fixture(scope="module")
def run(photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "large-two"
    assert main(["train", "--preset", "large-two", "--data", str(photos), "--set", "model.image_size=256",
                 "--set", "train.batch_size=8", "--set", "train.workers=0", "--set", "data.stream=true",
                 "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    return out


def test_the_run_streamed_its_folder(run) -> None:
    cfg = load_config(run)
    assert (cfg.model.in_channels, cfg.model.num_classes, cfg.model.patch_size, cfg.model.thumb_size) == (3, 2, 32, 32)
    train, val, test = load_data(cfg, ("train", "val", "test"))
    assert all(isinstance(s, StreamSplit) for s in (train, val, test))
    [epoch] = [r for r in read_metrics(run) if r.get("kind") == "epoch"]
    assert epoch["skipped_images"] == sum("corrupt" in f for f in train.files) <= CORRUPT
    model, _ = load_run(run)
    assert model.grid == (15, 15) and model.top_k == 3


def _eval(capsys, *args: str) -> dict:
    assert main(["eval", *args, "--json", "--no-timing"]) == 0
    return json.loads(capsys.readouterr().out)


def test_eval_test_val_and_inference_options(run, photos, capsys) -> None:
    result = _eval(capsys, str(run))
    assert 0 <= result["accuracy_hard"] <= 1 and result["accuracy_soft"] is None  # 225 patches: no soft pass
    assert result["test_images"] == 2 * PER_CLASS // 2 and result["skipped_images"] == 1  # corrupt_test.jpg
    assert result["test_flops_per_image"] > 0 and result["top_k"] == 3 and result["params"] > 0
    assert set(result["per_class_accuracy"]) == {"circle", "square"}

    val = _eval(capsys, str(run), "--split", "val")
    (split,) = load_data(load_config(run), ("val",))
    assert val["split"] == "val" and 0 <= val["accuracy_hard"] <= 1
    corrupt = sum("corrupt" in f for f in split.files)
    assert val["test_images"] == len(split) - corrupt and val["skipped_images"] == corrupt

    two = _eval(capsys, str(run), "--set", "model.top_k=2")
    assert two["top_k"] == 2 and two["overrides"] == ["model.top_k=2"]
    assert 0 < two["test_flops_per_image"] < result["test_flops_per_image"]  # glance 2 on 2 patches, not 3

    assert main(["eval", str(run), "--json", "--no-timing", "--set", "model.patch_size=16"]) == 2
    assert "only inference-time options" in capsys.readouterr().err


@pytest.fixture(scope="module")
def user_images(tmp_path_factory) -> tuple[Path, dict[str, tuple[int, int]]]:
    """A user's folder: photos of other sizes and modes, one stored sideways (EXIF 6), one corrupt file."""
    d = tmp_path_factory.mktemp("mine")
    rng = np.random.default_rng(3)
    Image.fromarray(shape_image("circle", 256, rng)).save(d / "same.png")
    Image.fromarray(shape_image("square", 400, rng)[:300]).save(d / "wide.jpg", quality=90)  # 400 x 300
    Image.fromarray(shape_image("circle", 640, rng)[:480]).convert("L").save(d / "gray.png")  # 640 x 480
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 500 x 200, shown 200 x 500
    Image.fromarray(shape_image("square", 500, rng)[:200]).save(d / "sideways.jpg", exif=exif)
    (d / "broken.jpg").write_bytes(b"this is not a JPEG")
    return d, {"same.png": (256, 256), "wide.jpg": (400, 300), "gray.png": (640, 480), "sideways.jpg": (200, 500)}


def test_predict_reports_k_patches_in_original_pixels_with_overlays(run, user_images, tmp_path, capsys) -> None:
    folder, sizes = user_images
    out = tmp_path / "overlays"
    assert main(["predict", str(run), str(folder), "--patches", "3", "--save-overlays", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert [Path(e["file"]).name for e in result["errors"]] == ["broken.jpg"] and "broken.jpg" in captured.err
    assert sorted(Path(r["file"]).name for r in result["predictions"]) == sorted(sizes)
    model, _ = load_run(run)
    for r in result["predictions"]:
        name = Path(r["file"]).name
        w, h = sizes[name]
        assert (r["width"], r["height"]) == (w, h) and r["class"] in ("circle", "square")
        assert len(r["patches"]) == len(set(r["patches"])) == 3 and r["patch"] == r["patches"][0]
        assert len(r["patch_boxes"]) == 3 and r["patch_box"] == r["patch_boxes"][0]
        side = 32 / max(256 / h, 256 / w)  # a 32-pixel patch in original pixels
        for x0, y0, x1, y1 in r["patch_boxes"]:
            assert 0 <= x0 < x1 <= w + 1e-6 and 0 <= y0 < y1 <= h + 1e-6
            assert x1 - x0 == pytest.approx(side, abs=0.01) and y1 - y0 == pytest.approx(side, abs=0.01)
        if name == "same.png":  # the model's size: boxes are the model's own
            assert r["patch_boxes"] == model.patch_boxes()[r["patches"]].float().tolist()
        with Image.open(out / f"{Path(name).stem}.png") as img:
            assert img.size == (w, h) and img.mode == "RGB"
    assert sorted(f.name for f in out.iterdir()) == sorted(f"{Path(n).stem}.png" for n in sizes)


def test_predict_skips_a_corrupt_file_given_by_name(run, user_images, capsys) -> None:
    folder, _ = user_images
    assert main(["predict", str(run), str(folder / "broken.jpg"), str(folder / "wide.jpg")]) == 0
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "broken.jpg" in captured.err
    assert "wide.jpg: " in captured.out and "patches " in captured.out  # top_k 3: all three printed
    assert main(["predict", str(run), str(folder / "broken.jpg")]) == 2
    assert "none of the 1" in capsys.readouterr().err


def test_analyze_opens_the_run(run, capsys) -> None:
    assert main(["analyze", str(run), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["grid"] == [15, 15] and summary["images"] == PER_CLASS and summary["skipped_images"] == 1
    assert summary["localisation"] is None and "no object boxes" in summary["localisation_skipped"]
    assert summary["grid_figure"] == "most_used" and summary["top_k"] == 3
    assert 0 <= summary["accuracy_hard"] <= 1 and len(summary["weights"]["top_share"]) == 15
    assert sum(map(sum, summary["weights"]["top_share"])) == pytest.approx(1.0, abs=1e-4)  # 225 rounded shares
    folder = run / "analysis"
    assert json.loads((folder / "analysis.json").read_text()) == summary
    for name in FIGURES.values():
        with Image.open(folder / name) as img:
            assert img.format == "PNG" and img.width > 100 and img.height > 100

    assert main(["analyze", str(run), "--split", "val", "--out", str(run / "analysis-val")]) == 0
    text = capsys.readouterr().out
    assert "15x15 patches" in text and "localisation: skipped" in text and "most used" in text
    assert (run / "analysis-val" / "analysis.json").exists()


def test_report_opens_the_run(run, capsys) -> None:
    assert main(["report", str(run), "--limit", "10"]) == 0
    assert "report saved in" in capsys.readouterr().out
    page = (run / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(FIGURES) + 1  # the figures and the training curves
    assert "Localisation skipped" in page and "15x15 patches" in page and "most often on top" in page
