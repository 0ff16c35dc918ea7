"""Models: patch grid, the stages of TwoGlance (shapes as its docstring says, non-square inputs, uint8 ~ float,
a plain reference), combination modes, hard inference cost, the option matrix, registry shapes, checkpoints."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from multiglance.config import ModelConfig
from multiglance.errors import ConfigError
from multiglance.models import COMBINE_MODES, TwoGlance, build_model, combine, create_model, get_preset, list_models
from multiglance.models import glances


@pytest.fixture(autouse=True)
def seeded() -> None:
    """Every test starts from torch seed 0: its random inputs and weights do not depend on which tests ran first."""
    torch.manual_seed(0)


def small_two(**kw) -> TwoGlance:
    args = dict(in_channels=3, num_classes=5, image_size=24, channels=(4, 8), pool_stride=2, patch_size=8,
                patch_stride=8, thumb_size=12) | kw
    if args.get("combine") == "presence":
        args.setdefault("background", 2)  # class 2 means "no object here"
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
    F.cross_entropy(model(x).answer, y).backward()
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

    glance1 = flops(lambda: model.where(model.glance1(model.thumbnail(x)).flatten(1)))
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
        model.background = 2  # read by combine=presence only
        for mode in COMBINE_MODES:
            model.combine = mode
            assert torch.allclose(model(x, mode="hard", k=model.num_patches), model(x, mode="soft"), atol=1e-5)


@pytest.mark.parametrize("name", list_models())
def test_every_preset_builds_and_gives_class_logits(name):
    model = create_model(name).eval()
    c = get_preset(name).model.in_channels or 3  # None: from the data; built without data, 3
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


# ---- non-square inputs, uint8 inputs, the docstring's shapes, a plain reference ----------------------------
def wide(**kw) -> TwoGlance:
    """A 20 x 36 input, 8 x 8 patches with stride 4: a 4 x 8 grid, a 10 x 18 thumbnail."""
    torch.manual_seed(0)
    m = small_two(**(dict(image_size=20, image_width=36, patch_size=8, patch_stride=4, thumb_size=10) | kw))
    m.normalize.set_stats(torch.tensor([0.4, 0.5, 0.6]), torch.tensor([0.2, 0.3, 0.25]))
    return m


def test_non_square_grid_thumbnail_and_boxes():
    m = wide()
    assert m.grid == (4, 8) and m.num_patches == 32 and m.thumb_shape == (10, 18)
    assert small_two().thumb_shape == (12, 12) and small_two().grid == (3, 3)  # square as before
    x = torch.rand(2, 3, 20, 36)
    ps, boxes = m.patches(x), m.patch_boxes()
    assert boxes[:, 2].max() == 36 and boxes[:, 3].max() == 20  # the grid reaches both far edges
    for i in range(m.num_patches):
        x0, y0, x1, y1 = boxes[i].tolist()
        assert torch.equal(ps[:, i], x[:, :, y0:y1, x0:x1])
    index = torch.tensor([[0, 31, 9], [7, 8, 24]])
    assert torch.equal(m.select_patches(x, index), ps[torch.arange(2)[:, None], index])


def test_stage_shapes_are_those_of_the_module_docstring():
    """Every stage line of the docstring (`name(args)  in -> out  comment`) is run on a 20 x 36 input."""
    m = wide(fuse=True).eval()
    b, k = 2, 3
    x = torch.rand(b, 3, 20, 36)
    s = m.patch_scores(x)
    idx = m.top_patches(s, k)
    ps = m.select_patches(x, idx)
    run = {"thumbnail": lambda: m.thumbnail(x), "glance1_features": lambda: m.glance1_features(x),
           "patch_scores": lambda: s, "patch_weights": lambda: m.patch_weights(x), "top_patches": lambda: idx,
           "patches": lambda: m.patches(x), "select_patches": lambda: ps,
           "normalize_patches": lambda: m.normalize_patches(ps),
           "classify_patches": lambda: m.classify_patches(m.normalize_patches(ps), m.glance1_features(x)),
           "output": lambda: (m.output(x, "hard", k).answer, m.output(x, "hard", k).selected_index),
           "infer": lambda: m.infer(x, "hard", k), "classify": lambda: m.classify(x, k),
           "patch_boxes": lambda: m.patch_boxes()}
    sym = dict(B=b, C=3, H=20, W=36, th=10, tw=18, gh=4, gw=8, P=32, p=8, k=k, n=k, K=5,
               F1=m.feature_sizes[0], F2=m.feature_sizes[1])
    lines = re.findall(r"^    (\w+)\(.*?\)\s+(.*?) -> (.*?)(?:\s{2,}.*)?$", glances.__doc__, re.M)
    assert {name for name, _, _ in lines} == set(run)
    for name, _, out in lines:
        want = [tuple(eval(d, {}, sym) for d in shape.split(",") if d.strip())  # "(B,)" is one dimension
                for shape in re.findall(r"\(([^()]*)\)", out)]
        with torch.no_grad():
            got = run[name]()
        got = [tuple(t.shape) for t in (got if isinstance(got, tuple) else (got,))]
        assert got == want, name


@pytest.mark.parametrize("scorer", ["dense", "conv"])
@pytest.mark.parametrize("selection", ["topk", "nms"])
@pytest.mark.parametrize("topk_combine", ["weights", "equal"])
def test_uint8_input_agrees_with_float_input(scorer, selection, topk_combine):
    """uint8 images take torch's uint8 antialiased resize for the thumbnail (fixed-point weights, rounded to uint8
    levels: within one level of the float path); the patches are cut from the uint8 image and give exactly the
    float results."""
    m = wide(scorer=scorer, selection=selection, topk_combine=topk_combine, choice="topk", top_k=3, explore=2,
             explore_by="ink", combine="mixture").eval()
    x8 = torch.randint(0, 256, (3, 3, 20, 36), dtype=torch.uint8)
    xf = x8.float() / 255
    with torch.no_grad():
        t8, tf = m.thumbnail(x8), m.thumbnail(xf)
        assert (t8 - tf).abs().max() <= 1 / 255 and torch.equal(t8, (t8 * 255).round() / 255)
        idx = m.top_patches(m.patch_scores(x8), 3)  # the same patches, then the same glance 2 answers
        assert torch.equal(m._classify_chosen(x8, idx, None), m._classify_chosen(xf, idx, None))
        s8, sf = m.patch_scores(x8), m.patch_scores(xf)  # glance 1 differs by the thumbnail's rounding only
        assert (s8 - sf).abs().max() <= 0.05 * sf.abs().max()
    m.train()
    outs = []
    for x in (x8, x8.clone()):
        m.generator = torch.Generator().manual_seed(1)
        out = m(x)
        outs.append((out.answer, out.selected_index))
    assert torch.equal(outs[0][1], outs[1][1]) and torch.equal(outs[0][0], outs[1][0])  # seeded: reproducible


def reference_infer(m: TwoGlance, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard top-k inference written out plainly (today's order: normalise the whole image, then resize and crop)."""
    xn = (x - m.normalize.mean[:, None, None]) / m.normalize.std[:, None, None]
    thumb = F.interpolate(xn, size=m.thumb_shape, mode="bilinear", antialias=True, align_corners=False)
    scores = m.where(m.glance1(thumb).flatten(1))  # (B, P)
    top = scores.topk(k, dim=-1)
    boxes = m.patch_boxes()
    crops = torch.stack([torch.stack([xn[b, :, y0:y1, x0:x1] for x0, y0, x1, y1 in boxes[top.indices[b]].tolist()])
                         for b in range(x.shape[0])])  # (B, k, C, p, p)
    z = m.what(m.glance2(crops.flatten(0, 1)).flatten(1)).view(x.shape[0], k, -1)  # (B, k, K)
    return (z[:, 0] if k == 1 else combine(top.values.softmax(-1), z, m.combine, m.background)), top.indices


