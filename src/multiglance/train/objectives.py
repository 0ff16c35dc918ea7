"""What training minimises, one function per choice of model.choice, and the learning-rate schedule.

    soft / gumbel      cross-entropy of the combined answer (models/glances.py `combine`)
    reinforce          + REINFORCE on the sampled patch's log-weight, reward = -loss, baseline = batch mean
    oracle             glance 2 on every patch, glance 1 trained to name glance 2's best patch (`oracle_loss`)
    topk               cross-entropy of the k selected (+ explored) patches' answers combined with glance 1's
                       weights renormalised over them, + `train.uniform_weight` x the same with equal weights,
                       + `train.rank_weight` x `rank_loss` (glance 1 taught which chosen patch glance 2 reads best)
                       (combine=presence: models/combine.py, with the background class of model.background)
    any (glance1_aux)  + `train.glance1_weight` x cross-entropy of glance 1's own attention-pooled answer
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import RunConfig
from ..errors import UserError
from ..models.combine import combine
from ..models.output import GlanceOutput, as_output


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    if schedule == "step":
        return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
    if schedule == "constant":
        return 1.0
    raise UserError(f"unknown train.schedule {schedule!r}; use cosine, step or constant")


def entropy(w: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each row of weights (B, P) -> (B,)."""
    return -(w * w.clamp_min(1e-12).log()).sum(-1)


def oracle_loss(z: torch.Tensor, scores: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0,
                best: float = 0.0):
    """choice="oracle": glance 2 is trained on every patch (mean cross-entropy over patches of z (B, P, K)),
    and glance 1's scores (B, P) are trained, as a P-way classification, to name the patch on which glance 2's
    loss is lowest. This trains the test-time hard choice itself: argmax w should be glance 2's best patch.
    `best` > 0 moves that share of glance 2's loss onto its best patch (the one it will be shown at test time,
    as in multiple-instance learning), away from patches that do not hold the object."""
    b, p, k = z.shape
    per_patch = F.cross_entropy(z.reshape(b * p, k), y.repeat_interleave(p), reduction="none",
                                label_smoothing=label_smoothing).view(b, p)  # (B, P)
    glance2 = (1 - best) * per_patch.mean() + best * per_patch.min(-1).values.mean()
    return glance2 + F.cross_entropy(scores, per_patch.detach().argmin(-1))


def uniform_loss(z: torch.Tensor, y: torch.Tensor, mode: str, label_smoothing: float = 0.0,
                 background: int | None = None) -> torch.Tensor:
    """choice="topk": the selected patches' answers z (B, n, K) combined with equal weights. It keeps glance 2
    learning wherever glance 1 looks: without it glance 1 learned to put all weight on empty patches, whose
    uniform answer is "safe", and the loss sat at ln K (megapixel MNIST)."""
    u = torch.full(z.shape[:2], 1.0 / z.shape[1], device=z.device, dtype=z.dtype)  # (B, n)
    return F.cross_entropy(combine(u, z, mode, background), y, label_smoothing=label_smoothing)


def rank_loss(z: torch.Tensor, scores: torch.Tensor, y: torch.Tensor, background: int | None = None) -> torch.Tensor:
    """choice="topk": glance 1's scores (B, n) of the patches glance 2 saw, trained as an n-way classification to
    name the one whose answer z (B, n, K) has the lowest loss: `oracle_loss`'s teacher, over the chosen patches
    only (memory stays k patches; the explored ones tell glance 1 what it missed). Images of the `background`
    class hold nothing to find and teach nothing here (their best patch would be the emptiest)."""
    b, n, k = z.shape
    per_patch = F.cross_entropy(z.detach().reshape(b * n, k), y.repeat_interleave(n), reduction="none")  # (B*n,)
    best = per_patch.view(b, n).argmin(-1)  # (B,)
    if background is not None:
        best = best.masked_fill(y == background, -100)  # cross_entropy's ignore_index
    # the mean over the images kept; 0 (not NaN) when a batch holds background images only
    return F.cross_entropy(scores, best, ignore_index=-100, reduction="sum") / (best != -100).sum().clamp_min(1)


def loss_fn(model: nn.Module, out: GlanceOutput | torch.Tensor, y: torch.Tensor, cfg: RunConfig) -> torch.Tensor:
    """The training loss of a training forward's `out` (a GlanceOutput; a one-glance model's plain (B, K) logits are
    taken as one) for labels y (B,): the objective of `cfg.model.choice`, with the terms `cfg.train` weighs in.
    The answer enters cross-entropy as logits whatever its kind: with combine=probs that is the report's softmax
    on top of the combined probabilities. Everything is read from `out`; `model` (the raw module) is not read."""
    out, m, t = as_output(out), cfg.model, cfg.train
    two = m.kind == "two"
    choice = m.choice if two else None
    if choice == "oracle":
        loss = oracle_loss(out.patch_logits, out.scores, y, t.label_smoothing, t.oracle_best)
    else:
        loss = F.cross_entropy(out.answer, y, label_smoothing=t.label_smoothing)
    if choice == "topk" and t.uniform_weight:
        loss = loss + t.uniform_weight * uniform_loss(out.selected_logits, y, m.combine, t.label_smoothing,
                                                      m.background_index)
    if two and t.entropy_weight:
        loss = loss + t.entropy_weight * entropy(out.weights).mean()
    if two and m.glance1_aux and t.glance1_weight:  # glance 1's own attention-pooled answer (B, K)
        loss = loss + t.glance1_weight * F.cross_entropy(out.glance1_logits, y, label_smoothing=t.label_smoothing)
    if choice == "topk" and t.rank_weight:
        loss = loss + t.rank_weight * rank_loss(out.selected_logits, out.selected_scores, y, m.background_index)
    if choice == "reinforce":  # REINFORCE on the sampled patch's log w: reward = -(its loss), baseline = the mean
        reward = -F.cross_entropy(out.answer.detach(), y, reduction="none")  # (B,)
        loss = loss - ((reward - reward.mean()) * out.log_prob).mean()
    return loss
