"""flops.py's two FLOP counts: convolutions and matrix products (PyTorch's counter, `test_flops_per_image`), and
every other op at the per-element costs of OTHER_COSTS (`test_other_flops_per_image`). Exact counts on tiny inputs,
worked out by hand; the two-glance model's thumbnail resize, which grows with the input's pixels while its
convolutions do not; the table of docs/PERFORMANCE.md, printed by `flop_share_table`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from multiglance.data import Split
from multiglance.evaluate import evaluate_model
from multiglance.flops import (count_flops, filter_taps, flop_counts, flop_counts_per_image, flop_share_table,
                               flop_shares, flops_per_image)
from multiglance.models import create_model, get_preset

DOCS = Path(__file__).resolve().parents[1] / "docs"


class Op(nn.Module):
    """One function as a module, so that `flop_counts` can run it."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def resize(size):
    return Op(lambda x: F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False))


def test_resize_4x4_to_2x2_by_hand() -> None:
    """Scale 2, support 2: output 0 covers inputs 0-2, output 1 inputs 1-3 (3 taps each, 6 per row). Width pass: 4 rows
    x 6 taps x 2 = 48; height pass: 2 columns x 6 x 2 = 24."""
    assert filter_taps(4, 2) == 6
    flops = flop_counts(resize((2, 2)), torch.rand(1, 1, 4, 4))
    assert (flops.conv_matmul, flops.other, flops.other_by_op) == (0, 72, {"_upsample_bilinear2d_aa": 72})
    assert flop_counts(resize((2, 2)), torch.rand(2, 3, 4, 4)).other == 2 * 3 * 72  # per image and channel


def test_resize_1500_to_240_the_megapixel_thumbnail() -> None:
    """2994 taps per row (12.5 per output, `test_filter_taps_are_the_weights_of_pytorchs_resize`); uint8 counts the
    same as floats."""
    taps = filter_taps(1500, 240)
    assert taps == 2994
    assert flop_counts(resize((1500, 240)), torch.zeros(1, 1, 1500, 1500)).other == 2 * 1500 * taps  # width only
    u8 = torch.zeros(1, 1, 1500, 1500, dtype=torch.uint8)
    assert flop_counts(resize((1500, 240)), u8).other == 2 * 1500 * taps
    assert flop_counts(resize((240, 240)), u8).other == 2 * (1500 + 240) * taps  # width, then height


def test_relu_pooling_batchnorm_by_hand() -> None:
    x = torch.randn(1, 2, 8, 8)  # 128 elements
    assert flop_counts(nn.ReLU(), x).other == 128  # 1 per element
    assert flop_counts(nn.ReLU(inplace=True), x.clone()).other == 128
    assert flop_counts(nn.ReLU6(), x).other == 128  # hardtanh
    assert flop_counts(nn.MaxPool2d(3, stride=2, padding=1), x).other == 2 * 4 * 4 * 8  # 32 outputs, 8 comparisons
    assert flop_counts(nn.AvgPool2d(2), x).other == 2 * 4 * 4 * 4  # 32 outputs, 3 adds and a divide
    assert flop_counts(nn.AdaptiveAvgPool2d(1), x).other == 128  # 1 per input element
    assert flop_counts(Op(lambda t: t.mean((2, 3))), x).other == 128
    bn = nn.BatchNorm2d(2)
    assert flop_counts(bn, x).other == 2 * 128  # inference: one multiply-add per element
    assert flop_counts(Op(lambda t: t.softmax(-1)), x).other == 5 * 128


