"""Where glance 1 looks, as numbers: patch-weight statistics over a data split, and localisation against
known object boxes.

    looks = collect(model, split)                 # weights (N, P), top patch (N,), hard predictions (N,)
    stats = weight_stats(looks.weights)           # per-position mean/std, entropy, how often each is on top
    loc = localisation({"model": looks.top}, model.patch_boxes(), split.boxes[looks.index], model.image_shape)

`collect` reads any split batch by batch (in-memory, streamed files, rendered canvases; uint8 batches for a
two-glance model, so a large image is never copied as floats whole); files that do not decode are left out,
and `looks.index` says which images of the split were analysed. Grids may be non-square: (rows, cols).

The report normalised glance 1's weights per position (subtract the position's mean over images, divide by its
std) because its raw weights were nearly constant; `normalized_weights` does the same, and `weight_stats`
says how constant they were (the spread across images relative to the mean, the entropy against log P).

Localisation: for each image, does the chosen patch's box (x0, y0, x1, y1) meet the object's box? Three
measures, each for the model and for patches chosen without looking (exact expectations, not samples):
  overlap:         the chosen patch and the object box share at least one pixel
  contains_centre: the chosen patch contains the centre of the object box
  coverage:        the share of the object box's area that lies inside the chosen patch
Baselines: `random` (a uniformly random patch: the mean over all patches), `centre` (the patch(es) nearest
the image centre; ties averaged), `best` (the best single patch for each image: the ceiling).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..data.batches import fetch, to_float
from ..models.select import grid_shape
from ..train.objectives import entropy  # the one entropy: (N, P) weights -> (N,) nats

MEASURES = ("overlap", "contains_centre", "coverage")


@dataclass
class Looks:
    weights: torch.Tensor  # (N, P) glance 1's softmax weights
    top: torch.Tensor  # (N,) int64: the top patch hard inference classifies (argmax of the weights)
    predictions: torch.Tensor  # (N,) int64: the hard-inference class, by the model's own rule (its top_k)
    index: torch.Tensor  # (N,) int64: which images of the split these are (undecodable files left out)
    labels: torch.Tensor  # (N,) int64: their labels
    chosen: torch.Tensor  # (N, k) int64: the k = model.top_k patches hard inference classifies, best first

    def __len__(self) -> int:
        return self.top.shape[0]


@torch.no_grad()
def collect(model: nn.Module, split, batch_size: int = 500, workers: int = 0) -> Looks:
    """Run glance 1 (and hard inference) over `split`, with the model's own stages, `batch_size` images at a
    time (lazy splits decoded by `workers` DataLoader processes, as `data.batches.eval_batches` does)."""
    model.eval()
    device = next(model.parameters()).device
    uint8 = getattr(model, "accepts_uint8", False)  # the two-glance model reads uint8 itself
    n = len(split)
    index_lists = [torch.arange(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    weights, chosen, preds, kept = [], [], [], []
    for index, x, keep in fetch(split, index_lists, workers):
        if x.shape[0] == 0:
            continue
        x = x.to(device)  # (b, C, H, W) uint8
        x = x if uint8 else to_float(x)
        weights.append(model.patch_weights(x).cpu())  # (b, P)
        logits, top_k = model.infer(x, "hard")  # (b, K), (b, k)
        chosen.append(top_k.cpu())
        preds.append(logits.argmax(-1).cpu())
        kept.append(index[keep])
    p = model.num_patches
    if not kept:
        empty = torch.zeros(0, dtype=torch.long)
        return Looks(torch.zeros(0, p), empty, empty, empty, empty, torch.zeros(0, model.top_k, dtype=torch.long))
    chosen_all, index_all = torch.cat(chosen), torch.cat(kept)
    return Looks(torch.cat(weights), chosen_all[:, 0], torch.cat(preds), index_all, split.labels[index_all],
                 chosen_all)


@dataclass
class WeightStats:
    mean: torch.Tensor  # (P,) mean over images of each position's weight
    std: torch.Tensor  # (P,) standard deviation over images (unbiased when N > 1)
    top_share: torch.Tensor  # (P,) share of images whose largest weight is at this position
    entropy: torch.Tensor  # (N,) entropy of each image's weights, nats
    max_weight: torch.Tensor  # (N,) each image's largest weight

    def summary(self, grid: int | tuple[int, int]) -> dict:
        """JSON-ready numbers; per-position maps as lists of grid rows ((rows, cols), or one int if square)."""
        p = self.mean.numel()
        shape = grid_shape(grid)
        rows = lambda t: [[round(v, 6) for v in r] for r in t.reshape(shape).tolist()]  # noqa: E731
        return {
            "positions": p,
            "mean": rows(self.mean), "std": rows(self.std), "top_share": rows(self.top_share),
            "entropy_mean": self.entropy.mean().item(), "entropy_max": math.log(p),
            "entropy_ratio": self.entropy.mean().item() / math.log(p) if p > 1 else 0.0,
            "max_weight_mean": self.max_weight.mean().item(),
            # how constant the raw weights are: the spread over images relative to the mean, per position
            "relative_std_mean": (self.std / self.mean.clamp_min(1e-12)).mean().item(),
            "top_positions_used": int((self.top_share > 0).sum().item()),
        }


def weight_stats(w: torch.Tensor, top: torch.Tensor | None = None) -> WeightStats:
    """Statistics of weights (N, P); `top` (N,) defaults to each row's argmax."""
    n, p = w.shape
    top = w.argmax(-1) if top is None else top
    std = w.std(0) if n > 1 else torch.zeros(p)
    share = torch.bincount(top, minlength=p).float() / max(n, 1)  # (P,)
    return WeightStats(w.mean(0), std, share, entropy(w), w.max(-1).values)