@pytest.mark.parametrize("square", [True, False])
@pytest.mark.parametrize("mode", COMBINE_MODES)
def test_float_inference_equals_a_plain_reference(square, mode):
    m = (small_two(combine=mode, patch_stride=4) if square else wide(combine=mode)).eval()
    m.normalize.set_stats(torch.tensor([0.4, 0.5, 0.6]), torch.tensor([0.2, 0.3, 0.25]))
    x = torch.rand(4, 3, m.image_size, m.image_width)
    with torch.no_grad():
        for k in (1, 3):
            out, idx = m.infer(x, "hard", k)
            ref, ref_idx = reference_infer(m, x, k)
            assert torch.equal(idx, ref_idx) and torch.allclose(out, ref, atol=1e-5), k


# ---- the option matrix -------------------------------------------------------------------------------------
@pytest.mark.parametrize("scorer", ["dense", "conv"])
@pytest.mark.parametrize("selection", ["topk", "nms"])
@pytest.mark.parametrize("topk_combine", ["weights", "equal"])
@pytest.mark.parametrize("choice", ["soft", "gumbel", "reinforce", "oracle", "topk"])
def test_option_matrix_trains_and_infers(scorer, selection, topk_combine, choice):
    m = wide(scorer=scorer, selection=selection, topk_combine=topk_combine, choice=choice, top_k=3, explore=1,
             combine="mixture").train()
    x8, y = torch.randint(0, 256, (4, 3, 20, 36), dtype=torch.uint8), torch.randint(0, 5, (4,))
    out = m(x8)
    assert out.answer.shape == (4, 5) and torch.isfinite(out.answer).all()
    loss = F.cross_entropy(out.answer, y) + (-out.log_prob.mean() if choice == "reinforce" else 0)
    loss.backward()
    for part in ("glance1", "where", "glance2", "what"):
        grads = [p.grad for p in getattr(m, part).parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), part
    m.eval()
    with torch.no_grad():
        logits, idx = m.infer(x8)
        probs, top = m.classify(x8)
    assert logits.shape == (4, 5) and idx.shape == (4, 3) and top.shape == (4,)
    assert all(len(set(r)) == 3 for r in idx.tolist())
    assert torch.allclose(probs.sum(-1), torch.ones(4), atol=1e-5) and torch.equal(top, idx[:, 0])


