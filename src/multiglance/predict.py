"""A user's image files -> class, probability and the patch glance 1 chose.

    multiglance predict runs/tiny-two photo.jpg scans/ --top-k 3 --save-overlays overlays/
    multiglance predict runs/digits-two digits/ --csv > predictions.csv

Any image Pillow reads (see `data/images.py`: any size, mode, bit depth; EXIF orientation applied) is
converted to the model's channels (grayscale "L" for a one-channel model, RGB otherwise; transparency
composited on black) and then the WHOLE image is resized, antialiased (bilinear), to the model's square
input (`model.image_size`): the aspect ratio is not kept, nothing is cropped. The chosen patch is reported
in the original image's pixels: the patch box (x0, y0, x1, y1) in model pixels, scaled by W / size and
H / size. Folders are searched recursively for files with an image extension; a file that cannot be
decoded is reported (stderr, or `errors` in the JSON) and skipped, the others are still predicted.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .data.images import load_image_file
from .errors import DataError, UserError
from .models.glances import resize

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass
class Prediction:
    file: str
    width: int  # the original image's size
    height: int
    label: str  # the most probable class
    probability: float
    top_k: list[tuple[str, float]] = field(default_factory=list)  # the K most probable (class, probability)
    patch: int | None = None  # the patch glance 2 classified (row-major index), None for one-glance models
    patch_box: list[float] | None = None  # that patch as (x0, y0, x1, y1) in the original image's pixels

    def row(self) -> dict:
        return {"file": self.file, "width": self.width, "height": self.height, "class": self.label,
                "probability": self.probability, "top_k": [[c, p] for c, p in self.top_k], "patch": self.patch,
                "patch_box": self.patch_box}


def run_classes(cfg, data: str | None = None, run_dir: str | os.PathLike | None = None) -> list[str]:
    """The class names of a run: saved in its folder (classes.json), else those of its data set's test split,
    else "0", "1", ... when the data set cannot be found."""
    from .data import load_split
    from .runs import load_classes

    saved = load_classes(run_dir) if run_dir is not None and data is None else None
    if saved is not None and len(saved) == cfg.model.num_classes:
        return saved
    try:
        classes = load_split(cfg.data.name, data if data is not None else cfg.data.root, "test").classes
    except DataError:
        classes = []
    if len(classes) != cfg.model.num_classes:
        print(f"note: the class names of {cfg.data.name!r} are not available (pass --data); printing class "
              "indices", file=sys.stderr)
        return [str(i) for i in range(cfg.model.num_classes)]
    return list(classes)


def find_images(paths: list[str | os.PathLike]) -> list[Path]:
    """Files as given, and the image files under folders (recursively, sorted). A missing path is a UserError."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise UserError(f"{p}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
            files += found
        elif p.exists():
            files.append(p)
        else:
            raise UserError(f"{p}: no such file or folder; check the path")
    return files


def prepare(image: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (H, W, C) -> float (C, size, size) in [0, 1]: the whole image resized, antialiased."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float().div_(255)  # (1, C, H, W)
    return resize(x, size)[0].clamp_(0, 1)  # (C, size, size)


def original_box(box: list[int], width: int, height: int, size: int) -> list[float]:
    """A box in model pixels -> the same box in the original image's pixels."""
    sx, sy = width / size, height / size
    return [round(box[0] * sx, 2), round(box[1] * sy, 2), round(box[2] * sx, 2), round(box[3] * sy, 2)]


@torch.no_grad()
def predict_arrays(model: nn.Module, images: list[np.ndarray], classes: list[str], *, top_k: int = 1,
                   patches: int | None = None) -> list[dict]:
    """Predictions for uint8 (H, W, C) arrays: [{label, probability, top_k, patch, patch_box}, ...]."""
    size = model.image_size
    x = torch.stack([prepare(a, size) for a in images])  # (B, C, size, size)
    if model.kind == "two":
        probs, index = model.classify(x, k=patches)  # (B, K), (B,)
    else:
        probs, index = model.classify(x)[0], None
    k = min(top_k, probs.shape[1])
    best = probs.topk(k, dim=-1)  # (B, k)
    out = []
    for i, a in enumerate(images):
        h, w = a.shape[:2]
        tops = [(classes[c], round(p, 6)) for c, p in zip(best.indices[i].tolist(), best.values[i].tolist())]
        row = {"label": tops[0][0], "probability": tops[0][1], "top_k": tops, "patch": None, "patch_box": None}
        if index is not None:
            p = int(index[i])
            row |= {"patch": p, "patch_box": original_box(model.patch_boxes()[p].tolist(), w, h, size)}
        out.append(row)
    return out


def predict_files(model: nn.Module, classes: list[str], paths: list[str | os.PathLike], *, top_k: int = 1,
                  patches: int | None = None, batch_size: int = 64,
                  overlays: str | os.PathLike | None = None) -> tuple[list[Prediction], list[tuple[str, str]]]:
    """Predict every image under `paths`. Returns (predictions, errors as (file, message)); unreadable files
    are skipped. `overlays`: a folder to write each image with its chosen patch outlined (PNG)."""
    if top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {top_k}")
    if patches is not None and model.kind == "two" and not 1 <= patches <= model.num_patches:
        raise UserError(f"--patches must be between 1 and the model's {model.num_patches} patches, got {patches}")
    mode = "L" if model.normalize.mean.numel() == 1 else "RGB"
    files = find_images(paths)
    preds, errors, names = [], [], set()
    out_dir = _overlay_dir(overlays)
    for start in range(0, len(files), batch_size):
        batch, images = [], []
        for f in files[start:start + batch_size]:
            try:
                images.append(load_image_file(f, mode))  # (H, W, C) uint8
                batch.append(f)
            except DataError as e:
                errors.append((str(f), str(e)))
        if not images:
            continue
        for f, a, row in zip(batch, images, predict_arrays(model, images, classes, top_k=top_k, patches=patches)):
            p = Prediction(file=str(f), width=a.shape[1], height=a.shape[0], label=row["label"],
                           probability=row["probability"], top_k=row["top_k"], patch=row["patch"],
                           patch_box=row["patch_box"])
            preds.append(p)
            if out_dir is not None:
                save_overlay(a, p, _unique(out_dir, f.stem, names))
    return preds, errors


def _overlay_dir(path: str | os.PathLike | None) -> Path | None:
    if path is None:
        return None
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {str(path)!r} ({e.strerror}); choose another --save-overlays") from None
    return Path(path)


def _unique(folder: Path, stem: str, taken: set[str]) -> Path:
    """folder/stem.png, or stem-2.png, stem-3.png... when two inputs share a name."""
    name, n = f"{stem}.png", 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}.png"
    taken.add(name)
    return folder / name


def save_overlay(image: np.ndarray, p: Prediction, path: Path) -> None:
    """The original image (RGB) with the chosen patch outlined in red and the answer written in the corner."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).convert("RGB")
    draw = ImageDraw.Draw(img)
    line = max(1, round(min(img.size) / 64))
    if p.patch_box is not None:
        x0, y0, x1, y1 = p.patch_box
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=(255, 40, 40), width=line)
    draw.text((2, 2), f"{p.label} {p.probability:.2f}", fill=(255, 255, 0))
    try:
        img.save(path)
    except OSError as e:
        raise UserError(f"cannot write {str(path)!r} ({e.strerror}); choose another --save-overlays") from None
