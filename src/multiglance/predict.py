"""A user's image files -> class, probability and the patches glance 2 looked at.

    multiglance predict runs/tiny-two photo.jpg scans/ --top-k 3 --save-overlays overlays/
    multiglance predict runs/photos big.jpg --patches 3 --json      # the 3 patches glance 2 classified
    multiglance predict runs/digits-two digits/ --csv > predictions.csv

Preparation, the rule streamed training data follows (`data/stream.py`, `stream.decode_fitted`): any image
Pillow reads (any size, mode, bit depth) is decoded with its EXIF orientation applied, converted to the
model's channels (grayscale "L" for a one-channel model, RGB otherwise; transparency composited on black),
scaled, bilinear with antialiasing, by the one factor s = max(H / h, W / w) that makes it just cover the
model's H x W input (`model.image_size` x `model.image_width`), and centre-cropped to H x W. An image of the
model's size is unchanged; the aspect ratio is kept, so a non-square photo loses its two far edges.

The patches are reported in the ORIGINAL image's pixels: a box (x0, y0, x1, y1) in model pixels becomes
(ox + x0 / s, oy + y0 / s, ox + x1 / s, oy + y1 / s), where (ox, oy) = ((w - W / s) / 2, (h - H / s) / 2) is
where the crop starts. A two-glance model reports every patch glance 2 classified (`--patches k`, default the
model's own top_k), best first: `patch` / `patch_box` is the top one, `patches` / `patch_boxes` all k.
Overlays draw all k on the original image, the top one in red and thicker, the others in yellow, numbered.
Folders are searched recursively for files with an image extension; a file that cannot be decoded is
reported (stderr, or `errors` in the JSON) and skipped, the others are still predicted.
"""
from __future__ import annotations

import copy
import io
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .data.images import decode_image, read_image_file
from .data.stream import decode_fitted, fit
from .errors import DataError, UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
TOP_COLOUR, OTHER_COLOUR = (255, 40, 40), (255, 210, 0)  # overlay outlines: the top patch, the other k - 1


@dataclass
class Prediction:
    file: str
    width: int  # the original image's size (as displayed: EXIF orientation applied)
    height: int
    label: str  # the most probable class
    probability: float
    top_k: list[tuple[str, float]] = field(default_factory=list)  # the K most probable (class, probability)
    patch: int | None = None  # the top patch glance 2 classified (row-major index), None for one-glance models
    patch_box: list[float] | None = None  # that patch as (x0, y0, x1, y1) in the original image's pixels
    patches: list[int] | None = None  # all k patches glance 2 classified, best first
    patch_boxes: list[list[float]] | None = None  # their boxes in the original image's pixels

    def row(self) -> dict:
        return {"file": self.file, "width": self.width, "height": self.height, "class": self.label,
                "probability": self.probability, "top_k": [[c, p] for c, p in self.top_k], "patch": self.patch,
                "patch_box": self.patch_box, "patches": self.patches, "patch_boxes": self.patch_boxes}


def run_classes(cfg, data: str | None = None, run_dir: str | os.PathLike | None = None) -> list[str]:
    """The class names of a run: saved in its folder (classes.json), else those of its data set's test split
    (read as training reads it: a large class folder is only listed), else "0", "1", ... when not found."""
    from .runs import load_classes
    from .train import load_data

    saved = load_classes(run_dir) if run_dir is not None and data is None else None
    if saved is not None and len(saved) == cfg.model.num_classes:
        return saved
    cfg = copy.deepcopy(cfg)
    if data is not None:
        cfg.data.root = data
    try:
        classes = list(load_data(cfg, ("test",))[0].classes)
    except (DataError, UserError):
        classes = []
    if len(classes) != cfg.model.num_classes:
        print(f"note: the class names of {cfg.data.name!r} are not available (pass --data); printing class "
              "indices", file=sys.stderr)
        return [str(i) for i in range(cfg.model.num_classes)]
    return classes


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


def input_shape(model: nn.Module) -> tuple[int, int, int]:
    """(C, H, W) the model reads."""
    c = model.normalize.mean.numel()
    return c, model.image_size, getattr(model, "image_width", None) or model.image_size


