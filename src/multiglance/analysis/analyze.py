"""`multiglance analyze RUN_DIR`: every statistic of `stats.py` and every figure of `figures.py` for a
trained two-glance run on one data split, as PNG files and one JSON summary (`analysis.json`).

    multiglance analyze runs/digits-two                       # -> runs/digits-two/analysis/
    multiglance analyze runs/tiny-two --data tiny-imagenet-200.zip --out docs/analysis-tiny --json
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..data import Split, load_split
from ..errors import UserError
from ..runs import atomic_write, load_run
from . import figures
from .stats import collect, localisation, normalized_weights, patch_scores_against_boxes, weight_stats

FIGURES = {"stats": "patch_stats.png", "ranks": "ranks.png", "heatmap": "heatmap.png",
           "grid": "top_patch_grid.png", "grid_normalized": "top_patch_grid_normalized.png"}


def load_analysis_split(cfg, split: str, data: str | None, limit: int | None) -> Split:
    """The split a run is analysed on: its config's data set (root overridable), its limits, then `limit`."""
    from ..train import check_fit, limit as take

    if data is not None:
        cfg.data.root = data
    s = load_split(cfg.data.name, cfg.data.root, split)
    s = take(s, cfg.data.test_limit if split == "test" else cfg.data.train_limit)
    s = take(s, limit)
    check_fit(cfg, s)
    return s


def analyze_run(run_dir: str | Path, *, data: str | None = None, out: str | Path | None = None,
                split: str = "test", limit: int | None = None, k: int = 6, example: int = 0) -> dict:
    """Analyse run `run_dir` on `split`; writes the figures and `analysis.json` into `out` (default
    RUN_DIR/analysis) and returns the summary (figure paths relative to `out`)."""
    model, cfg = load_run(run_dir)
    if model.kind != "two":
        raise UserError(f"{str(run_dir)!r} is a one-glance run: it has no glance 1 to analyse; pass a two-glance run")
    test = load_analysis_split(cfg, split, data, limit)
    if not 0 <= example < len(test):
        raise UserError(f"--example {example} is out of range: the split has {len(test)} images")
    out = Path(out) if out is not None else Path(run_dir) / "analysis"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {str(out)!r} ({e.strerror}); choose another --out") from None

    looks = collect(model, test, cfg.train.eval_batch_size)
    stats = weight_stats(looks.weights, looks.top)
    norm = normalized_weights(looks.weights, stats.mean, stats.std)  # (N, P)
    norm_top = norm.argmax(-1)  # (N,) the top patch of the report's normalised view
    boxes, g = model.patch_boxes(), model.grid
    summary = {
        "run": str(run_dir), "preset": cfg.preset, "dataset": cfg.data.name, "split": split, "images": len(test),
        "grid": g, "patch_size": model.patch_size, "patch_stride": model.patch_stride,
        "image_size": model.image_size, "patch_boxes": boxes.tolist(),
        "accuracy_hard": (looks.predictions == test.labels).double().mean().item(),
        "weights": stats.summary(g),
        "normalized_top_share": [[round(v, 6) for v in r] for r in
                                 (torch.bincount(norm_top, minlength=g * g).double() / len(test)).reshape(g, g).tolist()],
        "normalized_top_agrees": (norm_top == looks.top).double().mean().item(),
        "localisation": None, "figures": FIGURES,
    }
    if test.boxes is not None:
        loc = localisation({"model": looks.top, "normalized": norm_top}, boxes, test.boxes, model.image_size)
        hit = patch_scores_against_boxes(boxes, test.boxes)["overlap"].gather(1, looks.top[:, None])[:, 0] > 0
        right = looks.predictions == test.labels
        loc["accuracy_when_overlap"] = right[hit].double().mean().item() if hit.any() else None
        loc["accuracy_when_no_overlap"] = right[~hit].double().mean().item() if (~hit).any() else None
        loc["images_without_overlap"] = int((~hit).sum())
        summary["localisation"] = loc

    name = f"{cfg.preset} on {cfg.data.name} {split}"
    figures.stats_figure(stats.mean, stats.std, stats.top_share, g, out / FIGURES["stats"])
    figures.ranks_figure(test.images[example], looks.weights[example], boxes, out / FIGURES["ranks"],
                         title=f"image {example}: patch centres by rank")
    figures.heatmap_figure(test.images[example], looks.weights[example], boxes, out / FIGURES["heatmap"],
                           normalized=norm[example], title=f"image {example}: glance 1's weights")
    figures.top_patch_grid(test.images, looks.top, boxes, g, out / FIGURES["grid"], k=k,
                           title=f"{name}: {k} images per top patch (glance 1's weights)")
    figures.top_patch_grid(test.images, norm_top, boxes, g, out / FIGURES["grid_normalized"], k=k,
                           title=f"{name}: {k} images per top patch (normalised weights, as the report)")
    text = (json.dumps(summary, indent=1) + "\n").encode()
    atomic_write(out / "analysis.json", lambda f: f.write(text))
    return summary
