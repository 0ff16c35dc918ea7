"""Decoding any image file safely into a uint8 array (H, W, C).

`decode_image(data, name)` turns the bytes of a JPEG, PNG, BMP, GIF, WebP, TIFF... into RGB (C=3) or
grayscale (C=1) uint8, whatever the stored mode: palette, grayscale and 1-bit are expanded, 16-bit and
32-bit samples are scaled to 8 bits, CMYK and YCbCr are converted, and transparency is composited on black
(a transparent pixel is black, a half-transparent one half as bright). Animated files give their first
frame. Anything that is not a readable image (empty, truncated, a text file named `.jpg`, over the pixel
limit) is a `DataError` naming the file. The limit guards against decompression bombs (a small file that
declares a huge image); it is `MAX_PIXELS` unless `$MULTIGLANCE_MAX_PIXELS` or `set_max_pixels(n)` (the
config's `data.max_pixels`) raises or lowers it, and Pillow's own guard is kept at least as high.
`load_image_file(path)` does the same for a user's image on disk and also applies its EXIF orientation, as
a photo viewer would; `read_image_file(path)` is its first half, the file's bytes (at most MAX_FILE_BYTES).
"""
from __future__ import annotations

import io
import math
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import DataError

MAX_PIXELS = 1 << 26  # 67 M pixels (an 8192 x 8192 image): larger is refused before any pixel is decoded
ENV_MAX_PIXELS = "MULTIGLANCE_MAX_PIXELS"
MAX_FILE_BYTES = 1 << 28  # 256 MiB: the largest image file `load_image_file` reads

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_WIDE_MODES = {"I", "F"}  # 32-bit integer / float samples


def _wide_to_uint8(img: Image.Image) -> np.ndarray:
    """16/32-bit integer or float grayscale -> uint8 (H, W): 16 bits keep their top 8, floats in [0, 1]
    are scaled by 255, anything else is clipped to [0, 255]."""
    a = np.asarray(img)
    if img.mode.startswith("I;16"):
        return (a.astype(np.uint16) >> 8).astype(np.uint8)
    if img.mode == "F":
        a = np.nan_to_num(a.astype(np.float64))
        a = a * 255.0 if a.size and a.max() <= 1.0 else a
        return np.clip(np.rint(a), 0, 255).astype(np.uint8)
    a = a.astype(np.int64)
    if a.size and a.max() > 255:  # a 16-bit image stored as 32-bit integers
        a = np.clip(a, 0, 65535) >> 8
    return np.clip(a, 0, 255).astype(np.uint8)


def _to_array(img: Image.Image, mode: str) -> np.ndarray:
    """A loaded PIL image in any mode -> uint8 (H, W, 3) for mode "RGB" or (H, W, 1) for mode "L"."""
    if img.mode.startswith("I;16") or img.mode in _WIDE_MODES:
        gray = _wide_to_uint8(img)[..., None]  # (H, W, 1)
        return gray if mode == "L" else np.repeat(gray, 3, axis=2)
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.uint16)  # (H, W, 4)
        rgb = ((rgba[..., :3] * rgba[..., 3:] + 127) // 255).astype(np.uint8)  # composite on black
        img = Image.fromarray(rgb, "RGB")
    elif img.mode == "1":
        img = img.convert("L")
    elif img.mode not in ("RGB", "L"):
        img = img.convert("RGB")  # P, CMYK, YCbCr, LAB, HSV, ...
    if mode == "L":
        return np.asarray(img if img.mode == "L" else img.convert("L"))[..., None]
    a = np.asarray(img)
    return a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=2)


def pixel_limit() -> int:
    """The pixel limit in force: `$MULTIGLANCE_MAX_PIXELS` if set (by the user, or by `set_max_pixels`, so
    that DataLoader worker processes inherit it), else `MAX_PIXELS`."""
    text = os.environ.get(ENV_MAX_PIXELS, "").strip()
    if not text:
        return MAX_PIXELS
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise DataError(f"{ENV_MAX_PIXELS}={os.environ[ENV_MAX_PIXELS]!r} must be a whole number of pixels >= 1 "
                        f"(e.g. {MAX_PIXELS}); fix or unset it")
    return n


_ours: tuple[str | None, str] | None = None  # (the value before our first set, the value set_max_pixels wrote)


def set_max_pixels(n: int | None) -> None:
    """Set the decompression-bomb limit (pixels per image) for this process and the processes it starts (the
    config's `data.max_pixels`, through `$MULTIGLANCE_MAX_PIXELS`); None undoes an earlier call, restoring the
    user's own `$MULTIGLANCE_MAX_PIXELS` if they set one, else `MAX_PIXELS`. Pillow's own guard
    (`Image.MAX_IMAGE_PIXELS`) is raised to match if needed."""
    global _ours
    current = os.environ.get(ENV_MAX_PIXELS)
    mine = _ours is not None and current == _ours[1]  # still the value we wrote
    if n is None:
        if mine and _ours[0] is None:
            os.environ.pop(ENV_MAX_PIXELS, None)
        elif mine:
            os.environ[ENV_MAX_PIXELS] = _ours[0]
        _ours = None
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(f"the pixel limit must be a whole number >= 1, got {n!r}; set data.max_pixels to one")
    _ours = (_ours[0] if mine else current, str(n))
    os.environ[ENV_MAX_PIXELS] = str(n)
    _raise_pillow_limit(n)


