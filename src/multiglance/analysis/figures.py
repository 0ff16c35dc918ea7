"""Where glance 1 looks, as pictures (matplotlib, Agg backend; each function writes one PNG).

    ranks_figure(image, weights, boxes, path)       the report's figure 2: patch centres marked by rank (the best
                                                    MAX_RANKS on a large grid), top outlined
    top_patch_grid(images, top, boxes, grid, path)  the report's figure 3: a grid like the patch grid, each cell
                                                    holding K images whose top patch is that cell
    heatmap_figure(image, weights, boxes, path)     glance 1's weights spread over the pixels, over the image
    stats_figure(stats, grid, path)                 per-position mean, std, top share of the weights

Images are uint8 (C, H, W) tensors (any H x W), weights (P,), boxes (P, 4) (x0, y0, x1, y1) from
`model.patch_boxes()`, `grid` the patch grid as (rows, cols) or one int when square. A grid of more than
MAX_GRID_CELLS positions (a large image's 15 x 15) is too many cells for figure 3: it then shows the
TOP_ROWS positions most often on top, one row each, labelled; mosaic tiles are at most MAX_TILE pixels a side.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..models.select import grid_shape

OUTLINE = np.array([255, 40, 40], np.uint8)  # the top patch's outline in mosaics
MAX_GRID_CELLS = 64  # figure 3 lays out the whole patch grid up to this many positions
TOP_ROWS = 8  # beyond it: this many rows, the most used top positions
MAX_TILE = 128  # mosaic tiles larger than this (on their longer side) are downscaled
MAX_RANKS = 16  # figure 2 numbers at most this many patches (the best)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def to_rgb(image: torch.Tensor) -> np.ndarray:
    """uint8 (C, H, W) with C = 1 or 3 -> uint8 (H, W, 3)."""
    a = image.permute(1, 2, 0).numpy()  # (H, W, C)
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a


def weight_map(weights: torch.Tensor, boxes: torch.Tensor, size: int | tuple[int, int]) -> np.ndarray:
    """(P,) weights -> (H, W) (`size` H = W, or (H, W)): each pixel's total weight of the patches that contain it
    (the chance it is inside the patch glance 2 sees, if a patch were drawn from the weights)."""
    heat = torch.zeros(grid_shape(size), dtype=torch.float64)  # (H, W)
    for w, (x0, y0, x1, y1) in zip(weights.tolist(), boxes.tolist()):  # one slice per patch (P up to ~1000s)
        heat[y0:y1, x0:x1] += w
    return heat.numpy()


def ranks_figure(image: torch.Tensor, weights: torch.Tensor, boxes: torch.Tensor, path: Path,
                 title: str = "") -> None:
    """The report's figure 2: the image, each patch centre labelled by its rank (1 = largest weight), the
    top patch outlined."""
    plt = _plt()
    rank = torch.empty_like(weights, dtype=torch.long)
    rank[weights.argsort(descending=True)] = torch.arange(1, weights.numel() + 1)  # (P,) 1 = top
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(to_rgb(image), interpolation="nearest")
    for r, (x0, y0, x1, y1) in zip(rank.tolist(), boxes.tolist()):
        if r > MAX_RANKS:  # a large grid: only the best are numbered
            continue
        cx, cy = (x0 + x1) / 2 - 0.5, (y0 + y1) / 2 - 0.5
        ax.text(cx, cy, str(r), ha="center", va="center", fontsize=9, color="white" if r > 1 else "black",
                bbox=dict(boxstyle="circle,pad=0.2", fc="red" if r == 1 else "black", alpha=0.75, lw=0))
    x0, y0, x1, y1 = boxes[int(weights.argmax())].tolist()
    ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="red", lw=2))
    ax.set_axis_off()
    best = "" if weights.numel() <= MAX_RANKS else f", the best {MAX_RANKS} of {weights.numel()}"
    ax.set_title(title or f"patch centres by rank (1 = glance 1's top{best})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def grid_cells(top: torch.Tensor, grid: int | tuple[int, int], max_cells: int = MAX_GRID_CELLS,
               rows: int = TOP_ROWS) -> np.ndarray:
    """The layout of figure 3, as patch indices (R, C), -1 for an empty place: the whole grid (rows, cols)
    when it has at most `max_cells` positions, else the `rows` positions most often on top (N,), one a row."""
    gh, gw = grid_shape(grid)
    if gh * gw <= max_cells:
        return np.arange(gh * gw).reshape(gh, gw)
    counts = torch.bincount(top, minlength=gh * gw)  # (P,)
    order = counts.argsort(descending=True, stable=True)
    used = order[counts[order] > 0][:rows]
    return used.numpy().reshape(-1, 1) if used.numel() else np.full((1, 1), -1)


def pick_images(top: torch.Tensor, cells: np.ndarray, k: int) -> torch.Tensor:
    """Sorted positions of the images a mosaic of `cells` shows: the first k whose top patch is each cell."""
    picks = [torch.nonzero(top == p)[:k, 0] for p in cells.flatten().tolist() if p >= 0]
    return torch.cat(picks).sort().values if picks else torch.zeros(0, dtype=torch.long)


def _tiles(images: torch.Tensor, boxes: torch.Tensor, max_tile: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (n, C, H, W) and boxes (P, 4) downscaled together so that tiles are at most `max_tile` a side."""
    h, w = images.shape[-2:]
    s = min(1.0, max_tile / max(h, w))
    if s == 1.0:
        return images, boxes
    th, tw = max(1, round(h * s)), max(1, round(w * s))
    small = F.interpolate(images.float(), size=(th, tw), mode="bilinear", antialias=True, align_corners=False)
    b = boxes.double() * s  # (P, 4)
    b = torch.stack([b[:, 0].floor(), b[:, 1].floor(), b[:, 2].ceil().clamp(max=tw), b[:, 3].ceil().clamp(max=th)], 1)
    return small.round().clamp(0, 255).to(torch.uint8), b.long()  # (n, C, th, tw), (P, 4)