def test_topk_combine_equal_is_the_log_mean_probability_and_k1_is_the_top_patch():
    m = wide(topk_combine="equal", selection="nms").eval()
    x = torch.rand(3, 3, 20, 36)
    with torch.no_grad():
        out, idx = m.infer(x, "hard", 4)
        z = m.classify_patches(m.normalize_patches(m.select_patches(x, idx)))  # (B, 4, K)
        assert torch.allclose(out, z.softmax(-1).mean(1).log(), atol=1e-6)
        one, i1 = m.infer(x, "hard", 1)
        assert torch.equal(one, z[:, 0]) and torch.equal(i1[:, 0], idx[:, 0])
        r, c = idx // 8, idx % 8
        near = ((r[:, :, None] - r[:, None]).abs() <= 1) & ((c[:, :, None] - c[:, None]).abs() <= 1)
        assert (near.sum(-1) == 1).all()  # nms: the 4 patches do not neighbour each other


def test_conv_scorer_size_does_not_grow_with_the_patches():
    count = lambda m: sum(p.numel() for p in m.where.parameters())  # noqa: E731
    small, big = (wide(scorer="conv", glance1_channels=(16, 32), image_width=w) for w in (36, 100))
    assert big.num_patches > 2 * small.num_patches and count(small) == count(big) == 32 * 32 * 9 + 32 + 32 + 1
    assert small.where.centres[0, 0, 0].tolist() == pytest.approx([4 / 36 * 2 - 1, 4 / 20 * 2 - 1])


def test_bad_options_are_clear_errors():
    for kw, match in ((dict(scorer="mlp"), "scorer"), (dict(selection="best"), "selection"),
                      (dict(topk_combine="vote"), "topk_combine"), (dict(explore_by="random"), "explore_by"),
                      (dict(choice="topk", top_k=8, explore=2), "explore"), (dict(nms_radius=-1), "nms_radius"),
                      (dict(image_width=30), "does not tile")):
        with pytest.raises(ConfigError, match=match):
            small_two(**kw)


