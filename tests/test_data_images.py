"""Tests for data/images.py: every stored mode decodes to the expected uint8 pixels; bad files are DataErrors."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from multiglance.data.images import decode_image, load_image_file
from multiglance.errors import DataError

from conftest import examples

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)  # (H, W, 3)


def encode(img: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def gray_of(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).convert("L"))[..., None]


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP"])
def test_rgb_round_trips_exactly(fmt: str) -> None:
    kw = {"lossless": True} if fmt == "WEBP" else {}
    out = decode_image(encode(Image.fromarray(RGB), fmt, **kw), "x")
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3) and out.flags.writeable
    np.testing.assert_array_equal(out, RGB)
    np.testing.assert_array_equal(decode_image(encode(Image.fromarray(RGB), fmt, **kw), "x", "L"), gray_of(RGB))


def test_jpeg_is_close() -> None:
    smooth = np.repeat(np.linspace(0, 255, 16, dtype=np.uint8)[None, :, None], 16, 0).repeat(3, 2)
    out = decode_image(encode(Image.fromarray(smooth), "JPEG", quality=95), "x.jpg")
    assert out.shape == (16, 16, 3) and np.abs(out.astype(int) - smooth).max() <= 8


def test_grayscale_is_expanded_to_rgb() -> None:
    gray = RGB[..., 0]
    data = encode(Image.fromarray(gray, "L"))
    np.testing.assert_array_equal(decode_image(data, "x"), np.repeat(gray[..., None], 3, 2))
    np.testing.assert_array_equal(decode_image(data, "x", "L"), gray[..., None])


def test_one_bit_gives_0_and_255() -> None:
    bits = Image.fromarray(RGB[..., 0] > 127)
    out = decode_image(encode(bits), "x", "L")
    np.testing.assert_array_equal(out[..., 0], np.where(RGB[..., 0] > 127, 255, 0))


def test_palette_uses_its_colours() -> None:
    pal = Image.new("P", (3, 1))
    pal.putpalette([10, 20, 30, 200, 100, 0, 0, 0, 255] + [0] * 759)
    pal.putdata([0, 1, 2])
    np.testing.assert_array_equal(decode_image(encode(pal), "x")[0], [[10, 20, 30], [200, 100, 0], [0, 0, 255]])
    for fmt in ("GIF", "BMP"):
        np.testing.assert_array_equal(decode_image(encode(pal, fmt), "x")[0, 2], [0, 0, 255])


def test_transparency_is_composited_on_black() -> None:
    rgba = np.array([[[200, 100, 50, 255], [200, 100, 50, 128], [200, 100, 50, 0]]], np.uint8)
    out = decode_image(encode(Image.fromarray(rgba, "RGBA")), "x")
    np.testing.assert_array_equal(out[0], [[200, 100, 50], [100, 50, 25], [0, 0, 0]])
    la = Image.fromarray(np.array([[[90, 255], [90, 0]]], np.uint8), "LA")
    np.testing.assert_array_equal(decode_image(encode(la), "x", "L")[0, :, 0], [90, 0])
    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 255, 255, 0, 255, 0] + [0] * 762)
    pal.putdata([0, 1])
    out = decode_image(encode(pal, transparency=0), "x")  # palette entry 0 is transparent
    np.testing.assert_array_equal(out[0], [[0, 0, 0], [0, 255, 0]])


def test_sixteen_bit_keeps_the_top_eight_bits() -> None:
    wide = RNG.integers(0, 65536, (4, 6), dtype=np.uint16)
    out = decode_image(encode(Image.fromarray(wide)), "x16.png")
    np.testing.assert_array_equal(out, np.repeat((wide >> 8).astype(np.uint8)[..., None], 3, 2))


def test_float_and_cmyk() -> None:
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), "F")
    np.testing.assert_array_equal(decode_image(encode(floats, "TIFF"), "f", "L")[0, :, 0], [0, 128, 255])
    cmyk = Image.frombytes("CMYK", (2, 1), bytes([0, 0, 0, 0, 0, 255, 255, 0]))
    np.testing.assert_array_equal(decode_image(encode(cmyk, "TIFF"), "c")[0], [[255, 255, 255], [255, 0, 0]])


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (2, 2), c) for c in [(255, 0, 0), (0, 0, 255)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    np.testing.assert_array_equal(decode_image(data, "a.gif"), np.full((2, 2, 3), [255, 0, 0]))


@pytest.mark.parametrize("data,match", [
    (b"", "empty file"),
    (b"just some text, named .jpg", "not an image"),
    (encode(Image.fromarray(RGB))[:60], "truncated|cannot decode|not an image"),
    (encode(Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)), "JPEG")[:400], "truncated"),
])
def test_bad_files_are_data_errors_naming_the_file(data: bytes, match: str) -> None:
    with pytest.raises(DataError, match=match) as err:
        decode_image(data, "train/cat/0001.jpg")
    assert "train/cat/0001.jpg" in str(err.value) and "\n" not in str(err.value)


def png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))


@pytest.mark.parametrize("side", [10_000, 100_000])  # over our limit / over Pillow's own
def test_decompression_bomb_is_refused_before_decoding(side: int) -> None:
    with pytest.raises(DataError, match="decompression bomb"):
        decode_image(png_header_only(side, side), "bomb.png")
    with pytest.raises(DataError, match="over the limit of 20"):
        decode_image(encode(Image.fromarray(RGB)), "x", max_pixels=20)


def test_load_image_file_applies_exif_orientation(tmp_path: Path) -> None:
    img = Image.fromarray(RGB)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    img.save(tmp_path / "photo.png", exif=exif.tobytes())
    np.testing.assert_array_equal(load_image_file(tmp_path / "photo.png"), np.rot90(RGB, k=-1))
    np.testing.assert_array_equal(decode_image((tmp_path / "photo.png").read_bytes(), "x"), RGB)


def test_load_image_file_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such image file"):
        load_image_file(tmp_path / "missing.png")
    with pytest.raises(DataError, match="it is a folder"):
        load_image_file(tmp_path)
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="a.png"):
        load_image_file(tmp_path / "a.png")


SAMPLES = [encode(Image.fromarray(RGB), f) for f in ("PNG", "JPEG", "GIF", "BMP", "TIFF")]


@settings(max_examples=examples(100), deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_data_error(data: bytes) -> None:
    try:
        out = decode_image(data, "random")
    except DataError:
        return
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3


@settings(max_examples=examples(150), deadline=None)
@given(st.sampled_from(range(len(SAMPLES))), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                                                   min_size=1, max_size=6), st.integers(0, 10_000))
def test_damaged_images_raise_only_data_error(which: int, edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(SAMPLES[which])
    for pos, value in edits:
        data[pos % len(data)] = value
    try:
        out = decode_image(bytes(data[: max(cut, 8)]), "damaged", "L")
    except DataError:
        return
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 1


def test_the_pixel_limit_can_be_raised_and_says_how(monkeypatch) -> None:
    from multiglance.data import images

    monkeypatch.delenv(images.ENV_MAX_PIXELS, raising=False)
    big = png_header_only(9000, 9000)  # 81 M pixels: over MAX_PIXELS (67 M)
    with pytest.raises(DataError, match=r"over the limit of 67108864; .* raise the limit \(data.max_pixels, or "
                                        r"MULTIGLANCE_MAX_PIXELS=81000000\)") as err:
        decode_image(big, "big.png")
    assert "\n" not in str(err.value)
    monkeypatch.setenv(images.ENV_MAX_PIXELS, "81000000")
    with pytest.raises(DataError, match="cannot decode|truncated"):  # past the guard: the header has no pixels
        decode_image(big, "big.png")
    monkeypatch.setenv(images.ENV_MAX_PIXELS, "20")
    with pytest.raises(DataError, match="over the limit of 20"):
        decode_image(encode(Image.fromarray(RGB)), "x")
    monkeypatch.setenv(images.ENV_MAX_PIXELS, "lots")
    with pytest.raises(DataError, match="MULTIGLANCE_MAX_PIXELS='lots' must be a whole number"):
        decode_image(encode(Image.fromarray(RGB)), "x")


def test_set_max_pixels_sets_the_limit_for_this_and_child_processes(monkeypatch) -> None:
    import os

    from multiglance.data import images

    monkeypatch.delenv(images.ENV_MAX_PIXELS, raising=False)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    images.set_max_pixels(35)
    assert images.pixel_limit() == 35 and os.environ[images.ENV_MAX_PIXELS] == "35"
    assert decode_image(encode(Image.fromarray(RGB)), "x").shape == (5, 7, 3)  # 35 pixels: at the limit
    images.set_max_pixels(34)
    with pytest.raises(DataError, match="over the limit of 34"):
        decode_image(encode(Image.fromarray(RGB)), "x")
    images.set_max_pixels(1 << 30)  # above Pillow's own guard, which is raised to match
    assert Image.MAX_IMAGE_PIXELS >= 1 << 30
    images.set_max_pixels(None)
    assert images.pixel_limit() == images.MAX_PIXELS
    with pytest.raises(DataError, match="whole number >= 1"):
        images.set_max_pixels(0)


def test_set_max_pixels_none_keeps_the_users_own_limit(monkeypatch) -> None:
    from multiglance.data import images

    monkeypatch.setenv(images.ENV_MAX_PIXELS, "5000")
    images.set_max_pixels(None)  # a run with data.max_pixels unset: the user's environment stands
    assert images.pixel_limit() == 5000
    images.set_max_pixels(40)
    assert images.pixel_limit() == 40
    images.set_max_pixels(None)  # undone: back to the user's value, not to MAX_PIXELS
    assert images.pixel_limit() == 5000


def test_the_folder_loaders_skip_an_image_over_the_limit_and_data_max_pixels_raises_it(tmp_path: Path,
                                                                                     monkeypatch) -> None:
    import warnings

    from multiglance.data import images
    from multiglance.data.sources import load_folder
    from multiglance.data.stream import open_stream

    monkeypatch.delenv(images.ENV_MAX_PIXELS, raising=False)
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            Image.fromarray(RGB).save(tmp_path / split / c / "small.png")  # 7x5 = 35 pixels
    Image.fromarray(np.zeros((6, 7, 3), np.uint8)).save(tmp_path / "train" / "a" / "big.png")  # 42 pixels
    images.set_max_pixels(40)
    try:
        for load in (lambda: load_folder(tmp_path, "train", cache=False),
                     lambda: open_stream(tmp_path, "train", size=5, width=7).take(np.arange(3))[0]):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                out = load()
            assert len(out) == 2
            assert [str(w.message) for w in caught] == [
                f"skipping {tmp_path}/train/a/big.png: 7x6 pixels, over the limit of 40; refusing a possible "
                "decompression bomb: resize the image, or raise the limit (data.max_pixels, or "
                "MULTIGLANCE_MAX_PIXELS=42) if the file is genuine"]
        images.set_max_pixels(42)  # raised, as the message says: the image is read
        with pytest.raises(DataError, match="all images must have one size"):  # 7x6 among 7x5: decoded
            load_folder(tmp_path, "train", cache=False)
        assert open_stream(tmp_path, "train", size=5, width=7).take(np.arange(3))[1].all()
    finally:
        images.set_max_pixels(None)
