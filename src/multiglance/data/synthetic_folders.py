"""Generated class-folder trees for tests and benchmarks: ROOT/{train,test}/CLASS/*.jpg of simple shapes.

    root = make_shape_folder(tmp / "shapes", n_per_class=6, size=48, seed=1)   # 12 train, 6 test images

`shape_image(kind, size, rng)` draws one white circle, square, triangle or cross on dark noise; the tree can
also hold unreadable files (`corrupt`) and images in unusual modes (`modes`: L, RGBA, CMYK, P, I;16, EXIF 6).
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image


def shape_mask(kind: str, size: int, cy: int, cx: int, r: int) -> np.ndarray:
    """bool (size, size): a circle, square, triangle or cross of half-size r centred at (cy, cx)."""
    y, x = np.mgrid[:size, :size]
    dy, dx = np.abs(y - cy), np.abs(x - cx)
    masks = {"circle": lambda: dy ** 2 + dx ** 2 <= r * r, "square": lambda: (dy <= r) & (dx <= r),
             "triangle": lambda: (dy <= r) & (2 * dx <= y - cy + r),
             "cross": lambda: ((dy <= r) & (dx <= r // 3)) | ((dx <= r) & (dy <= r // 3))}
    return masks[kind]()


def shape_image(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 (size, size, 3): dark noise with one white circle, square, triangle or cross."""
    r = int(rng.integers(max(2, size // 10), max(3, size // 5) + 1))  # half-size of the shape
    cy, cx = (int(v) for v in rng.integers(r, size - r, 2))
    img = rng.integers(0, 120, (size, size, 3), dtype=np.uint8)
    img[shape_mask(kind, size, cy, cx, r)] = 255
    return img


def clutter_image(kind: str, size: int, rng: np.random.Generator, *, object_px: int = 40,
                  distractors: int = 2) -> np.ndarray:
    """uint8 (size, size, 3): dark noise, one white `kind` (circle, square, triangle or cross) `object_px` wide at
    a random place, and `distractors` grey discs of the same width elsewhere (the object is small: at 1024, 40
    pixels are 0.15% of the image)."""
    img = rng.integers(0, 120, (size, size, 3), dtype=np.uint8)
    r = object_px // 2
    y, x = np.ogrid[:size, :size]
    for _ in range(distractors):
        cy, cx = (int(v) for v in rng.integers(r, size - r, 2))
        img[(y - cy) ** 2 + (x - cx) ** 2 <= r * r] = 170
    mask = shape_mask(kind, object_px, r, r, r - 1)  # (object_px, object_px)
    cy, cx = (int(v) for v in rng.integers(0, size - object_px, 2))
    img[cy:cy + object_px, cx:cx + object_px][mask] = 255
    return img


def make_clutter_folder(root: str | os.PathLike, *, n_per_class: int, size: int = 1024,
                        classes: Sequence[str] = ("square", "circle", "cross"), n_test_per_class: int = 50,
                        seed: int = 0, **clutter: int) -> Path:
    """ROOT/{train,test}/CLASS/*.jpg of `clutter_image`s (deterministic by `seed`): the small-object-in-a-large-image
    check of the house CNN (issue: simple shapes on 1024x1024 noise, 100 train images per class)."""
    root, rng = Path(root), np.random.default_rng(seed)
    for part, n in (("train", n_per_class), ("test", n_test_per_class)):
        for cls in classes:
            folder = root / part / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (folder / f"{cls}_{i:04d}.jpg").write_bytes(_encode(clutter_image(cls, size, rng, **clutter), "jpg"))
    return root


def _encode(pixels: np.ndarray | Image.Image, fmt: str, **kw: object) -> bytes:
    img = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    buf = io.BytesIO()
    jpeg = fmt in ("jpg", "jpeg")
    img.save(buf, "JPEG" if jpeg else fmt.upper(), **({"quality": 90} if jpeg else {}), **kw)
    return buf.getvalue()


def make_shape_folder(root: str | os.PathLike, *, n_per_class: int, size: int,
                      classes: Sequence[str] = ("circle", "square"), seed: int = 0, corrupt: int = 0,
                      fmt: str = "jpg", modes: bool = False, n_test_per_class: int | None = None) -> Path:
    """Write a class-folder tree ROOT/{train,test}/CLASS/*.{fmt} of `shape_image`s, deterministic by `seed`.

    Class k draws the k-th of circle, square, triangle, cross (cycling). Test gets `n_test_per_class`
    (default n_per_class // 2, at least 1) per class. `corrupt` adds that many unreadable files to the first
    class of train/ (`corrupt_*.jpg`: truncated JPEG bytes and text named .jpg, alternately); `modes` adds
    `odd_*` files there in modes L, RGBA, CMYK, P, I;16 and one JPEG with EXIF orientation 6."""
    root, rng = Path(root), np.random.default_rng(seed)
    kinds = ("circle", "square", "triangle", "cross")
    n_test = max(1, n_per_class // 2) if n_test_per_class is None else n_test_per_class
    for part, n in (("train", n_per_class), ("test", n_test)):
        for k, cls in enumerate(classes):
            folder = root / part / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                kind = cls if cls in kinds else kinds[k % len(kinds)]
                (folder / f"{cls}_{i:04d}.{fmt}").write_bytes(_encode(shape_image(kind, size, rng), fmt))
    first = root / "train" / classes[0]
    for i in range(corrupt):
        data = _encode(shape_image("circle", size, rng), "jpg")
        bad = data[: len(data) // 2] if i % 2 == 0 else b"this is not an image\n"
        (first / f"corrupt_{i:02d}.jpg").write_bytes(bad)
    if modes:
        pic = Image.fromarray(shape_image("circle", size, rng))
        rgba = np.dstack([np.asarray(pic), np.full((size, size), 128, np.uint8)])
        odd = {"odd_L.png": (pic.convert("L"), "png"), "odd_RGBA.png": (Image.fromarray(rgba, "RGBA"), "png"),
               "odd_CMYK.jpg": (pic.convert("CMYK"), "jpg"), "odd_P.png": (pic.convert("P"), "png"),
               "odd_I16.png": (Image.fromarray(np.asarray(pic.convert("L")).astype(np.uint16) * 257), "png")}
        for name, (img, f) in odd.items():
            (first / name).write_bytes(_encode(img, f))
        exif = Image.Exif()
        exif[0x0112] = 6  # stored sideways: a viewer rotates it 90 degrees clockwise
        (first / "odd_exif6.jpg").write_bytes(_encode(pic, "jpg", exif=exif))
    return root