def prepare(image: np.ndarray, height: int, width: int | None = None) -> torch.Tensor:
    """uint8 (h, w, C) -> uint8 (C, height, width) by the module's rule: scaled to cover, centre-cropped."""
    a = fit(np.ascontiguousarray(image), height, width or height)  # (H, W, C)
    return torch.from_numpy(a.transpose(2, 0, 1).copy())  # (C, H, W), writable


def original_box(box: list[float], *, width: int, height: int, model_height: int,
                 model_width: int | None = None) -> list[float]:
    """A box in model pixels -> the same box in the original (width x height) image's pixels (undo the crop
    offset and the scale of `prepare`)."""
    mw = model_width or model_height
    s = max(model_height / height, mw / width)
    ox, oy = (width - mw / s) / 2, (height - model_height / s) / 2
    x0, y0, x1, y1 = box
    return [round(ox + x0 / s, 2), round(oy + y0 / s, 2), round(ox + x1 / s, 2), round(oy + y1 / s, 2)]


def _model_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) as the model reads it: as it is for a two-glance model, floats in [0, 1] otherwise."""
    if model.kind == "two" and getattr(model, "accepts_uint8", False):
        return x
    return x.float().div_(255)


@torch.no_grad()
def predict_batch(model: nn.Module, x: torch.Tensor, sizes: list[tuple[int, int]], classes: list[str], *,
                  top_k: int = 1, patches: int | None = None) -> list[dict]:
    """Prepared uint8 images x (B, C, H, W) and their original (width, height) -> one row per image:
    {label, probability, top_k, patch, patch_box, patches, patch_boxes}."""
    x = _model_input(model, x)
    answer = model.output(x, "hard", patches) if model.kind == "two" else model.output(x)
    probs, index = answer.probs(), answer.selected_index  # (B, K); (B, k) or None (one glance)
    boxes = None if index is None else model.patch_boxes()  # (P, 4)
    best = probs.topk(min(top_k, probs.shape[1]), dim=-1)  # (B, k')
    _, h_in, w_in = input_shape(model)
    out = []
    for i, (w, h) in enumerate(sizes):
        tops = [(classes[c], round(p, 6)) for c, p in zip(best.indices[i].tolist(), best.values[i].tolist())]
        row = {"label": tops[0][0], "probability": tops[0][1], "top_k": tops, "patch": None, "patch_box": None,
               "patches": None, "patch_boxes": None}
        if index is not None:
            chosen = index[i].tolist()
            row["patches"] = chosen
            row["patch_boxes"] = [original_box(boxes[p].tolist(), width=w, height=h, model_height=h_in,
                                               model_width=w_in) for p in chosen]
            row["patch"], row["patch_box"] = chosen[0], row["patch_boxes"][0]
        out.append(row)
    return out


def _channels(image: np.ndarray, c: int) -> np.ndarray:
    """uint8 (h, w, 1 or 3) -> (h, w, c): gray repeated, or RGB to luminance as Pillow's "L" does."""
    if image.shape[2] == c:
        return image
    if c == 3:
        return np.repeat(image, 3, axis=2)
    from PIL import Image

    return np.asarray(Image.fromarray(image).convert("L"))[..., None]


def predict_arrays(model: nn.Module, images: list[np.ndarray], classes: list[str], *, top_k: int = 1,
                   patches: int | None = None) -> list[dict]:
    """Predictions for original uint8 (h, w, C) arrays, prepared by the module's rule (see `predict_batch`)."""
    c, h, w = input_shape(model)
    x = torch.stack([prepare(_channels(a, c), h, w) for a in images])  # (B, C, H, W) uint8
    return predict_batch(model, x, [(a.shape[1], a.shape[0]) for a in images], classes, top_k=top_k,
                         patches=patches)


