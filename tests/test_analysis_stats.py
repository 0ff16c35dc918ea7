"""Tests for analysis/stats.py: statistics on hand-made weights, localisation on hand-made boxes, and
`collect` against the model's own stages."""
from __future__ import annotations

import math

import pytest
import torch

from multiglance.analysis.stats import (centre_patches, collect, entropy, localisation, normalized_weights,
                                        patch_scores_against_boxes, weight_stats)
from multiglance.data import load_split
from multiglance.models import create_model
from multiglance.runs import load_run
from multiglance.train import limit

# 4 images, 4 positions (a 2x2 grid)
W = torch.tensor([[0.70, 0.10, 0.10, 0.10],
                  [0.10, 0.70, 0.10, 0.10],
                  [0.25, 0.25, 0.25, 0.25],
                  [0.40, 0.30, 0.20, 0.10]])


def test_weight_stats_on_hand_made_weights() -> None:
    s = weight_stats(W)
    torch.testing.assert_close(s.mean, torch.tensor([1.45, 1.35, 0.65, 0.55]) / 4)
    col0 = torch.tensor([0.70, 0.10, 0.25, 0.40])
    assert s.std[0].item() == pytest.approx(math.sqrt(((col0 - col0.mean()) ** 2).sum().item() / 3), rel=1e-6)
    # the argmax of the uniform row is position 0 (the first of equals)
    torch.testing.assert_close(s.top_share, torch.tensor([0.75, 0.25, 0.0, 0.0]))
    assert s.entropy[2].item() == pytest.approx(math.log(4), rel=1e-6)  # uniform: the most
    assert s.entropy[0].item() == pytest.approx(-(0.7 * math.log(0.7) + 3 * 0.1 * math.log(0.1)), rel=1e-6)
    torch.testing.assert_close(s.max_weight, torch.tensor([0.70, 0.70, 0.25, 0.40]))
    summary = s.summary(grid=2)
    assert summary["mean"] == [[pytest.approx(0.3625), pytest.approx(0.3375)], [pytest.approx(0.1625),
                                                                                  pytest.approx(0.1375)]]
    assert summary["entropy_max"] == pytest.approx(math.log(4))
    assert summary["top_positions_used"] == 2
    assert summary["entropy_ratio"] == pytest.approx(entropy(W).mean().item() / math.log(4), rel=1e-6)


def test_top_share_counts_the_given_choices() -> None:
    s = weight_stats(W, top=torch.tensor([3, 3, 1, 3]))
    torch.testing.assert_close(s.top_share, torch.tensor([0.0, 0.25, 0.0, 0.75]))


def test_normalized_weights_are_standardised_per_position() -> None:
    n = normalized_weights(W)
    torch.testing.assert_close(n.mean(0), torch.zeros(4), atol=1e-6, rtol=0)
    torch.testing.assert_close(n.std(0), torch.ones(4))
    torch.testing.assert_close(n[:, 1], (W[:, 1] - W[:, 1].mean()) / W[:, 1].std())
    # a position whose weight never changes is 0, not NaN
    const = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    assert torch.equal(normalized_weights(const), torch.zeros(2, 2))


def test_nearly_constant_weights_pick_different_patches_once_normalised() -> None:
    # the report's situation: position 0 always has the largest raw weight; normalised, each image stands out
    w = torch.tensor([[0.52, 0.16, 0.16, 0.16], [0.50, 0.18, 0.16, 0.16], [0.50, 0.16, 0.18, 0.16],
                      [0.50, 0.16, 0.16, 0.18]])
    assert w.argmax(-1).tolist() == [0, 0, 0, 0]
    assert normalized_weights(w).argmax(-1).tolist() == [0, 1, 2, 3]


# a 3x3 grid of 24-pixel patches with stride 12 on a 48-pixel image (the digits preset)
BOXES = create_model("digits-two").patch_boxes()


def test_patch_scores_against_hand_made_boxes() -> None:
    objects = torch.tensor([[0, 0, 12, 12],      # only patch 0 holds it (whole)
                            [30, 30, 46, 46],    # bottom-right corner
                            [20, 20, 28, 28]])   # the very middle: every patch overlaps it
    s = patch_scores_against_boxes(BOXES, objects)
    assert s["overlap"][0].tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0]
    assert s["coverage"][0, 0].item() == 1.0
    assert s["overlap"][1].tolist() == [0, 0, 0, 0, 1, 1, 0, 1, 1]
    # patch 4 spans 12..36: it holds 6x6 of the 16x16 box at (30, 30)
    assert s["coverage"][1, 4].item() == pytest.approx(36 / 256)
    assert s["coverage"][1, 8].item() == pytest.approx(1.0)  # patch 8 spans 24..48
    assert s["overlap"][2].sum().item() == 9
    # box centre (24, 24): contained by the patches whose span [x0, x1) holds 24 on both axes: 4, 5, 7, 8
    assert s["contains_centre"][2].nonzero()[:, 0].tolist() == [4, 5, 7, 8]


