"""Where glance 1 looks, as numbers: patch-weight statistics over a data split, and localisation against
known object boxes.

    looks = collect(model, split)                 # weights (N, P), top patch (N,), hard predictions (N,)
    stats = weight_stats(looks.weights)           # per-position mean/std, entropy, how often each is on top
    loc = localisation(looks.top, model.patch_boxes(), split.boxes, model.image_size)

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

from ..data import Split
from ..data.batches import eval_batches

MEASURES = ("overlap", "contains_centre", "coverage")


@dataclass
class Looks:
    weights: torch.Tensor  # (N, P) glance 1's softmax weights
    top: torch.Tensor  # (N,) int64: the patch hard inference classifies (argmax of the weights)
    predictions: torch.Tensor  # (N,) int64: the hard-inference class


@torch.no_grad()
def collect(model: nn.Module, split: Split, batch_size: int = 500) -> Looks:
    """Run glance 1 (and hard inference) over `split`, with the model's own stages."""
    model.eval()
    weights, top, preds = [], [], []
    for x, _ in eval_batches(split, batch_size=batch_size):
        x = x.to(next(model.parameters()).device)  # (B, C, H, W) in [0, 1]
        weights.append(model.patch_weights(x).cpu())  # (B, P)
        logits, index = model.infer(x, "hard", 1)  # (B, K), (B, 1)
        top.append(index[:, 0].cpu())
        preds.append(logits.argmax(-1).cpu())
    return Looks(torch.cat(weights), torch.cat(top), torch.cat(preds))


def entropy(w: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each row of weights (N, P) -> (N,)."""
    return -(w * w.clamp_min(1e-12).log()).sum(-1)


@dataclass
class WeightStats:
    mean: torch.Tensor  # (P,) mean over images of each position's weight
    std: torch.Tensor  # (P,) standard deviation over images (unbiased when N > 1)
    top_share: torch.Tensor  # (P,) share of images whose largest weight is at this position
    entropy: torch.Tensor  # (N,) entropy of each image's weights, nats
    max_weight: torch.Tensor  # (N,) each image's largest weight

    def summary(self, grid: int) -> dict:
        p = self.mean.numel()
        rows = lambda t: [[round(v, 6) for v in r] for r in t.reshape(grid, grid).tolist()]  # noqa: E731
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


def centre_patches(patch_boxes: torch.Tensor, image_size: int) -> torch.Tensor:
    """Indices of the patch(es) whose centre is nearest the image centre (several on an even grid)."""
    centres = (patch_boxes[:, :2] + patch_boxes[:, 2:]).double() / 2  # (P, 2)
    d = ((centres - image_size / 2) ** 2).sum(-1)  # (P,)
    return torch.nonzero(d <= d.min() + 1e-9)[:, 0]


def localisation(choices: dict[str, torch.Tensor], patch_boxes: torch.Tensor, boxes: torch.Tensor,
                 image_size: int) -> dict[str, dict[str, float]]:
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