def _raise_pillow_limit(n: int) -> None:
    """Pillow refuses images over 2 * MAX_IMAGE_PIXELS in `Image.open`: keep that above our own limit."""
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < n:
        Image.MAX_IMAGE_PIXELS = n


def _one_line(e: BaseException, limit: int = 160) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:limit] if lines else "no message"


def _draft_to_cover(img: Image.Image, height: int, width: int, swap: bool) -> None:
    """Ask Pillow to decode at the smallest JPEG scale that still covers (height, width) once oriented
    (`swap`: the EXIF orientation turns the image a quarter)."""
    w, h = img.size
    dw, dh = (h, w) if swap else (w, h)  # as displayed
    s = max(height / dh, width / dw)  # the covering scale
    need = (math.ceil(dw * s), math.ceil(dh * s))
    img.draft(None, need[::-1] if swap else need)


def decode_image(data: bytes, name: str, mode: str = "RGB", *, max_pixels: int | None = None,
                 orient: bool = False, cover: tuple[int, int] | None = None) -> np.ndarray:
    """The pixels of image file bytes `data` as uint8 (H, W, 3) for mode "RGB" or (H, W, 1) for "L".

    `name` is only used in error messages. `orient` applies the EXIF orientation tag (for photos).
    `max_pixels`: refuse larger images (default: `pixel_limit()`). `cover=(height, width)`: a JPEG much larger
    than that may be decoded at 1/2, 1/4 or 1/8 scale (`Image.draft`), never below the size that covers it as
    displayed. Raises DataError, and only DataError, for anything that cannot be decoded.
    """
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', not {mode!r}")
    if not data:
        raise DataError(f"{name}: empty file (0 bytes); replace or remove it")
    limit = max_pixels if max_pixels is not None else pixel_limit()
    _raise_pillow_limit(limit)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bomb warnings (our limit decides), "Corrupt EXIF data", ...
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size
                if w * h > limit:
                    raise DataError(f"{name}: {w}x{h} pixels, over the limit of {limit}; refusing a possible "
                                    f"decompression bomb: resize the image, or raise the limit (data.max_pixels, "
                                    f"or {ENV_MAX_PIXELS}={w * h}) if the file is genuine")
                orientation = img.getexif().get(0x0112, 1) if orient else 1
                if cover is not None:  # a no-op for formats other than JPEG
                    _draft_to_cover(img, *cover, swap=orientation in (5, 6, 7, 8))
                img.load()  # decodes the first frame; raises on truncation
                if orientation in (2, 3, 4, 5, 6, 7, 8):
                    img = ImageOps.exif_transpose(img)
                out = _to_array(img, mode)
    except DataError:
        raise
    except Image.UnidentifiedImageError:
        raise DataError(f"{name}: not an image Pillow can read (a wrong extension or a corrupt file?); "
                        "replace or remove it") from None
    except Image.DecompressionBombError:
        raise DataError(f"{name}: too many pixels; refusing a possible decompression bomb: resize the image, or "
                        f"raise the limit (data.max_pixels, or {ENV_MAX_PIXELS}) if the file is genuine") from None
    except Exception as e:  # noqa: BLE001 - Pillow's decoders raise many types on hostile bytes
        raise DataError(f"{name}: cannot decode the image ({type(e).__name__}: {_one_line(e)}); the file is "
                        "truncated or corrupt, replace or remove it") from e
    if out.ndim != 3 or out.shape[0] == 0 or out.shape[1] == 0:
        raise DataError(f"{name}: the image has no pixels ({w}x{h}); replace or remove it")
    out = np.ascontiguousarray(out, dtype=np.uint8)
    return out if out.flags.writeable else out.copy()


def read_image_file(path: str | os.PathLike) -> bytes:
    """The bytes of a user's image file; DataError (naming it) if it is not a readable file of at most
    MAX_FILE_BYTES."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such image file" + ("" if not p.exists() else " (it is a folder)")
                        + "; check the path")
    size = p.stat().st_size
    if size > MAX_FILE_BYTES:
        raise DataError(f"{p}: {size} bytes, over the limit of {MAX_FILE_BYTES} for one image; resize it first")
    try:
        return p.read_bytes()
    except OSError as e:
        raise DataError(f"{p}: cannot read the file ({e.strerror}); check its permissions") from e


def load_image_file(path: str | os.PathLike, mode: str = "RGB") -> np.ndarray:
    """A user's image file on disk -> uint8 (H, W, C), EXIF orientation applied; DataError if unreadable."""
    return decode_image(read_image_file(path), str(Path(path)), mode, orient=True)


def fit(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (h, w, C) -> (height, width, C): scaled to cover, bilinear antialiased, centre-cropped."""
    h, w, c = pixels.shape
    if (h, w) == (height, width):
        return np.ascontiguousarray(pixels)
    s = max(height / h, width / w)
    bw, bh = width / s, height / s  # the crop box in source pixels
    box = ((w - bw) / 2, (h - bh) / 2, (w + bw) / 2, (h + bh) / 2)
    img = Image.fromarray(pixels[..., 0] if c == 1 else pixels)
    out = np.asarray(img.resize((width, height), Image.Resampling.BILINEAR, box=box, reducing_gap=3.0))
    return out.reshape(height, width, c)  # (H, W, C)