def test_localisation_scores_and_baselines() -> None:
    objects = torch.tensor([[0, 0, 12, 12], [30, 30, 46, 46]])
    choices = {"model": torch.tensor([0, 8]), "wrong": torch.tensor([8, 0])}
    loc = localisation(choices, BOXES, objects, image_size=48)
    assert loc["overlap"]["model"] == 1.0 and loc["overlap"]["wrong"] == 0.0
    assert loc["overlap"]["random"] == pytest.approx((1 / 9 + 4 / 9) / 2)  # exact expectation
    assert loc["overlap"]["centre"] == pytest.approx(0.5)  # patch 4 misses the first box, meets the second
    assert loc["overlap"]["best"] == 1.0
    assert loc["coverage"]["model"] == pytest.approx(1.0)
    assert loc["coverage"]["centre"] == pytest.approx((0 + 36 / 256) / 2)
    assert centre_patches(BOXES, 48).tolist() == [4]
    # an even grid has four centre patches: the baseline averages them
    even = create_model("paper-cifar10-two").patch_boxes()  # 4x4 patches of 8 on 32
    assert centre_patches(even, 32).tolist() == [5, 6, 9, 10]


def test_collect_uses_the_models_stages(tiny_run) -> None:
    model, cfg = load_run(tiny_run)
    split = limit(load_split(cfg.data.name, None, "test"), 40)
    looks = collect(model, split, batch_size=16)
    x = split.images  # uint8, as collect feeds the two-glance model
    with torch.no_grad():
        w = model.patch_weights(x)
        logits, index = model.infer(x, "hard", 1)
    torch.testing.assert_close(looks.weights, w)
    assert looks.weights.shape == (40, model.num_patches)
    torch.testing.assert_close(looks.weights.sum(-1), torch.ones(40))
    assert torch.equal(looks.top, index[:, 0]) and torch.equal(looks.top, w.argmax(-1))
    assert torch.equal(looks.predictions, logits.argmax(-1))


def test_non_square_grids_summary_and_centre() -> None:
    from multiglance.models.glances import TwoGlance

    model = TwoGlance(in_channels=3, num_classes=2, image_size=32, image_width=48, channels=(8,), pool_stride=2,
                      patch_size=16, patch_stride=8, thumb_size=16)
    assert model.grid == (3, 5)
    boxes = model.patch_boxes()
    # patch centres x 8, 16, 24, 32, 40 and y 8, 16, 24: the image centre (24, 16) is patch (1, 2)
    assert centre_patches(boxes, (32, 48)).tolist() == [7]
    w = torch.softmax(torch.randn(6, 15), -1)
    summary = weight_stats(w).summary((3, 5))
    assert [len(r) for r in summary["mean"]] == [5, 5, 5] and summary["positions"] == 15
    objects = torch.tensor([[16, 8, 32, 24]])  # exactly patch 7
    loc = localisation({"model": torch.tensor([7])}, boxes, objects, (32, 48))
    assert loc["coverage"]["model"] == 1.0 and loc["coverage"]["centre"] == 1.0


@pytest.mark.parametrize("workers", [0, 2])
def test_collect_reads_a_streamed_split_and_leaves_out_corrupt_files(tmp_path, workers) -> None:
    from multiglance.data.stream import StreamSplit
    from multiglance.data.synthetic_folders import make_shape_folder
    from multiglance.models.glances import TwoGlance

    root = make_shape_folder(tmp_path / "f", n_per_class=4, size=64, seed=1, corrupt=2)
    split = StreamSplit(root=root, split="train", size=32, width=48, channels=3)  # 10 files, 2 corrupt
    torch.manual_seed(0)
    model = TwoGlance(in_channels=3, num_classes=2, image_size=32, image_width=48, channels=(8,), pool_stride=2,
                      patch_size=16, patch_stride=8, thumb_size=16, top_k=2, selection="nms").eval()
    with pytest.warns(UserWarning, match="skipping"):
        looks = collect(model, split, batch_size=3, workers=workers)
    good = [i for i, f in enumerate(split.files) if "corrupt" not in f]
    assert len(looks) == 8 and looks.index.tolist() == good and torch.equal(looks.labels, split.labels[good])
    x, keep = split.take(looks.index)  # (8, 3, 32, 48) uint8
    assert keep.all() and x.dtype == torch.uint8
    with torch.no_grad():
        w = model.patch_weights(x)
        logits, index = model.infer(x, "hard")  # the model's own top_k = 2
    torch.testing.assert_close(looks.weights, w)
    assert torch.equal(looks.chosen, index) and torch.equal(looks.top, index[:, 0])
    assert torch.equal(looks.predictions, logits.argmax(-1)) and looks.weights.shape == (8, 15)
