"""`multiglance analyze RUN_DIR`: every statistic of `stats.py` and every figure of `figures.py` for a
trained two-glance run on one data split, as PNG files and one JSON summary (`analysis.json`).

    multiglance analyze runs/digits-two                       # -> runs/digits-two/analysis/
    multiglance analyze runs/tiny-two --data tiny-imagenet-200.zip --out docs/analysis-tiny --json
    multiglance analyze runs/photos --split val --limit 500   # a large-image run: its folder streamed

The split is read as training reads it (`train.load_data`: in memory, a class folder streamed batch by batch,
or rendered canvases), the config's limits applied, then `--limit`. Files that do not decode are left out
(`skipped_images`). Patch grids may be non-square: maps are (rows, cols) lists, `grid` is [rows, cols].
Localisation needs one object box per image: data sets without boxes (class folders) or with several objects
per image (megapixel MNIST) skip it, and `localisation_skipped` says why.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import DataError, UserError
from ..files import atomic_write
from ..runs import load_run
from . import figures
from .stats import collect, localisation, normalized_weights, patch_scores_against_boxes, weight_stats

FIGURES = {"stats": "patch_stats.png", "ranks": "ranks.png", "heatmap": "heatmap.png",
           "grid": "top_patch_grid.png", "grid_normalized": "top_patch_grid_normalized.png"}
SPLITS = ("test", "val", "train")


def load_analysis_split(cfg, split: str, data: str | None, limit: int | None):
    """The split a run is analysed on, read as training reads it: its config's data set (root overridable),
    its limits, then `limit`."""
    from ..train import check_fit, limit as take, load_data

    if split not in SPLITS:
        raise UserError(f"--split {split!r}: use one of {', '.join(SPLITS)}")
    if data is not None:
        cfg.data.root = data
    (s,) = load_data(cfg, (split,))
    s = take(s, limit)
    check_fit(cfg, s)
    return s


def object_boxes(split, index: torch.Tensor) -> tuple[torch.Tensor | None, str | None]:
    """(the (n, 4) object boxes of images `index`, None) or (None, why localisation cannot be measured)."""
    boxes = getattr(split, "boxes", None)
    if boxes is None:
        return None, "the data set has no object boxes (class folders never do), so localisation is not measured"
    if not isinstance(boxes, torch.Tensor) or boxes.shape != (len(split), 4):
        return None, ("the data set has several objects per image, and localisation measures one box per image; "
                      "it is not measured")
    return boxes[index], None


def take_images(split, index: torch.Tensor) -> torch.Tensor:
    """uint8 (n, C, H, W) of images `index` (n,) that decoded before (a lazy split decodes them again)."""
    x, keep = split.take(index)
    if not bool(keep.all()):
        raise DataError("a file of the split no longer decodes (changed during the analysis?); check the files "
                        "and run analyze again")
    return x


def analyze_run(run_dir: str | Path | None, *, weights: str | None = None, data: str | None = None,
                out: str | Path | None = None, split: str = "test", limit: int | None = None, k: int = 6,
                example: int = 0) -> dict:
    """Analyse run `run_dir` (or the shipped `weights`, see `multiglance weights`) on `split`; writes the figures
    and `analysis.json` into `out` (default RUN_DIR/analysis) and returns the summary (figure paths relative to
    `out`)."""
    if weights is not None:
        from ..weights import load_weights

        model, cfg, _ = load_weights(weights)
    else:
        model, cfg = load_run(run_dir)
    source = f"weights {weights}" if weights is not None else str(run_dir)
    if model.kind != "two":
        raise UserError(f"{source!r} is a one-glance model: it has no glance 1 to analyse; pass a two-glance run")
    test = load_analysis_split(cfg, split, data, limit)
    if not 0 <= example < len(test):
        raise UserError(f"--example {example} is out of range: the split has {len(test)} images")
    if out is None and run_dir is None:
        raise UserError("with --weights give --out: the folder for the figures and analysis.json")
    out = Path(out) if out is not None else Path(run_dir) / "analysis"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {str(out)!r} ({e.strerror}); choose another --out") from None

    looks = collect(model, test, cfg.train.eval_batch_size, workers=cfg.train.workers)
    if len(looks) == 0:
        raise DataError(f"none of the {len(test)} images of the {split} split decodes; check the data files")
    if example >= len(looks):
        raise UserError(f"--example {example} is out of range: {len(looks)} images of the split decode")
    stats = weight_stats(looks.weights, looks.top)
    norm = normalized_weights(looks.weights, stats.mean, stats.std)  # (N, P)
    norm_top = norm.argmax(-1)  # (N,) the top patch of the report's normalised view
    grid, shape = model.grid, model.image_shape  # (rows, cols) of patches, (H, W) of the input
    boxes, n = model.patch_boxes(), len(looks)
    summary = {
        "run": None if weights is not None else str(run_dir), "shipped_weights": weights, "preset": cfg.preset,
        "dataset": cfg.data.name, "split": split, "images": n,
        "skipped_images": len(test) - n, "grid": list(grid), "patch_size": model.patch_size,
        "patch_stride": model.patch_stride, "image_size": shape[0], "image_width": shape[1],
        "top_k": model.top_k, "patch_boxes": boxes.tolist(),
        "accuracy_hard": (looks.predictions == looks.labels).double().mean().item(),
        "weights": stats.summary(grid),
        "normalized_top_share": [[round(v, 6) for v in r] for r in
                                 (torch.bincount(norm_top, minlength=model.num_patches).double() / n)
                                 .reshape(grid).tolist()],
        "normalized_top_agrees": (norm_top == looks.top).double().mean().item(),
        "localisation": None, "figures": FIGURES,
        "grid_figure": "grid" if model.num_patches <= figures.MAX_GRID_CELLS else "most_used",
    }
    objects, why = object_boxes(test, looks.index)
    if objects is None:
        summary["localisation_skipped"] = why
    else:
        loc = localisation({"model": looks.top, "normalized": norm_top}, boxes, objects, shape)
        hit = patch_scores_against_boxes(boxes, objects)["overlap"].gather(1, looks.top[:, None])[:, 0] > 0
        right = looks.predictions == looks.labels
        loc["accuracy_when_overlap"] = right[hit].double().mean().item() if hit.any() else None
        loc["accuracy_when_no_overlap"] = right[~hit].double().mean().item() if (~hit).any() else None
        loc["images_without_overlap"] = int((~hit).sum())
        summary["localisation"] = loc

    name = f"{cfg.preset} on {cfg.data.name} {split}"
    image = take_images(test, looks.index[example:example + 1])[0]  # (C, H, W)
    shown = lambda positions: take_images(test, looks.index[positions])  # noqa: E731 - only the images shown
    figures.stats_figure(stats.mean, stats.std, stats.top_share, grid, out / FIGURES["stats"])
    figures.ranks_figure(image, looks.weights[example], boxes, out / FIGURES["ranks"],
                         title=f"image {example}: patch centres by rank")
    figures.heatmap_figure(image, looks.weights[example], boxes, out / FIGURES["heatmap"],
                           normalized=norm[example], title=f"image {example}: glance 1's weights")
    figures.top_patch_grid(shown, looks.top, boxes, grid, out / FIGURES["grid"], k=k,
                           title=f"{name}: {k} images per top patch (glance 1's weights)")
    figures.top_patch_grid(shown, norm_top, boxes, grid, out / FIGURES["grid_normalized"], k=k,
                           title=f"{name}: {k} images per top patch (normalised weights, as the report)")
    text = (json.dumps(summary, indent=1) + "\n").encode()
    atomic_write(out / "analysis.json", lambda f: f.write(text))
    return summary
