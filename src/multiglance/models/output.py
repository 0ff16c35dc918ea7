"""What a model answers, typed: `GlanceOutput`, the answer (B, K) with what kind of numbers it is, and the tensors
of the way it was reached that the objectives need (train/objectives.py chooses among them by `model.choice`).

    out = model.train()(x)                  # TwoGlance: a GlanceOutput; OneGlance: (B, K) logits
    out = as_output(model(x))               # either as a GlanceOutput
    out.answer, out.kind                    # (B, K) and "logits" | "probs" | "log_probs"
    out.probs(), out.log_probs()            # (B, K) whatever the kind: the one rule for reading an answer
    model.eval().output(x, mode, k)         # the test-time answer of either model, as a GlanceOutput

The kind of a combined answer is the combination's (`COMBINE_KINDS`, models/glances.py `combine`): "logits" sums
logits, "probs" sums probabilities, "mixture" is the log of summed probabilities.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

KINDS = ("logits", "probs", "log_probs")
COMBINE_KINDS = {"logits": "logits", "probs": "probs", "mixture": "log_probs",
                 "presence": "log_probs"}  # what `combine(w, z, mode)` is


@dataclass
class GlanceOutput:
    """A forward's answer and, for a two-glance model, how it was reached (None where that choice has none).
    B images, K classes, P patches, n patches chosen."""

    answer: torch.Tensor  # (B, K) the answer, of `kind`
    kind: str  # "logits" | "probs" | "log_probs": what `answer` holds
    scores: torch.Tensor | None = None  # (B, P) glance 1's patch scores (before the softmax)
    weights: torch.Tensor | None = None  # (B, P) their softmax over every patch (training)
    patch_logits: torch.Tensor | None = None  # (B, P, K) glance 2's logits on every patch (soft, gumbel, oracle)
    selected_index: torch.Tensor | None = None  # (B, n) the patches glance 2 saw (reinforce: the sampled one;
    # topk: top_k then explored; inference: hard, the k best; soft, all P best first)
    selected_logits: torch.Tensor | None = None  # (B, n, K) glance 2's logits on them (topk; hard inference)
    selected_scores: torch.Tensor | None = None  # (B, n) glance 1's scores of them (topk)
    log_prob: torch.Tensor | None = None  # (B,) log weight of the sampled patch (reinforce)
    glance1_logits: torch.Tensor | None = None  # (B, K) glance 1's own answer (glance1_aux)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown answer kind {self.kind!r}; one of {', '.join(KINDS)}")

    def probs(self) -> torch.Tensor:
        """(B, K) class probabilities: the answer itself when it is probabilities, else its softmax."""
        return self.answer if self.kind == "probs" else self.answer.softmax(-1)

    def log_probs(self) -> torch.Tensor:
        """(B, K) log-probabilities: the log of probabilities (clamped at 1e-12, so a zero is a large finite
        loss), else the log-softmax (log-probabilities are their own)."""
        return self.answer.clamp_min(1e-12).log() if self.kind == "probs" else self.answer.log_softmax(-1)


def as_output(out: GlanceOutput | torch.Tensor) -> GlanceOutput:
    """A forward's result as a GlanceOutput: a plain (B, K) tensor (the one-glance model's) is logits."""
    return out if isinstance(out, GlanceOutput) else GlanceOutput(out, "logits")
