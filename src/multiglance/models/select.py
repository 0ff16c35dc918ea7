"""Choosing patches from glance 1's scores: plain top-k, top-k with non-maximum suppression, Gumbel noise.

    select_topk(scores, k, grid, radius)   (B, P) -> (B, k)   k distinct patch indices, best first
    gumbel_perturb(scores, generator)      (B, P) -> (B, P)   scores + Gumbel(0, 1) noise: the top k of the result
                                                              are k patches sampled without replacement from
                                                              softmax(scores) (the Gumbel top-k trick)
Patches are numbered row-major on a (rows, cols) grid. Nothing here has a gradient.
"""
from __future__ import annotations

import torch


def grid_shape(grid: int | tuple[int, int]) -> tuple[int, int]:
    """(rows, cols) of a patch grid given as (rows, cols) or as one int for a square grid."""
    return (grid, grid) if isinstance(grid, int) else (int(grid[0]), int(grid[1]))


def select_topk(scores: torch.Tensor, k: int, grid: int | tuple[int, int], radius: int = 0, *,
                exclude: torch.Tensor | None = None) -> torch.Tensor:
    """(B, P) scores -> (B, k) indices of k distinct patches, best first.

    radius > 0: greedy non-maximum suppression: each patch is chosen only if it lies more than `radius` grid
    steps away (in rows or in columns) from every patch chosen before it; with stride p/2, radius 1 forbids
    overlapping patches. When suppression leaves fewer than k live patches, the rest are the best patches not
    yet chosen (suppressed ones, in score order), so an index never repeats. Greedy NMS is prefix-consistent:
    the first j of k indices are the j indices. `exclude` (B, m): patches that may not be chosen (k <= P - m).
    """
    b, p = scores.shape
    rows_n, cols_n = grid_shape(grid)
    if rows_n * cols_n != p:
        raise ValueError(f"a {rows_n}x{cols_n} grid has {rows_n * cols_n} patches, the scores {p}")
    m = 0 if exclude is None else exclude.shape[1]
    if not 0 <= k <= p - m:
        raise ValueError(f"cannot choose {k} distinct patches of {p}" + (f" with {m} excluded" if m else ""))
    s = scores.detach()
    if radius <= 0 and exclude is None:
        return s.topk(k, dim=-1).indices  # (B, k)
    # one integer key per patch, so that a single argmax picks "best live, else best suppressed, never taken":
    # live patches [P, 2P), suppressed ones [0, P), taken (chosen or excluded) ones -1; within a band, by score
    order = s.argsort(dim=-1, descending=True, stable=True)  # (B, P)
    arange = torch.arange(p, device=s.device)
    rank = torch.empty_like(order).scatter_(1, order, arange.expand(b, p))  # (B, P): 0 = the best patch
    key = 2 * p - 1 - rank  # (B, P), all live
    if exclude is not None:
        key = key.scatter(1, exclude, -1)
    rows, cols = arange // cols_n, arange % cols_n  # (P,) each
    chosen = []
    for _ in range(k):
        i = key.argmax(-1)  # (B,)
        chosen.append(i)
        if radius > 0:
            near = (((rows[None] - rows[i][:, None]).abs() <= radius)
                    & ((cols[None] - cols[i][:, None]).abs() <= radius))  # (B, P)
            key = torch.where(near & (key >= p), key - p, key)  # suppressed: still after every live patch
        key = key.scatter(1, i[:, None], -1)  # taken
    if not chosen:
        return torch.empty(b, 0, dtype=torch.long, device=s.device)
    return torch.stack(chosen, dim=1)  # (B, k)


def gumbel_perturb(scores: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, P) scores + Gumbel(0, 1) noise drawn from `generator` (None: the global one; a generator on another
    device than the scores draws there, and the noise is moved)."""
    device = generator.device if generator is not None else scores.device
    e = torch.empty(scores.shape, device=device).exponential_(generator=generator)  # (B, P), Exp(1)
    noise = -e.clamp_min_(torch.finfo(e.dtype).tiny).log()  # (B, P), Gumbel(0, 1)
    return scores.detach() + noise.to(device=scores.device, dtype=scores.dtype)