def normalized_weights(w: torch.Tensor, mean: torch.Tensor | None = None,
                       std: torch.Tensor | None = None) -> torch.Tensor:
    """(w - mean) / std per position, as the report did: (N, P) -> (N, P). A constant position gives 0."""
    mean = w.mean(0) if mean is None else mean
    std = w.std(0) if std is None else std
    return (w - mean) / std.clamp_min(1e-12)


def patch_scores_against_boxes(patch_boxes: torch.Tensor, boxes: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every measure of MEASURES for every (image, patch) pair: patch_boxes (P, 4), boxes (N, 4) -> (N, P) each.

    Boxes are (x0, y0, x1, y1) with exclusive ends, in the same pixel frame.
    """
    pb = patch_boxes.double()[None]  # (1, P, 4)
    ob = boxes.double()[:, None]  # (N, 1, 4)
    iw = (torch.minimum(pb[..., 2], ob[..., 2]) - torch.maximum(pb[..., 0], ob[..., 0])).clamp_min(0)  # (N, P)
    ih = (torch.minimum(pb[..., 3], ob[..., 3]) - torch.maximum(pb[..., 1], ob[..., 1])).clamp_min(0)  # (N, P)
    area = ((ob[..., 2] - ob[..., 0]) * (ob[..., 3] - ob[..., 1])).clamp_min(1e-12)  # (N, 1)
    cx, cy = (ob[..., 0] + ob[..., 2]) / 2, (ob[..., 1] + ob[..., 3]) / 2  # (N, 1) each
    inside = (pb[..., 0] <= cx) & (cx < pb[..., 2]) & (pb[..., 1] <= cy) & (cy < pb[..., 3])  # (N, P)
    return {"overlap": ((iw * ih) > 0).double(), "contains_centre": inside.double(), "coverage": iw * ih / area}


def centre_patches(patch_boxes: torch.Tensor, image_size: int | tuple[int, int]) -> torch.Tensor:
    """Indices of the patch(es) whose centre is nearest the image centre (several on an even grid);
    `image_size` is H = W, or (H, W)."""
    h, w = grid_shape(image_size)
    centres = (patch_boxes[:, :2] + patch_boxes[:, 2:]).double() / 2  # (P, 2) as (x, y)
    d = ((centres - torch.tensor([w / 2, h / 2], dtype=torch.float64)) ** 2).sum(-1)  # (P,)
    return torch.nonzero(d <= d.min() + 1e-9)[:, 0]


def localisation(choices: dict[str, torch.Tensor], patch_boxes: torch.Tensor, boxes: torch.Tensor,
                 image_size: int | tuple[int, int]) -> dict[str, dict[str, float]]:
    """measure -> {name of each choice in `choices` (N,) patch indices, "random", "centre", "best"} -> score.

    Each score is the mean over images; "random" is the exact expectation of a uniformly random patch.
    """
    scores = patch_scores_against_boxes(patch_boxes, boxes)
    centre = centre_patches(patch_boxes, image_size)
    out = {}
    for measure, s in scores.items():  # s: (N, P)
        row = {name: s.gather(1, idx.long()[:, None]).mean().item() for name, idx in choices.items()}
        row |= {"random": s.mean().item(), "centre": s[:, centre].mean().item(), "best": s.max(1).values.mean().item()}
        out[measure] = row
    return out