def mosaic(images: torch.Tensor, top: torch.Tensor, boxes: torch.Tensor, grid: int | tuple[int, int], k: int,
           pad: int = 2, gap: int = 8, cells: np.ndarray | None = None, max_tile: int = MAX_TILE) -> np.ndarray:
    """uint8 (H', W', 3): place (r, c) of the layout `cells` (default `grid_cells(top, grid)`: the patch grid
    itself) holds up to k images whose top patch is cells[r, c], side by side, each with that patch outlined.
    Empty places stay grey. Tiles larger than `max_tile` are downscaled."""
    cells = grid_cells(top, grid) if cells is None else cells
    rows_n, cols_n = cells.shape
    images, boxes = _tiles(images, boxes, max_tile)
    _, _, h, w = images.shape
    cell_w = k * (w + pad) - pad
    out = np.full((rows_n * (h + gap) - gap, cols_n * (cell_w + gap) - gap, 3), 200, np.uint8)
    for (r, c), p in np.ndenumerate(cells):
        if p < 0:
            continue
        chosen = torch.nonzero(top == p)[:k, 0]
        x0, y0, x1, y1 = boxes[p].tolist()
        for j, i in enumerate(chosen.tolist()):
            tile = to_rgb(images[i]).copy()  # (h, w, 3)
            tile[y0, x0:x1] = tile[y1 - 1, x0:x1] = OUTLINE
            tile[y0:y1, x0] = tile[y0:y1, x1 - 1] = OUTLINE
            oy, ox = r * (h + gap), c * (cell_w + gap) + j * (w + pad)
            out[oy:oy + h, ox:ox + w] = tile
    return out