def displayed_size(data: bytes, name: str) -> tuple[int, int]:
    """(width, height) of an image file as shown, EXIF orientation applied (reads the header only)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Corrupt EXIF data", bomb warnings: decode_fitted has judged
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size
                orientation = img.getexif().get(0x0112, 1)
    except Exception as e:  # noqa: BLE001 - hostile headers raise many types
        raise DataError(f"{name}: cannot read the image's header ({type(e).__name__}); replace or remove it") from e
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def predict_files(model: nn.Module, classes: list[str], paths: list[str | os.PathLike], *, top_k: int = 1,
                  patches: int | None = None, batch_size: int = 64,
                  overlays: str | os.PathLike | None = None) -> tuple[list[Prediction], list[tuple[str, str]]]:
    """Predict every image under `paths`. Returns (predictions, errors as (file, message)); unreadable files
    are skipped. Each file is decoded straight to the model's input (`stream.decode_fitted`: a large JPEG is
    decoded at reduced scale), so memory holds a batch of model inputs, never a batch of full photos.
    `overlays`: a folder to write each image with its chosen patches outlined (PNG, the original size)."""
    if top_k < 1:
        raise UserError(f"--top-k must be at least 1, got {top_k}")
    if patches is not None and model.kind == "two" and not 1 <= patches <= model.num_patches:
        raise UserError(f"--patches must be between 1 and the model's {model.num_patches} patches, got {patches}")
    c, h, w = input_shape(model)
    files = find_images(paths)
    preds, errors, names = [], [], set()
    out_dir = _overlay_dir(overlays)
    for start in range(0, len(files), batch_size):
        batch, inputs, sizes, raw = [], [], [], []
        for f in files[start:start + batch_size]:
            try:
                data = read_image_file(f)
                a = decode_fitted(data, str(f), height=h, width=w, channels=c)  # (H, W, C)
                sizes.append(displayed_size(data, str(f)))
            except DataError as e:
                errors.append((str(f), str(e)))
                continue
            inputs.append(torch.from_numpy(a.transpose(2, 0, 1).copy()))  # (C, H, W)
            batch.append(f)
            raw.append(data if out_dir is not None else None)
        if not inputs:
            continue
        rows = predict_batch(model, torch.stack(inputs), sizes, classes, top_k=top_k, patches=patches)
        for f, (width, height), data, row in zip(batch, sizes, raw, rows):
            p = Prediction(file=str(f), width=width, height=height, label=row["label"],
                           probability=row["probability"], top_k=row["top_k"], patch=row["patch"],
                           patch_box=row["patch_box"], patches=row["patches"], patch_boxes=row["patch_boxes"])
            preds.append(p)
            if out_dir is not None:  # the full image, decoded again one at a time
                try:
                    image = decode_image(data, str(f), "L" if c == 1 else "RGB", orient=True)  # (height, width, C)
                except DataError as e:  # decoded at reduced scale, but not whole: predicted, no overlay
                    errors.append((str(f), f"{e} (predicted; no overlay written)"))
                    continue
                save_overlay(image, p, _unique(out_dir, f.stem, names))
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
    """The original image (RGB) with the answer written in the corner and every chosen patch outlined (the top
    one red and thicker, the others yellow, each numbered by rank when there are several)."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).convert("RGB")
    draw = ImageDraw.Draw(img)
    line = max(1, round(min(img.size) / 64))
    answer = f"{p.label} {p.probability:.2f}"  # first, on black: the outlines are drawn over it
    draw.rectangle(draw.textbbox((2, 2), answer), fill=(0, 0, 0))
    draw.text((2, 2), answer, fill=(255, 255, 255))
    boxes = p.patch_boxes or ([p.patch_box] if p.patch_box is not None else [])
    for rank in range(len(boxes), 0, -1):  # the others first: the top patch's outline is drawn over them
        x0, y0, x1, y1 = boxes[rank - 1]
        top = rank == 1
        if len(boxes) > 1:
            draw.text((x0 + line + 1, y0 + line), str(rank), fill=TOP_COLOUR if top else OTHER_COLOUR)
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=TOP_COLOUR if top else OTHER_COLOUR,
                       width=line if top else max(1, line // 2))
    try:
        img.save(path)
    except OSError as e:
        raise UserError(f"cannot write {str(path)!r} ({e.strerror}); choose another --save-overlays") from None
