"""Tests for predict.py and `multiglance predict`: PNG, JPEG, grayscale, RGBA and odd-sized files; a corrupt
file in a folder is reported and skipped while the rest are predicted; patch boxes in original pixels."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from multiglance.cli import main
from multiglance.data.images import load_image_file
from multiglance.errors import UserError
from multiglance.models import create_model
from multiglance.predict import find_images, original_box, predict_arrays, predict_files, prepare, run_classes
from multiglance.runs import load_run

RNG = np.random.default_rng(0)


def noise(h: int, w: int, c: int) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, c), dtype=np.uint8)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """Five readable images of different formats, modes and sizes, and one corrupt file."""
    d = tmp_path_factory.mktemp("images")
    Image.fromarray(noise(48, 48, 3)).save(d / "rgb.png")
    Image.fromarray(noise(60, 100, 3)).save(d / "photo.jpg", quality=90)
    Image.fromarray(noise(77, 33, 1)[..., 0], "L").save(d / "gray.png")
    Image.fromarray(noise(48, 48, 4), "RGBA").save(d / "alpha.png")
    Image.fromarray(noise(91, 37, 3)).save(d / "odd.bmp")
    (d / "sub").mkdir()
    (d / "sub" / "broken.jpg").write_bytes(b"this is not a JPEG at all")
    (d / "notes.txt").write_text("not an image: ignored, not an error")
    return d


SIZES = {"rgb.png": (48, 48), "photo.jpg": (100, 60), "gray.png": (33, 77), "alpha.png": (48, 48),
         "odd.bmp": (37, 91)}  # (width, height)


def test_folder_predicted_and_corrupt_file_skipped(tiny_run, image_folder) -> None:
    model, cfg = load_run(tiny_run)
    classes = run_classes(cfg)
    assert classes == [str(d) for d in range(10)]
    preds, errors = predict_files(model, classes, [image_folder], top_k=3)
    assert sorted(Path(p.file).name for p in preds) == sorted(SIZES)
    assert [Path(f).name for f, _ in errors] == ["broken.jpg"] and "not an image" in errors[0][1]
    size, p = model.image_size, model.patch_size
    for pred in preds:
        w, h = SIZES[Path(pred.file).name]
        assert (pred.width, pred.height) == (w, h)
        # the same answer as the model on the documented preprocessing: grayscale, whole image resized
        x = prepare(load_image_file(pred.file, "L"), size)[None]  # (1, 1, 48, 48)
        probs, index = model.classify(x)
        assert pred.label == classes[int(probs.argmax())] and pred.patch == int(index[0])
        assert pred.probability == pytest.approx(probs.max().item(), abs=1e-6)
        assert [c for c, _ in pred.top_k][0] == pred.label and len(pred.top_k) == 3
        assert all(a[1] >= b[1] for a, b in zip(pred.top_k, pred.top_k[1:]))
        # the patch in original pixels: the model's box scaled by W / size and H / size
        x0, y0, x1, y1 = pred.patch_box
        assert x1 - x0 == pytest.approx(p * w / size, abs=0.01) and y1 - y0 == pytest.approx(p * h / size, abs=0.01)
        assert 0 <= x0 < x1 <= w + 1e-6 and 0 <= y0 < y1 <= h + 1e-6


def test_prepare_resizes_the_whole_image() -> None:
    a = np.zeros((30, 90, 3), np.uint8)
    a[:, 60:] = 255  # the right third white
    x = prepare(a, 48)
    assert x.shape == (3, 48, 48) and x.dtype == torch.float32
    assert x[:, :, :30].max() < 0.05 and x[:, :, 34:].min() > 0.95  # nothing cropped: the white third stays
    assert prepare(np.full((48, 48, 1), 255, np.uint8), 48).eq(1).all()  # the right size: unchanged
    assert original_box([12, 24, 36, 48], width=96, height=144, size=48) == [24, 72, 72, 144]


def test_rgb_model_takes_gray_rgba_and_odd_sized_files(image_folder) -> None:
    torch.manual_seed(0)
    model = create_model("paper-cifar10-two-s2").eval()  # 3 channels, 32x32, 4x4 patches (untrained)
    classes = [f"c{i}" for i in range(10)]
    preds, errors = predict_files(model, classes, [image_folder / n for n in SIZES], top_k=2)
    assert len(preds) == 5 and errors == []
    assert all(0 <= p.patch < 16 and p.label in classes for p in preds)
    # a fully transparent RGBA image is black (composited on black)
    black = predict_arrays(model, [np.zeros((20, 20, 3), np.uint8)], classes)[0]
    clear = Image.fromarray(np.dstack([noise(20, 20, 3), np.zeros((20, 20, 1), np.uint8)]), "RGBA")
    buf = image_folder.parent / "clear.png"
    clear.save(buf)
    [pred], _ = predict_files(model, classes, [buf])
    assert (pred.label, pred.patch) == (black["label"], black["patch"])
    assert pred.probability == pytest.approx(black["probability"], abs=1e-6)


def test_one_glance_run_has_no_patch(tiny_run_one, image_folder) -> None:
    model, cfg = load_run(tiny_run_one)
    preds, _ = predict_files(model, run_classes(cfg), [image_folder / "rgb.png"])
    assert preds[0].patch is None and preds[0].patch_box is None and 0 < preds[0].probability <= 1


def test_overlays_keep_the_original_size_and_unique_names(tiny_run, image_folder, tmp_path) -> None:
    model, cfg = load_run(tiny_run)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for sub in ("a", "b"):
        Image.fromarray(noise(50, 70, 3)).save(tmp_path / sub / "same.png")
    out = tmp_path / "overlays"
    preds, _ = predict_files(model, run_classes(cfg), [image_folder, tmp_path / "a", tmp_path / "b"],
                             overlays=out)
    names = sorted(f.name for f in out.iterdir())
    assert names == sorted([Path(n).stem + ".png" for n in SIZES] + ["same.png", "same-2.png"])
    with Image.open(out / "odd.png") as img:
        assert img.size == (37, 91) and img.mode == "RGB"
        a = np.asarray(img)
    pred = next(p for p in preds if p.file.endswith("odd.bmp"))
    x0, y0 = int(pred.patch_box[0]), int(pred.patch_box[1])
    assert tuple(a[y0 + 2, x0]) == (255, 40, 40)  # the patch outline on the left edge


def test_find_images_errors() -> None:
    with pytest.raises(UserError, match="no such file"):
        find_images(["/nonexistent/picture.png"])


def test_predict_cli_json_csv_and_errors(tiny_run, image_folder, capsys) -> None:
    assert main(["predict", str(tiny_run), str(image_folder), "--json", "--top-k", "2"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert len(result["predictions"]) == 5 and len(result["errors"]) == 1
    assert "broken.jpg" in result["errors"][0]["file"] and "broken.jpg" in captured.err
    assert all(len(r["top_k"]) == 2 and len(r["patch_box"]) == 4 for r in result["predictions"])

    assert main(["predict", str(tiny_run), str(image_folder / "odd.bmp"), str(image_folder / "rgb.png"),
                 "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [Path(r["file"]).name for r in rows] == ["odd.bmp", "rgb.png"]
    assert all(0 < float(r["probability"]) <= 1 and r["class"] in "0123456789" for r in rows)
    by_json = {Path(r["file"]).name: r for r in result["predictions"]}
    assert rows[0]["class"] == by_json["odd.bmp"]["class"] and int(rows[0]["patch"]) == by_json["odd.bmp"]["patch"]

    assert main(["predict", str(tiny_run), str(image_folder / "rgb.png")]) == 0
    assert "rgb.png: " in capsys.readouterr().out
    assert main(["predict", str(tiny_run), str(image_folder / "sub")]) == 2  # only a corrupt file: an error
    assert "none of the 1" in capsys.readouterr().err
    assert main(["predict", str(tiny_run), "/nonexistent.png"]) == 2


def test_class_names_are_saved_with_the_run(tiny_run):
    from multiglance.predict import run_classes
    from multiglance.runs import load_classes, load_config

    assert load_classes(tiny_run) == [str(d) for d in range(10)]
    assert run_classes(load_config(tiny_run), run_dir=tiny_run) == [str(d) for d in range(10)]
