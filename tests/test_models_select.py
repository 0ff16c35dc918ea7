"""models/select.py: top-k with non-maximum suppression (distinct indices, a plain reference), Gumbel noise."""
from __future__ import annotations

import pytest
import torch

from multiglance.models.select import grid_shape, gumbel_perturb, select_topk


def reference_nms(scores: torch.Tensor, k: int, grid, radius: int, exclude=None) -> torch.Tensor:
    """Greedy NMS one image and one patch at a time, then the best unchosen patches: the plain definition."""
    rows_n, cols_n = grid_shape(grid)
    out = []
    for b in range(scores.shape[0]):
        order = sorted(range(scores.shape[1]), key=lambda i: (-scores[b, i].item(), i))
        banned = set() if exclude is None else set(exclude[b].tolist())
        chosen = []
        for i in order:
            if len(chosen) == k:
                break
            far = all(abs(i // cols_n - j // cols_n) > radius or abs(i % cols_n - j % cols_n) > radius
                      for j in chosen)
            if i not in banned and far:
                chosen.append(i)
        for i in order:  # suppression left fewer than k: the best patches not chosen yet
            if len(chosen) < k and i not in banned and i not in chosen:
                chosen.append(i)
        out.append(chosen)
    return torch.tensor(out, dtype=torch.long).view(scores.shape[0], k)


def test_suppression_never_repeats_an_index_on_a_small_grid():
    scores = torch.tensor([[1.0, 2.0, 3.0, 4.0, 9.0, 5.0, 6.0, 7.0, 8.0]])  # the centre of a 3x3 grid is best
    idx = select_topk(scores, 3, (3, 3), 1)
    # the centre suppresses every other patch: the rest are the best of the suppressed, in score order
    assert idx.tolist() == [[4, 8, 7]]
    assert select_topk(scores, 9, (3, 3), 1)[0].sort().values.tolist() == list(range(9))


def test_suppression_keeps_distance_when_enough_patches_are_live():
    torch.manual_seed(0)
    scores = torch.randn(4, 100)
    idx = select_topk(scores, 6, (10, 10), 1)
    r, c = idx // 10, idx % 10
    near = ((r[:, :, None] - r[:, None]).abs() <= 1) & ((c[:, :, None] - c[:, None]).abs() <= 1)  # (B, k, k)
    assert (near.sum(-1) == 1).all()  # each chosen patch is near itself only
    assert torch.equal(select_topk(scores, 3, 10, 1), idx[:, :3])  # an int grid is square; prefix-consistent


@pytest.mark.parametrize("seed", range(12))
def test_random_scores_grids_and_k_match_the_reference(seed):
    g = torch.Generator().manual_seed(seed)
    rows, cols = (int(v) for v in torch.randint(1, 7, (2,), generator=g))
    p = rows * cols
    k = int(torch.randint(1, p + 1, (1,), generator=g))
    radius = int(torch.randint(0, 3, (1,), generator=g))
    scores = torch.randn(5, p, generator=g)
    idx = select_topk(scores, k, (rows, cols), radius)
    assert idx.shape == (5, k) and idx.dtype == torch.long
    assert all(len(set(row)) == k for row in idx.tolist())  # distinct
    assert torch.equal(idx[:, 0], scores.argmax(-1))  # the best patch first
    assert torch.equal(idx, reference_nms(scores, k, (rows, cols), radius))
    if radius == 0:
        assert torch.equal(idx, scores.topk(k).indices)
    if p > 1:  # excluded patches are never chosen, whatever the radius
        m = int(torch.randint(1, p, (1,), generator=g))
        exclude = torch.stack([torch.randperm(p, generator=g)[:m] for _ in range(5)])  # (5, m)
        kk = min(k, p - m)
        got = select_topk(scores, kk, (rows, cols), radius, exclude=exclude)
        assert torch.equal(got, reference_nms(scores, kk, (rows, cols), radius, exclude))
        assert not (got[:, :, None] == exclude[:, None]).any()


def test_errors_and_empty_selection():
    with pytest.raises(ValueError, match="distinct"):
        select_topk(torch.zeros(1, 4), 5, (2, 2), 1)
    with pytest.raises(ValueError, match="grid"):
        select_topk(torch.zeros(1, 4), 1, (3, 3), 1)
    assert select_topk(torch.zeros(2, 4), 0, (2, 2), 1).shape == (2, 0)


def test_gumbel_top1_samples_softmax_and_is_reproducible():
    scores = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).expand(20000, 4)
    a = gumbel_perturb(scores, torch.Generator().manual_seed(3))
    assert torch.equal(a, gumbel_perturb(scores, torch.Generator().manual_seed(3)))
    assert not torch.equal(a, gumbel_perturb(scores, torch.Generator().manual_seed(4)))
    freq = torch.bincount(a.argmax(-1), minlength=4).float() / 20000
    assert torch.allclose(freq, scores[0].softmax(-1), atol=0.015)
    assert gumbel_perturb(scores[:2]).shape == (2, 4)  # the global generator
