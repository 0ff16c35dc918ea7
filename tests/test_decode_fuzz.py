"""Fuzz test of image decoding (data/images.py) and of `predict` on damaged files: a few thousand seeded
mutations (bit flips, truncations, duplicated or deleted chunks, overwritten bytes) of small valid PNG, JPEG,
GIF and WebP files. Each is decoded to a uint8 array or refused with a one-line DataError naming the file,
never another exception, never slower than the per-case bound."""
from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from multiglance.data.images import decode_image
from multiglance.errors import DataError

from conftest import FUZZ, examples

CASES = examples(3000)  # decode_image cases (seeded): about 1 s on one core; 100,000 found nothing either
SWEEP_SEED = int.from_bytes(os.urandom(4), "big") if FUZZ else 2026  # MULTIGLANCE_FUZZ=1: a new seed, named on failure
PREDICTED = 200
BOUND_S = 2.0  # no single file may take longer than this to decode or refuse


def _seeds() -> dict[str, bytes]:
    """Small valid files of each format and a few storage modes."""
    rng = np.random.default_rng(0)
    smooth = np.linspace(0, 255, 24 * 20, dtype=np.uint8).reshape(20, 24)  # (H, W)
    rgb = np.stack([smooth, smooth[::-1], 255 - smooth], -1)  # (H, W, 3)
    noise = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    out = {}

    def save(key: str, img: Image.Image, fmt: str, **kw) -> None:
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        out[key] = buf.getvalue()

    save("rgb.png", Image.fromarray(noise), "PNG")
    save("gray.png", Image.fromarray(smooth, "L"), "PNG")
    save("rgba.png", Image.fromarray(np.dstack([noise, smooth]), "RGBA"), "PNG")
    save("palette.png", Image.fromarray(noise).quantize(16), "PNG")
    save("interlaced.png", Image.fromarray(rgb), "PNG", optimize=False, interlace=1)
    save("rgb.jpg", Image.fromarray(rgb), "JPEG", quality=80)
    save("progressive.jpg", Image.fromarray(noise), "JPEG", quality=70, progressive=True)
    save("gray.jpg", Image.fromarray(smooth, "L"), "JPEG")
    save("still.gif", Image.fromarray(noise).quantize(32), "GIF")
    frames = [Image.fromarray(np.roll(noise, i, axis=1)).quantize(8) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    out["animated.gif"] = buf.getvalue()
    save("lossy.webp", Image.fromarray(rgb), "WEBP", quality=60)
    save("lossless.webp", Image.fromarray(noise), "WEBP", lossless=True)
    save("alpha.webp", Image.fromarray(np.dstack([noise, smooth]), "RGBA"), "WEBP", lossless=True)
    return out


SEEDS = _seeds()
NAMES = sorted(SEEDS)


def mutate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """One or more seeded mutations of `data`; returns the bytes and what was done."""
    b, done = bytearray(data), []
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(0, 6))
        n = len(b)
        if n < 2:
            break
        if kind == 0:  # flip 1-8 bits anywhere, the headers included
            for _ in range(int(rng.integers(1, 9))):
                i = int(rng.integers(0, n))
                b[i] ^= 1 << int(rng.integers(0, 8))
            done.append("bits")
        elif kind == 1:  # truncate
            b = b[: int(rng.integers(1, n))]
            done.append("cut")
        elif kind == 2:  # duplicate a chunk somewhere else
            i, j = sorted(int(v) for v in rng.integers(0, n, 2))
            k = int(rng.integers(0, n))
            b[k:k] = b[i:j + 1]
            done.append("dup")
        elif kind == 3:  # delete a chunk
            i, j = sorted(int(v) for v in rng.integers(0, n, 2))
            del b[i:j + 1]
            done.append("del")
        elif kind == 4:  # overwrite a few bytes with 0x00 / 0xff / random (lengths and sizes go wild)
            i = int(rng.integers(0, n))
            fill = [0, 255, int(rng.integers(0, 256))][int(rng.integers(0, 3))]
            b[i:i + int(rng.integers(1, 5))] = bytes([fill]) * len(b[i:i + 4])
            done.append("fill")
        else:  # the same bytes repeated (a file written twice)
            b = b + b[: int(rng.integers(1, n))]
            done.append("tail")
    return bytes(b), "+".join(done)


def check_one(data: bytes, name: str, mode: str) -> str:
    start = time.perf_counter()
    try:
        out = decode_image(data, name, mode)
        result = "decoded"
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == (1 if mode == "L" else 3)
        assert out.shape[0] > 0 and out.shape[1] > 0 and out.flags.c_contiguous
    except DataError as e:
        message = str(e)
        assert name in message and "\n" not in message, message
        result = "refused"
    elapsed = time.perf_counter() - start
    assert elapsed < BOUND_S, f"{name}: {elapsed:.2f} s to decode or refuse"
    return result


def test_mutated_images_decode_or_raise_one_line_data_errors() -> None:
    rng = np.random.default_rng(SWEEP_SEED)
    counts: dict[str, int] = {}
    for case in range(CASES):
        seed = NAMES[case % len(NAMES)]
        data, how = mutate(SEEDS[seed], rng)
        result = check_one(data, f"sweep{SWEEP_SEED}-case{case}-{how}-{seed}", "L" if case % 3 == 0 else "RGB")
        counts[result] = counts.get(result, 0) + 1
    # both outcomes occur in numbers: the mutations are neither all harmless nor all fatal
    assert counts.get("decoded", 0) > CASES // 10 and counts.get("refused", 0) > CASES // 10, counts


def test_unmutated_seeds_decode() -> None:
    for name, data in SEEDS.items():
        assert decode_image(data, name).shape[:2] == (20, 24), name


def test_predict_on_a_folder_of_mutated_files(tiny_run: Path, tmp_path: Path) -> None:
    from multiglance.predict import predict_files
    from multiglance.runs import load_run

    rng = np.random.default_rng(7)
    folder = tmp_path / "mutated"
    folder.mkdir()
    for i in range(PREDICTED):
        seed = NAMES[i % len(NAMES)]
        data, _ = mutate(SEEDS[seed], rng)
        (folder / f"{i:03d}{Path(seed).suffix}").write_bytes(data)
    (folder / "good.png").write_bytes(SEEDS["rgb.png"])
    model, cfg = load_run(tiny_run)
    classes = [str(i) for i in range(cfg.model.num_classes)]
    start = time.perf_counter()
    preds, errors = predict_files(model, classes, [folder], batch_size=32)
    assert time.perf_counter() - start < BOUND_S * 20
    assert len(preds) + len(errors) == PREDICTED + 1  # every file is predicted or reported, none lost
    assert any(p.file.endswith("good.png") for p in preds) and preds and errors
    for p in preds:
        assert p.label in classes and 0 <= p.probability <= 1 and p.width > 0 and p.height > 0
    for file, message in errors:
        assert Path(file).name in message and "\n" not in message, message


@pytest.mark.parametrize("name", NAMES)
def test_every_prefix_of_a_seed_is_decoded_or_refused(name: str) -> None:
    data = SEEDS[name]
    for cut in range(0, len(data), max(1, len(data) // 40)):  # about 40 truncation points per file
        check_one(data[:cut], f"prefix{cut}-{name}", "RGB")