# ---- checkpoints and the registry ---------------------------------------------------------------------------
def test_state_dict_names_and_shapes_are_those_of_saved_runs():
    dense = {"normalize.mean": [3], "normalize.std": [3], "glance1.body.0.weight": [4, 3, 3, 3],
             "glance1.body.0.bias": [4], "glance1.body.3.weight": [8, 4, 3, 3], "glance1.body.3.bias": [8],
             "where.weight": [9, 72], "where.bias": [9], "glance2.body.0.weight": [4, 3, 3, 3],
             "glance2.body.0.bias": [4], "glance2.body.3.weight": [8, 4, 3, 3], "glance2.body.3.bias": [8],
             "what.weight": [5, 32], "what.bias": [5]}
    assert {k: list(v.shape) for k, v in small_two().state_dict().items()} == dense
    mega = {"normalize.mean": [1], "normalize.std": [1], "glance1.body.0.weight": [4, 1, 3, 3],
            "glance1.body.0.bias": [4], "glance1.body.3.weight": [8, 4, 3, 3], "glance1.body.3.bias": [8],
            "where.body.0.weight": [32, 8, 3, 3], "where.body.0.bias": [32], "where.body.2.weight": [1, 32, 1, 1],
            "where.body.2.bias": [1], "glance2.body.0.weight": [4, 1, 3, 3], "glance2.body.0.bias": [4],
            "glance2.body.3.weight": [8, 4, 3, 3], "glance2.body.3.bias": [8], "what.weight": [10, 1352],
            "what.bias": [10]}
    m = create_model("megapixel-easy-two", image_size=200, thumb_size=40, channels=(4, 8), glance1_channels=(4, 8),
                     top_k=3)
    assert {k: list(v.shape) for k, v in m.state_dict().items()} == mega
    assert (m.scorer, m.selection, m.choice, m.grid) == ("conv", "nms", "topk", (7, 7))


def test_build_model_passes_every_new_option():
    cfg = ModelConfig(in_channels=1, num_classes=4, image_size=24, image_width=40, patch_size=8, patch_stride=8,
                      thumb_size=12, channels=(4,), pool_stride=2, scorer="conv", score_width=8, selection="nms",
                      nms_radius=2, topk_combine="equal", choice="topk", top_k=2, explore=3, explore_by="ink")
    m = build_model(cfg)
    assert (m.image_shape, m.grid, m.thumb_shape) == ((24, 40), (3, 5), (12, 20))
    assert (m.scorer, m.where.body[0].out_channels, m.selection, m.radius, m.topk_combine) == \
        ("conv", 8, "nms", 2, "equal")
    assert (m.choice, m.top_k, m.explore, m.explore_by) == ("topk", 2, 3, "ink")
    one = build_model(ModelConfig(kind="one", image_size=24, image_width=40, channels=(4,), pool_stride=2,
                                  input_fraction=0.5))  # one glance on a non-square image, resized to 12x20
    assert one.input_shape == (12, 20) and one(torch.rand(2, 3, 24, 40)).shape == (2, 10)


def test_fields_left_to_the_data_build_by_the_derive_rule():
    from multiglance.config import RunConfig, derive

    cfg = ModelConfig(in_channels=None, num_classes=None, image_size=256, patch_size=None, patch_stride=None,
                      thumb_size=None, channels=(4,), pool_stride=2)
    m = build_model(cfg)
    want = derive(RunConfig(model=ModelConfig(**vars(cfg))), (3, 256, 256), [str(i) for i in range(10)]).model
    assert (m.patch_size, m.patch_stride, m.thumb_size) == (want.patch_size, want.patch_stride, want.thumb_size)
    assert m.normalize.mean.numel() == 3 and m.what.out_features == 10
    assert cfg.patch_size is None  # the caller's config is left as it was


def test_presets_are_fresh_configs_every_call():
    """Overriding one preset's config never changes the next get_preset of it (no shared sub-configs)."""
    from multiglance.config import apply_overrides
    from multiglance.models import get_preset, list_models

    for name in list_models():
        apply_overrides(get_preset(name), ["data.name=mnist", "model.image_size=77", "train.lr=0.5"])
        again = get_preset(name)
        assert again.data.name != "mnist" or name.startswith("mnist"), name
        assert again.model.image_size != 77 and again.train.lr != 0.5, name
