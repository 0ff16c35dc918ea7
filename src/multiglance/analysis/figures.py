"""Where glance 1 looks, as pictures (matplotlib, Agg backend; each function writes one PNG).

    ranks_figure(image, weights, boxes, path)       the report's figure 2: patch centres marked by rank, top outlined
    top_patch_grid(images, top, grid, path, k)      the report's figure 3: a grid like the patch grid, each cell
                                                    holding K images whose top patch is that cell
    heatmap_figure(image, weights, boxes, path)     glance 1's weights spread over the pixels, over the image
    stats_figure(stats, grid, path)                 per-position mean, std, top share of the weights

Images are uint8 (C, H, W) tensors, weights (P,), boxes (P, 4) (x0, y0, x1, y1) from `model.patch_boxes()`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

OUTLINE = np.array([255, 40, 40], np.uint8)  # the top patch's outline in mosaics


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def to_rgb(image: torch.Tensor) -> np.ndarray:
    """uint8 (C, H, W) with C = 1 or 3 -> uint8 (H, W, 3)."""
    a = image.permute(1, 2, 0).numpy()  # (H, W, C)
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a


def weight_map(weights: torch.Tensor, boxes: torch.Tensor, size: int) -> np.ndarray:
    """(P,) weights -> (size, size): each pixel's total weight of the patches that contain it (the chance it is
    inside the patch glance 2 sees, if a patch were drawn from the weights)."""
    heat = torch.zeros(size, size, dtype=torch.float64)
    for w, (x0, y0, x1, y1) in zip(weights.tolist(), boxes.tolist()):  # P is small (4 to 16)
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
        cx, cy = (x0 + x1) / 2 - 0.5, (y0 + y1) / 2 - 0.5
        ax.text(cx, cy, str(r), ha="center", va="center", fontsize=9, color="white" if r > 1 else "black",
                bbox=dict(boxstyle="circle,pad=0.2", fc="red" if r == 1 else "black", alpha=0.75, lw=0))
    x0, y0, x1, y1 = boxes[int(weights.argmax())].tolist()
    ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="red", lw=2))
    ax.set_axis_off()
    ax.set_title(title or "patch centres by rank (1 = glance 1's top)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def mosaic(images: torch.Tensor, top: torch.Tensor, boxes: torch.Tensor, grid: int, k: int,
           pad: int = 2, gap: int = 8) -> np.ndarray:
    """uint8 (H', W', 3): cell (r, c) of a grid x grid layout holds up to k images whose top patch is r*grid+c,
    side by side, each with that patch outlined. Empty places stay grey."""
    _, _, h, w = images.shape
    cell_w = k * (w + pad) - pad
    out = np.full((grid * (h + gap) - gap, grid * (cell_w + gap) - gap, 3), 200, np.uint8)
    for p in range(grid * grid):
        r, c = divmod(p, grid)
        chosen = torch.nonzero(top == p)[:k, 0]
        x0, y0, x1, y1 = boxes[p].tolist()
        for j, i in enumerate(chosen.tolist()):
            tile = to_rgb(images[i]).copy()  # (h, w, 3)
            tile[y0, x0:x1] = tile[y1 - 1, x0:x1] = OUTLINE
            tile[y0:y1, x0] = tile[y0:y1, x1 - 1] = OUTLINE
            oy, ox = r * (h + gap), c * (cell_w + gap) + j * (w + pad)
            out[oy:oy + h, ox:ox + w] = tile
    return out


def top_patch_grid(images: torch.Tensor, top: torch.Tensor, boxes: torch.Tensor, grid: int, path: Path,
                   k: int = 6, title: str = "") -> None:
    """The report's figure 3, from images (N, C, H, W) uint8 and their top patches (N,)."""
    plt = _plt()
    m = mosaic(images, top, boxes, grid, k)
    zoom = max(1.0, 72 / images.shape[-1])  # draw each image at least 72 pixels wide, at most 18 inches in all
    width = min(18.0, m.shape[1] * zoom / 110 + 0.4)
    fig, ax = plt.subplots(figsize=(width, width * m.shape[0] / m.shape[1] + 0.5))
    ax.imshow(m, interpolation="nearest")
    ax.set_axis_off()
    counts = torch.bincount(top, minlength=grid * grid).tolist()
    ax.set_title(title or f"images by glance 1's top patch (cell = patch position; images per cell: {counts})",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def heatmap_figure(image: torch.Tensor, weights: torch.Tensor, boxes: torch.Tensor, path: Path,
                   normalized: torch.Tensor | None = None, title: str = "") -> None:
    """The image with glance 1's weights spread over its pixels (see `weight_map`), and, when given, the same
    for the normalised weights (the report's view: how this image differs from the average image)."""
    plt = _plt()
    size = image.shape[-1]
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


def stats_figure(mean: torch.Tensor, std: torch.Tensor, top_share: torch.Tensor, grid: int, path: Path) -> None:
    """Three grid x grid maps: each position's mean weight, its std over images, and how often it is on top."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.3))
    for ax, (name, t, fmt) in zip(axes, (("mean weight", mean, ".3f"), ("std over images", std, ".2g"),
                                         ("share on top", top_share, ".2f"))):
        a = t.reshape(grid, grid).numpy()
        im = ax.imshow(a, cmap="viridis")
        for (r, c), v in np.ndenumerate(a):
            ax.text(c, r, format(v, fmt), ha="center", va="center", fontsize=7,
                    color="white" if v < a.min() + 0.6 * (a.max() - a.min() + 1e-12) else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set(title=name, xticks=[], yticks=[])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