def test_elementwise_counts_floats_not_index_arithmetic() -> None:
    x = torch.rand(1, 3, 4, 5)  # 60 elements
    assert flop_counts(Op(lambda t: (t - 0.5) / 2), x).other == 2 * 60
    assert flop_counts(Op(lambda t: t.mul(255).long() // 7 + 1), x).other == 60  # the float multiply only
    assert flop_counts(Op(lambda t: t.to(torch.float64).clone()), x).other == 0  # data movement


def test_grid_sample_by_hand() -> None:
    grid = torch.zeros(1, 1, 3, 2)  # 3 sample points
    sample = Op(lambda m: F.grid_sample(m, grid, mode="bilinear", align_corners=False))
    assert flop_counts(sample, torch.rand(1, 2, 4, 4)).other == 8 * 2 * 3  # 4 samples, multiply and add each


def test_conv_and_matmul_stay_pytorchs_count() -> None:
    """The first count is PyTorch's counter unchanged (the published key); the rest are the second."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1), nn.Flatten(),
                        nn.Linear(2 * 2 * 2, 5))
    x = torch.rand(1, 1, 5, 5)
    with torch.no_grad(), FlopCounterMode(display=False) as plain:
        net.eval()(x)
    flops = flop_counts(net, x)
    assert flops.conv_matmul == plain.get_total_flops() == 2 * 2 * 9 * 9 + 2 * 8 * 5  # conv 3x3 outputs, affine
    assert flops.other_by_op == {"relu": 18, "max_pool2d_with_indices": 8 * 8}  # bias additions: not counted
    assert count_flops(net, x) == flops.conv_matmul


def test_two_glance_other_flops_hold_the_thumbnail_resize_which_scales_with_the_pixels() -> None:
    """digits-two on 48x48 and 96x96 images: the same 16x16 thumbnail and 24x24 patches, so the convolutions and
    matrix products grow only by the scorer's outputs for the 40 extra patches, while the resize of the whole image
    to the thumbnail grows with the pixels: its width pass (every input row) fourfold, its height pass twofold."""
    counts, models = {}, {}
    for size in (48, 96):
        torch.manual_seed(0)
        models[size] = model = create_model("digits-two", image_size=size)
        counts[size] = flop_counts_per_image(model, (1, size, size))  # uint8, as `eval` feeds it
        width_pass, height_pass = 2 * size * filter_taps(size, 16), 2 * 16 * filter_taps(size, 16)
        assert counts[size].other_by_op["_upsample_bilinear2d_aa"] == width_pass + height_pass
        floats = flop_counts(model, torch.rand(1, 1, size, size))
        assert floats.other_by_op["_upsample_bilinear2d_aa"] == width_pass + height_pass  # float input: the same
        assert floats.conv_matmul == counts[size].conv_matmul == flops_per_image(model, (1, size, size))
    assert (models[48].num_patches, models[96].num_patches) == (9, 49)
    f1 = models[48].feature_sizes[0]  # glance 1's features, the same thumbnail
    assert counts[96].conv_matmul - counts[48].conv_matmul == 2 * f1 * (49 - 9)  # the scorer's affine layer only
    assert 2 * 96 * filter_taps(96, 16) == 4 * 2 * 48 * filter_taps(48, 16)  # twice the rows, twice the taps
    resize48, resize96 = (counts[s].other_by_op["_upsample_bilinear2d_aa"] for s in (48, 96))
    assert (resize48, resize96) == (11_904, 41_664)
    assert counts[96].other - counts[48].other == resize96 - resize48  # the rest of the other ops: unchanged


def test_evaluate_model_reports_both_counts() -> None:
    """`eval`'s record keeps test_flops_per_image (convolutions and matrix products) and adds the other ops apart,
    for hard and soft inference; an untrained model and 4 images, no training."""
    cfg = get_preset("digits-two")
    cfg.train.workers = 0
    torch.manual_seed(0)
    model = create_model("digits-two")
    split = Split(torch.randint(0, 256, (4, 1, 48, 48), dtype=torch.uint8), torch.tensor([0, 1, 2, 3]),
                  [str(i) for i in range(10)])
    result = evaluate_model(model, cfg, split, timing=False)
    hard, soft = flop_counts_per_image(model, (1, 48, 48)), flop_counts_per_image(model, (1, 48, 48), mode="soft")
    assert result["test_flops_per_image"] == hard.conv_matmul == 1_685_376  # the demo's published 1.69 MFLOPs
    assert result["test_other_flops_per_image"] == hard.other > hard.other_by_op["_upsample_bilinear2d_aa"] > 0
    assert (result["soft_flops_per_image"], result["soft_other_flops_per_image"]) == (soft.conv_matmul, soft.other)
    assert soft.other > hard.other


def test_headline_counts_are_the_published_ones_and_the_docs_table_is_printed_by_the_code() -> None:
    """The conv+matmul counts of the headline pairs are the published ones (docs/results), and the table of
    docs/PERFORMANCE.md is what `flop_share_table` prints now."""
    rows = {r["two"]: r for r in flop_shares()}
    for name, two in (("megapixel-mnist.json", "megapixel-two (k=5)"),
                      ("megapixel-mnist-easy.json", "megapixel-easy-two (k=6)")):
        published = json.loads((DOCS / "results" / name).read_text())
        assert rows[two]["two_flops"].conv_matmul == published["flops_by_k"][two[-2]]
        assert rows[two]["reference_flops"].conv_matmul == published["full_flops"]
    mnist60 = json.loads((DOCS / "results" / "beyond-mnist-cluttered-60-two-oracle-fresh.json").read_text())
    assert rows["mnist60-two-oracle"]["two_flops"].conv_matmul == mnist60["test_flops_per_image"]
    assert flop_share_table() in (DOCS / "PERFORMANCE.md").read_text()


@pytest.mark.parametrize("n_in, n_out", [(4, 2), (7, 3), (2, 4), (100, 25), (1024, 128), (1500, 240)])
def test_filter_taps_are_the_weights_of_pytorchs_resize(n_in: int, n_out: int) -> None:
    """Resizing the rows of an identity matrix writes each output's weights out: their number is the taps counted."""
    eye = torch.eye(n_in, dtype=torch.float64)[None, None]
    weights = F.interpolate(eye, size=(n_in, n_out), mode="bilinear", antialias=True, align_corners=False)
    assert filter_taps(n_in, n_out) == int((weights != 0).sum())


def test_filter_taps_at_an_integer_scale_count_the_window() -> None:
    """48 -> 16 (scale 3, support 3): output i's window is inputs 3i-1 .. 3i+4, clipped (5, 14 x 6, 4 samples); its
    last sample lies at the support's edge, weight 0, and is counted as PyTorch's kernel loops over it."""
    eye = torch.eye(48, dtype=torch.float64)[None, None]
    weights = F.interpolate(eye, size=(48, 16), mode="bilinear", antialias=True, align_corners=False)
    assert filter_taps(48, 16) == 5 + 14 * 6 + 4 == int((weights != 0).sum()) + 15
