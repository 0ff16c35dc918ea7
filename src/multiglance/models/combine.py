"""How a two-glance model turns its patches' answers into one: `combine(w, z, mode)`, for weights w (B, n) over n
patches and glance 2's logits z (B, n, K) on them, K classes.

    logits:    sum_i w_i z_i                      (the report's text; softmax of it is the answer)
    probs:     sum_i w_i softmax(z_i)             (its figure caption; a final softmax is applied on top)
    mixture:   log sum_i w_i softmax(z_i)         (a proper mixture: already log-probabilities)
    presence:  multiple-instance: `background` is the class "no object here" (b), and the image shows an object
               when any patch does:  q(b) = prod_i p_i(b),
               q(c) = (1 - q(b)) sum_i w_i p_i(c) / sum_i w_i (1 - p_i(b))   for c != b
               (log-probabilities). One patch sure of a sign outvotes any number of empty ones, and an image of
               class b trains every patch looked at to say b: the hard negatives are the patches glance 1 chose.
"""
from __future__ import annotations

import math

import torch

from ..errors import ConfigError

COMBINE_MODES = ("logits", "probs", "mixture", "presence")


def log1mexp(a: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(a)) for a <= 0, stable at both ends (a is clamped just below 0, so the log stays finite)."""
    a = a.clamp_max(-1e-7)
    return torch.where(a > -math.log(2), torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))


def presence(w: torch.Tensor, z: torch.Tensor, background: int) -> torch.Tensor:
    """The "presence" combination of the module docstring: (B, n) weights, (B, n, K) logits -> (B, K) log-probs.
    The class shares are sums of w_i p_i, linear in w, so a one-hot w (Gumbel) still passes gradient to glance 1."""
    lp = z.log_softmax(-1)  # (B, n, K)
    is_bg = torch.zeros(z.shape[-1], dtype=torch.bool, device=z.device)
    is_bg[background] = True
    log_bg = lp[..., background].sum(1)  # (B,) log q(b): every patch says "nothing here"
    p = lp.exp().masked_fill(is_bg, 0.0)  # (B, n, K) the object classes' probabilities
    num = torch.einsum("bn,bnk->bk", w, p)  # (B, K) sum_i w_i p_i(c)
    den = num.sum(-1, keepdim=True)  # (B, 1) sum_i w_i (1 - p_i(b))
    share = num.clamp_min(1e-30).log() - den.clamp_min(1e-30).log()  # (B, K)
    return torch.where(is_bg, log_bg[:, None], log1mexp(log_bg)[:, None] + share)  # (B, K)


def combine(w: torch.Tensor, z: torch.Tensor, mode: str, background: int | None = None) -> torch.Tensor:
    """Combine per-patch logits z (B, n, K) with weights w (B, n) into (B, K), by `mode` (the module docstring);
    `background` is the "no object" class index, read by "presence" only."""
    if mode == "logits":
        return torch.einsum("bn,bnk->bk", w, z)
    if mode == "probs":
        return torch.einsum("bn,bnk->bk", w, z.softmax(-1))
    if mode == "mixture":
        return torch.logsumexp(torch.log(w.clamp_min(1e-12))[..., None] + z.log_softmax(-1), dim=1)
    if mode == "presence":
        if background is None or not 0 <= background < z.shape[-1]:
            raise ConfigError(f"combine=presence needs the background class among the {z.shape[-1]} classes "
                              "(model.background, a class name of the data)")
        return presence(w, z, background)
    raise ConfigError(f"unknown combine mode {mode!r}; choose one of {', '.join(COMBINE_MODES)}")