def top_patch_grid(images: torch.Tensor | Callable[[torch.Tensor], torch.Tensor], top: torch.Tensor,
                   boxes: torch.Tensor, grid: int | tuple[int, int], path: Path, k: int = 6, title: str = "") -> None:
    """The report's figure 3, from the top patches (N,) of N images; `images` is uint8 (N, C, H, W), or a function
    positions (n,) -> uint8 (n, C, H, W), so that a lazy split decodes only the images the figure shows."""
    plt = _plt()
    gh, gw = grid_shape(grid)
    cells = grid_cells(top, (gh, gw))
    picks = pick_images(top, cells, k)  # (n,)
    shown = images[picks] if isinstance(images, torch.Tensor) else images(picks)  # (n, C, H, W)
    m = mosaic(shown, top[picks], boxes, (gh, gw), k, cells=cells)
    tile = min(shown.shape[-1], MAX_TILE) if shown.numel() else MAX_TILE
    zoom = max(1.0, 72 / tile)  # draw each image at least 72 pixels wide, at most 18 inches in all
    width = min(18.0, m.shape[1] * zoom / 110 + (1.6 if cells.shape[1] == 1 else 0.4))
    fig, ax = plt.subplots(figsize=(width, width * m.shape[0] / m.shape[1] + 0.5))
    ax.imshow(m, interpolation="nearest")
    counts = torch.bincount(top, minlength=gh * gw)
    ax.set_axis_off()
    if cells.size < gh * gw:  # the most used positions, one a row: label each row
        ax.set_axis_on()
        step = m.shape[0] / cells.shape[0]
        ax.set_yticks([step * (r + 0.5) for r in range(cells.shape[0])],
                      [f"patch ({p // gw}, {p % gw}): {int(counts[p])}" if p >= 0 else "" for p in cells[:, 0]],
                      fontsize=7)
        ax.set_xticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    if cells.size == gh * gw:
        title = title or f"images by glance 1's top patch (cell = patch position; images per cell: {counts.tolist()})"
    else:
        rows = f"the {cells.shape[0]} most used of {gh}x{gw} top patch positions, one a row"
        title = f"{title}; {rows}" if title else rows
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def heatmap_figure(image: torch.Tensor, weights: torch.Tensor, boxes: torch.Tensor, path: Path,
                   normalized: torch.Tensor | None = None, title: str = "") -> None:
    """The image with glance 1's weights spread over its pixels (see `weight_map`), and, when given, the same
    for the normalised weights (the report's view: how this image differs from the average image)."""
    plt = _plt()
    size = tuple(image.shape[-2:])  # (H, W)
    panels = [("weights", weights, "magma")] + ([("normalised weights", normalized, "coolwarm")]
                                                if normalized is not None else [])
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(3.3 * (len(panels) + 1), 3.4))
    axes[0].imshow(to_rgb(image), interpolation="nearest")
    axes[0].set_title("image", fontsize=9)
    for ax, (name, w, cmap) in zip(axes[1:], panels):
        heat = weight_map(w, boxes, size)
        ax.imshow(to_rgb(image), interpolation="nearest")
        m = float(np.abs(heat).max()) or 1.0
        lim = dict(vmin=-m, vmax=m) if name.startswith("normalised") else {}  # diverging: 0 in the middle
        im = ax.imshow(heat, cmap=cmap, alpha=0.55, interpolation="nearest", **lim)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(name, fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def stats_figure(mean: torch.Tensor, std: torch.Tensor, top_share: torch.Tensor, grid: int | tuple[int, int],
                 path: Path) -> None:
    """Three (rows, cols) maps: each position's mean weight, its std over images, and how often it is on top
    (values written in the cells up to MAX_GRID_CELLS positions)."""
    plt = _plt()
    shape = grid_shape(grid)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.3))
    for ax, (name, t, fmt) in zip(axes, (("mean weight", mean, ".3f"), ("std over images", std, ".2g"),
                                         ("share on top", top_share, ".2f"))):
        a = t.reshape(shape).numpy()
        im = ax.imshow(a, cmap="viridis")
        for (r, c), v in (np.ndenumerate(a) if a.size <= MAX_GRID_CELLS else ()):
            ax.text(c, r, format(v, fmt), ha="center", va="center", fontsize=7,
                    color="white" if v < a.min() + 0.6 * (a.max() - a.min() + 1e-12) else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set(title=name, xticks=[], yticks=[])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
