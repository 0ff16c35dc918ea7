"""Models: patch grid, the stages of TwoGlance, combination modes, hard inference cost, registry shapes."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from multiglance.errors import ConfigError
from multiglance.models import COMBINE_MODES, TwoGlance, combine, create_model, get_preset, list_models

torch.manual_seed(0)


def small_two(**kw) -> TwoGlance:
    args = dict(in_channels=3, num_classes=5, image_size=24, channels=(4, 8), pool_stride=2, patch_size=8,
                patch_stride=8, thumb_size=12) | kw
    return TwoGlance(**args)


@pytest.mark.parametrize("patch_size,stride", [(8, 8), (12, 6), (16, 4)])
def test_patches_equal_image_crops(patch_size, stride):
    model = small_two(patch_size=patch_size, patch_stride=stride)
    x = torch.rand(3, 3, 24, 24)
    patches = model.patches(x)  # (B, P, C, p, p)
    g = (24 - patch_size) // stride + 1
    assert patches.shape == (3, g * g, 3, patch_size, patch_size) and model.num_patches == g * g
    boxes = model.patch_boxes()
    for i in range(g * g):
        x0, y0, x1, y1 = boxes[i].tolist()
        assert torch.equal(patches[:, i], x[:, :, y0:y1, x0:x1])


def test_select_patches_equals_indexing_all_patches():
    model = small_two(patch_size=12, patch_stride=6)
    x = torch.rand(4, 3, 24, 24)
    index = torch.tensor([[0, 8], [3, 4], [8, 1], [5, 5]])
    chosen = model.select_patches(x, index)  # (B, k, C, p, p)
    expected = torch.stack([model.patches(x)[b, index[b]] for b in range(4)])
    assert torch.equal(chosen, expected)


def test_grid_that_does_not_tile_is_a_clear_error():
    with pytest.raises(ConfigError, match="does not tile"):
        small_two(patch_size=10, patch_stride=8)


def test_combine_modes_match_their_formulas():
    w = torch.softmax(torch.randn(2, 4), -1)
    z = torch.randn(2, 4, 3)
    assert torch.allclose(combine(w, z, "logits"), (w[..., None] * z).sum(1))
    probs = (w[..., None] * z.softmax(-1)).sum(1)
    assert torch.allclose(combine(w, z, "probs"), probs)
    assert torch.allclose(combine(w, z, "mixture"), probs.log(), atol=1e-6)
    assert torch.allclose(combine(w, z, "mixture").exp().sum(-1), torch.ones(2))  # proper log-probabilities


@pytest.mark.parametrize("mode", COMBINE_MODES)
@pytest.mark.parametrize("choice", ["soft", "gumbel"])
def test_gradients_reach_glance1(mode, choice):
    model = small_two(combine=mode, choice=choice).train()
    x, y = torch.rand(8, 3, 24, 24), torch.randint(0, 5, (8,))
    F.cross_entropy(model(x), y).backward()
    for name, p in model.named_parameters():
        if name.startswith(("glance1", "where")):
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_hard_inference_runs_glance2_on_exactly_one_patch():
    """FLOP counter: hard inference = glance 1 + glance 2 on one patch; soft = glance 1 + P patches."""
    model = small_two(patch_size=8, patch_stride=4).eval()  # 5x5 = 25 overlapping patches
    x = torch.rand(1, 3, 24, 24)

    def flops(fn):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops()

    glance1 = flops(lambda: model.where(model.glance1(model.thumbnail(x))))
    one_patch = flops(lambda: model.classify_patches(model.patches(x)[:, :1]))
    assert flops(lambda: model(x)) == glance1 + one_patch
    assert flops(lambda: model(x, mode="soft")) == glance1 + model.num_patches * one_patch + 2 * 25 * 5
    assert flops(lambda: model(x, k=3)) == glance1 + 3 * one_patch + 2 * 3 * 5


def test_hard_answer_is_glance2_on_the_top_patch():
    model = small_two().eval()
    x = torch.rand(5, 3, 24, 24)
    with torch.no_grad():
        probs, top = model.classify(x)
        w = model.patch_weights(x)
        z = model.classify_patches(model.patches(model.normalize(x)))  # (B, P, K)
    assert torch.equal(top, w.argmax(-1))
    assert torch.allclose(probs, z[torch.arange(5), top].softmax(-1), atol=1e-6)


def test_topk_with_all_patches_equals_soft_when_weights_uniform():
    model = small_two().eval()
    with torch.no_grad():
        model.where.weight.zero_()
        model.where.bias.zero_()  # uniform weights
        x = torch.rand(3, 3, 24, 24)
        for mode in COMBINE_MODES:
            model.combine = mode
            assert torch.allclose(model(x, mode="hard", k=model.num_patches), model(x, mode="soft"), atol=1e-5)


@pytest.mark.parametrize("name", list_models())
def test_every_preset_builds_and_gives_class_logits(name):
    model = create_model(name).eval()
    c = get_preset(name).model.in_channels
    x = torch.rand(2, c, model.image_size, model.image_size)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 200 if "tiny" in name else 10) and torch.isfinite(out).all()


def test_paper_presets_follow_the_report_tables():
    one, two = create_model("paper-cifar10-one"), create_model("paper-cifar10-two")
    convs = lambda m: [c.out_channels for c in m.modules() if isinstance(c, torch.nn.Conv2d)]
    assert convs(one) == [32, 32, 64] and convs(two) == [16, 16, 32, 16, 16, 32]
    pools = [m for m in two.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert all(p.kernel_size == 3 and p.stride == 1 for p in pools)
    assert all(p.stride == 2 for p in create_model("paper-cifar10-two-s2").modules()
               if isinstance(p, torch.nn.MaxPool2d))
    assert (two.num_patches, two.patch_size, two.thumb_size) == (16, 8, 16)
    tiny = create_model("paper-tiny-two")
    assert (tiny.num_patches, tiny.patch_size, tiny.patch_stride, tiny.thumb_size) == (9, 32, 16, 32)


def test_create_model_overrides_and_errors():
    assert create_model("paper-cifar10-two", combine="probs").combine == "probs"
    with pytest.raises(ConfigError, match="unknown preset"):
        create_model("no-such-preset")
    with pytest.raises(ConfigError, match="unknown model option"):
        create_model("paper-cifar10-two", colour="red")
    with pytest.raises(ConfigError, match="combine"):
        create_model("paper-cifar10-two", combine="average")
