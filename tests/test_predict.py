"""Tests for predict.py and `multiglance predict`: PNG, JPEG, grayscale, RGBA and odd-sized files prepared by the
training rule (cover, centre crop); a corrupt file in a folder is reported and skipped while the rest are
predicted; the k patches glance 2 looked at, in original pixels; non-square models; overlays of k patches."""
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
from multiglance.data.stream import decode_fitted
from multiglance.models import create_model
from multiglance.models.glances import TwoGlance
from multiglance.predict import (OTHER_COLOUR, TOP_COLOUR, find_images, original_box, predict_arrays, predict_files,
                                 prepare, run_classes)
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
        # the same answer as the model on the documented preparation: grayscale, scaled to cover, centre-cropped
        x = prepare(load_image_file(pred.file, "L"), size)[None]  # (1, 1, 48, 48) uint8
        assert torch.equal(x[0], torch.from_numpy(decode_fitted(Path(pred.file).read_bytes(), "f", height=size,
                                                                width=size, channels=1).transpose(2, 0, 1).copy()))
        probs, index = model.classify(x)
        assert pred.label == classes[int(probs.argmax())] and pred.patch == int(index[0])
        assert pred.probability == pytest.approx(probs.max().item(), abs=1e-6)
        assert [c for c, _ in pred.top_k][0] == pred.label and len(pred.top_k) == 3
        assert all(a[1] >= b[1] for a, b in zip(pred.top_k, pred.top_k[1:]))
        # the patch in original pixels: the model's box divided by the covering scale, shifted by the crop
        s = max(size / h, size / w)
        x0, y0, x1, y1 = pred.patch_box
        assert x1 - x0 == pytest.approx(p / s, abs=0.01) and y1 - y0 == pytest.approx(p / s, abs=0.01)
        assert 0 <= x0 < x1 <= w + 1e-6 and 0 <= y0 < y1 <= h + 1e-6
        assert pred.patches == [pred.patch] and pred.patch_boxes == [pred.patch_box]  # digits-two: top_k 1


def test_prepare_covers_and_centre_crops() -> None:
    a = np.zeros((30, 90, 3), np.uint8)
    a[:, :30, 0] = a[:, 30:60, 1] = a[:, 60:, 2] = 255  # red, green, blue thirds
    x = prepare(a, 48)  # scale 48 / 30 covers 48 x 48; the centre 30 x 30 of the source is kept: green
    assert x.shape == (3, 48, 48) and x.dtype == torch.uint8
    inner = x[:, :, 1:-1]  # the edge columns blend with the source's neighbouring pixels (bilinear)
    assert inner[1].min() > 240 and inner[0].max() < 15 and inner[2].max() < 15
    y = prepare(a, 32, 48)  # non-square: scale 32 / 30; 45 source columns 22.5..67.5 kept
    assert y.shape == (3, 32, 48)
    assert y[0, :, :4].float().mean() > 200 and y[1, :, 16:32].min() > 240 and y[2, :, -4:].float().mean() > 200
    same = noise(48, 48, 1)
    assert torch.equal(prepare(same, 48), torch.from_numpy(same).permute(2, 0, 1))  # the right size: unchanged
    assert torch.equal(prepare(a, 30, 90), torch.from_numpy(a).permute(2, 0, 1))


def test_original_box_undoes_scale_and_crop() -> None:
    # 96 x 144 (w x h) to 48 x 48: scale 0.5, the crop starts 24 rows down
    assert original_box([12, 24, 36, 48], width=96, height=144, model_height=48) == [24, 72, 72, 120]
    # 200 x 100 to a 32 x 48 model: scale 0.32, the crop is 150 x 100 starting at x = 25
    assert original_box([0, 0, 48, 32], width=200, height=100, model_height=32, model_width=48) == [25, 0, 175, 100]
    assert original_box([0, 0, 32, 32], width=32, height=32, model_height=32) == [0, 0, 32, 32]  # unchanged


def test_non_square_model_reports_k_patches_in_original_pixels(tmp_path) -> None:
    torch.manual_seed(0)
    model = TwoGlance(in_channels=3, num_classes=4, image_size=32, image_width=48, channels=(8,), pool_stride=2,
                      patch_size=16, patch_stride=8, thumb_size=16, top_k=2, selection="nms").eval()
    assert model.grid == (3, 5)
    Image.fromarray(noise(60, 100, 3)).save(tmp_path / "wide.png")
    Image.fromarray(noise(120, 40, 3)).save(tmp_path / "tall.png")
    classes = list("abcd")
    preds, errors = predict_files(model, classes, [tmp_path], patches=3)
    assert errors == [] and len(preds) == 2
    for pred in preds:
        x = prepare(np.asarray(Image.open(pred.file)), 32, 48)[None]  # (1, 3, 32, 48)
        logits, index = model.infer(x, "hard", 3)
        assert pred.patches == index[0].tolist() and len(set(pred.patches)) == 3
        assert pred.label == classes[int(logits.argmax())]
        s = max(32 / pred.height, 48 / pred.width)
        assert len(pred.patch_boxes) == 3 and pred.patch_box == pred.patch_boxes[0]
        for (x0, y0, x1, y1), i in zip(pred.patch_boxes, pred.patches):
            assert x1 - x0 == pytest.approx(16 / s, abs=0.01) and y1 - y0 == pytest.approx(16 / s, abs=0.01)
            assert 0 <= x0 < x1 <= pred.width + 1e-6 and 0 <= y0 < y1 <= pred.height + 1e-6
            mx0, my0 = model.patch_boxes()[i, :2].tolist()
            ox, oy = (pred.width - 48 / s) / 2, (pred.height - 32 / s) / 2  # where the crop starts
            assert x0 == pytest.approx(ox + mx0 / s, abs=0.01) and y0 == pytest.approx(oy + my0 / s, abs=0.01)
    # the default k is the model's top_k
    assert len(predict_files(model, classes, [tmp_path / "wide.png"])[0][0].patch_boxes) == 2


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


def test_overlays_draw_all_k_patches_top_one_emphasised(tmp_path) -> None:
    torch.manual_seed(1)
    model = create_model("paper-cifar10-two-s2").eval()  # 4x4 patches of 8 on 32, disjoint
    Image.fromarray(noise(64, 64, 3)).save(tmp_path / "img.png")
    [pred], _ = predict_files(model, [f"c{i}" for i in range(10)], [tmp_path / "img.png"], patches=3,
                              overlays=tmp_path / "out")
    assert len(pred.patch_boxes) == 3 and len(set(pred.patches)) == 3
    with Image.open(tmp_path / "out" / "img.png") as img:
        a = np.asarray(img)
    assert a.shape == (64, 64, 3)
    for rank, (x0, y0, x1, y1) in enumerate(pred.patch_boxes):  # boxes of 16 pixels (scale 1/2)
        assert x1 - x0 == 16
        colour = TOP_COLOUR if rank == 0 else OTHER_COLOUR
        assert tuple(a[int(y0) + 8, int(x0)]) == colour and tuple(a[int(y0) + 8, int(x1) - 1]) == colour


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
    assert all(r["patch_boxes"] == [r["patch_box"]] and r["patches"] == [r["patch"]] for r in result["predictions"])

    assert main(["predict", str(tiny_run), str(image_folder / "odd.bmp"), str(image_folder / "rgb.png"),
                 "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [Path(r["file"]).name for r in rows] == ["odd.bmp", "rgb.png"]
    assert all(0 < float(r["probability"]) <= 1 and r["class"] in "0123456789" for r in rows)
    by_json = {Path(r["file"]).name: r for r in result["predictions"]}
    assert rows[0]["class"] == by_json["odd.bmp"]["class"] and int(rows[0]["patch"]) == by_json["odd.bmp"]["patch"]
    assert [float(v) for v in rows[0]["patch_boxes"].split()] == by_json["odd.bmp"]["patch_box"]
    assert rows[0]["patches"] == str(by_json["odd.bmp"]["patch"])

    assert main(["predict", str(tiny_run), str(image_folder / "rgb.png"), "--patches", "2", "--csv"]) == 0
    [row] = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(row["patches"].split()) == 2 and len(row["patch_boxes"].split(";")) == 2
    assert row["patches"].split()[0] == row["patch"]

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
