"""Top-k inference, hard-choice training (straight-through Gumbel, REINFORCE, top-k on the chosen patches only),
fusion, and the new presets."""
import pytest
import torch
import torch.nn.functional as F

from multiglance.config import ModelConfig, RunConfig
from multiglance.models import TwoGlance, combine, create_model, get_preset, list_models
from multiglance.train import loss_fn


def tiny(**kw) -> TwoGlance:
    torch.manual_seed(0)
    args = dict(in_channels=1, num_classes=5, image_size=24, channels=(4, 4), pool_stride=2, patch_size=12,
                patch_stride=6, thumb_size=8)
    return TwoGlance(**(args | kw))


@pytest.mark.parametrize("combine", ["logits", "probs", "mixture"])
@pytest.mark.parametrize("fuse", [False, True])
def test_top_p_equals_soft_with_uniform_weights(combine, fuse):
    m = tiny(combine=combine, fuse=fuse).eval()
    torch.nn.init.zeros_(m.where.weight)
    torch.nn.init.zeros_(m.where.bias)  # every patch weighted 1/P
    x = torch.rand(3, 1, 24, 24)
    soft = m(x, mode="soft")
    top_all, idx = m.infer(x, "hard", m.num_patches)
    assert idx.shape == (3, m.num_patches)
    torch.testing.assert_close(top_all, soft, rtol=1e-5, atol=1e-5)
    # k = 1 is glance 2 on the top patch alone
    one, i1 = m.infer(x, "hard", 1)
    z = m.classify_patches(m.select_patches(m.normalize(x), i1), m.glance1_features(x) if fuse else None)[:, 0]
    torch.testing.assert_close(one, z)


def test_select_patches_matches_the_grid():
    m = tiny()
    x = torch.rand(2, 1, 24, 24)
    index = torch.tensor([[0, 8], [4, 3]])
    torch.testing.assert_close(m.select_patches(x, index), m.patches(x)[torch.arange(2)[:, None], index])


def config(m: TwoGlance) -> RunConfig:
    """A run config whose model options are `m`'s (the objective follows `model.choice`)."""
    return RunConfig(model=ModelConfig(combine=m.combine, choice=m.choice))


def grads_of_glance1(m: TwoGlance, cfg: RunConfig) -> tuple[torch.Tensor, torch.Tensor]:
    m.train()
    x, y = torch.rand(16, 1, 24, 24), torch.randint(0, 5, (16,))
    loss = loss_fn(m, m(x), y, cfg)
    loss.backward()
    return m.where.weight.grad, m.glance1.body[0].weight.grad


@pytest.mark.parametrize("combine", ["logits", "probs", "mixture"])
def test_gumbel_gradient_reaches_glance1_for_every_patch(combine):
    m = tiny(combine=combine, choice="gumbel", tau=1.0)
    where, conv = grads_of_glance1(m, config(m))
    assert conv is not None and conv.abs().sum() > 0
    # the straight-through gradient reaches the scores of unchosen patches too (not only the one-hot winner)
    assert (where.abs().sum(1) > 0).sum() == m.num_patches


def test_gumbel_mixture_forward_is_the_chosen_patch():
    m = tiny(combine="mixture", choice="gumbel").train()
    torch.manual_seed(1)
    x = torch.rand(4, 1, 24, 24)
    out = m(x)
    assert out.kind == "log_probs"
    probs = out.answer.exp().sum(-1)
    torch.testing.assert_close(probs, torch.ones(4), rtol=1e-5, atol=1e-5)  # log-probabilities of one patch


def test_reinforce_gradient_reaches_glance1_and_classifies_one_patch():
    m = tiny(choice="reinforce", fuse=True)
    where, conv = grads_of_glance1(m, config(m))
    assert where.abs().sum() > 0 and conv.abs().sum() > 0
    out = m(torch.rand(16, 1, 24, 24))
    assert out.log_prob.shape == (16,) and (out.log_prob <= 0).all() and out.selected_index.shape == (16, 1)
    # without the REINFORCE term (the plain CE), only the fused features carry gradient to glance 1's conv,
    # and the scores get none: the term is what trains "where"
    m2 = tiny(choice="reinforce", fuse=False)
    m2.train()
    x, y = torch.rand(16, 1, 24, 24), torch.randint(0, 5, (16,))
    F.cross_entropy(m2(x).answer, y).backward()
    assert m2.where.weight.grad is None or m2.where.weight.grad.abs().sum() == 0


def test_reinforce_moves_weight_to_the_rewarded_patch():
    """Only patch 0 is bright and glance 2 answers the label only on a bright patch: REINFORCE alone (glance 2
    fixed) raises glance 1's weight on patch 0."""
    torch.manual_seed(0)
    m = tiny(choice="reinforce", num_classes=2, patch_stride=12)  # a 2x2 grid of disjoint patches
    m.classify_patches = lambda ps, ctx=None: torch.stack(  # (B, n, 2): class 0 only where the patch is bright
        [ps.mean(dim=(2, 3, 4)) * 8, torch.zeros(ps.shape[:2])], dim=-1)
    x = torch.zeros(64, 1, 24, 24)
    x[:, :, :12, :12] = 1.0
    y = torch.zeros(64, dtype=torch.long)
    opt = torch.optim.SGD([*m.glance1.parameters(), *m.where.parameters()], lr=0.2)
    before = m.eval().patch_weights(x[:1])[0, 0].item()
    for _ in range(40):
        m.train()
        loss = loss_fn(m, m(x), y, config(m))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = m.eval().patch_weights(x[:1])[0, 0].item()
    assert before < 0.5 and after > 0.9


def test_new_presets_build_and_run():
    for name in ["mnist60-one", "mnist60-thumb-one", "mnist60-two", "mnist100-two", "cifar10-thumb-one",
                 "cifar10-two-fuse", "cifar10-two-fuse-reinforce"]:
        assert name in list_models()
        cfg = get_preset(name).model
        m = create_model(name).eval()
        x = torch.rand(2, cfg.in_channels, cfg.image_size, cfg.image_size)
        assert m(x).shape == (2, 10)
    assert get_preset("paper-cifar10-two").model.choice == "soft"  # the report's scheme stays the default
    assert get_preset("paper-cifar10-two").model.fuse is False
    assert create_model("mnist100-two").num_patches == 81


def test_gumbel_mixture_gradient_favours_an_unchosen_good_patch():
    """Only patch 3 recognises the label, and glance 1 rarely picks it: the straight-through gradient must still
    raise its score (log of a one-hot w would only reinforce whichever patch was drawn)."""
    torch.manual_seed(0)
    m = tiny(combine="mixture", choice="gumbel", num_classes=5).train()
    torch.nn.init.zeros_(m.where.weight)
    with torch.no_grad():
        m.where.bias.zero_()
        m.where.bias[3] = -5.0

    def fake_classify(ps, ctx=None):  # (B, n, 5): patch 3 says class 0 loudly, the rest are uniform
        z = torch.zeros(*ps.shape[:2], 5)
        z[:, 3, 0] = 10.0
        return z

    m.classify_patches = fake_classify
    x, y = torch.rand(8, 1, 24, 24), torch.zeros(8, dtype=torch.long)
    F.cross_entropy(m(x).answer, y).backward()
    assert m.where.bias.grad[3] < 0  # gradient descent raises patch 3's score
    assert m.where.bias.grad[3] == m.where.bias.grad.min()


def test_oracle_choice_trains_glance1_towards_glance2s_best_patch():
    """choice="oracle": glance 1 is trained to name the patch on which glance 2's loss is lowest."""
    import torch.nn.functional as F

    from multiglance.models import TwoGlance
    from multiglance.train import oracle_loss

    torch.manual_seed(0)
    model = TwoGlance(in_channels=1, num_classes=3, image_size=16, channels=(4,), pool_stride=2, patch_size=8,
                      patch_stride=8, thumb_size=8, choice="oracle").train()
    x, y = torch.rand(6, 1, 16, 16), torch.randint(0, 3, (6,))
    out = model(x)
    z, scores = out.patch_logits, out.scores
    assert z.shape == (6, 4, 3) and scores.shape == (6, 4)
    loss = oracle_loss(z, scores, y)
    per_patch = torch.stack([F.cross_entropy(z[:, i], y, reduction="none") for i in range(4)], 1)
    expected = per_patch.mean() + F.cross_entropy(scores, per_patch.argmin(-1))
    assert torch.allclose(loss, expected)
    loss.backward()
    assert model.where.weight.grad.abs().sum() > 0 and model.glance2.body[0].weight.grad.abs().sum() > 0


def test_oracle_best_moves_glance2s_loss_onto_its_best_patch():
    """train.oracle_best=a: glance 2's term is (1-a) * mean over patches + a * the best patch's loss."""
    import torch.nn.functional as F

    from multiglance.train import oracle_loss

    torch.manual_seed(0)
    z, scores, y = torch.randn(5, 4, 3), torch.randn(5, 4), torch.randint(0, 3, (5,))
    per_patch = torch.stack([F.cross_entropy(z[:, i], y, reduction="none") for i in range(4)], 1)  # (5, 4)
    where = F.cross_entropy(scores, per_patch.argmin(-1))
    for a in (0.0, 0.5, 1.0):
        expected = (1 - a) * per_patch.mean() + a * per_patch.min(-1).values.mean() + where
        assert torch.allclose(oracle_loss(z, scores, y, best=a), expected)
    z1 = z.clone().requires_grad_()
    oracle_loss(z1, scores, y, best=1.0).backward()
    touched = (z1.grad.abs().sum(-1) > 0)  # (5, 4): with a=1 only each image's best patch gets a gradient
    assert torch.equal(touched, F.one_hot(per_patch.argmin(-1), 4).bool())


# ---- choice="topk": glance 2 on the top_k + explore chosen patches only ----------------------------------------
def topk_model(**kw) -> TwoGlance:
    """A 5 x 5 grid of overlapping patches (24 x 24, patches 8 stride 4)."""
    return tiny(**({"patch_size": 8, "patch_stride": 4, "choice": "topk", "top_k": 3, "explore": 2,
                    "combine": "mixture"} | kw))


@pytest.mark.parametrize("explore_by", ["sample", "ink"])
@pytest.mark.parametrize("scorer", ["dense", "conv"])
def test_topk_training_runs_glance2_on_b_times_n_patches_only(explore_by, scorer):
    m = topk_model(explore_by=explore_by, scorer=scorer, selection="nms").train()
    seen = []
    m.glance2.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    x, y = torch.rand(4, 1, 24, 24), torch.randint(0, 5, (4,))
    m.generator = torch.Generator().manual_seed(0)
    out = m(x)
    assert seen == [4 * 5] and m.num_patches == 25  # B * (k + explore), not B * P
    z, index = out.selected_logits, out.selected_index
    assert z.shape == (4, 5, 5) and index.shape == (4, 5)
    assert all(len(set(r)) == 5 for r in index.tolist())  # explored patches are never the chosen ones
    scores = m.patch_scores(x)
    assert torch.equal(index[:, :3], m.top_patches(scores, 3))  # the top k by glance 1, NMS applied
    torch.testing.assert_close(out.answer, combine(scores.gather(1, index).softmax(-1), z, "mixture"))
    assert out.kind == "log_probs" and torch.equal(out.selected_scores, scores.gather(1, index))
    F.cross_entropy(out.answer, y).backward()
    for part in ("glance1", "where", "glance2"):  # the renormalised weights carry the gradient to glance 1
        assert next(getattr(m, part).parameters()).grad.abs().sum() > 0, part
    m.generator = torch.Generator().manual_seed(0)
    assert torch.equal(m(x).selected_index, index)  # the caller's generator makes exploration reproducible


def test_topk_ink_exploration_finds_the_inked_patches():
    """Only 2 disjoint patches carry ink; glance 1 (untrained) looks elsewhere: exploration by ink adds them."""
    m = topk_model(top_k=1, explore=2, explore_by="ink", patch_stride=8).train()  # a 3 x 3 grid, disjoint
    x = torch.zeros(6, 1, 24, 24, dtype=torch.uint8)
    x[:, :, 0:8, 16:24] = 200  # patch 2
    x[:, :, 16:24, 0:8] = 90  # patch 6
    torch.testing.assert_close(m.ink_scores(x)[0, [2, 6, 0]], torch.tensor([200 / 255, 90 / 255, 0.0]))
    m.generator = torch.Generator().manual_seed(0)
    assert all({2, 6} <= set(row) for row in m(x).selected_index.tolist())  # glance 1's pick + both inked


def test_topk_choice_leaves_the_soft_choices_as_they_were():
    m = tiny(combine="logits").train()
    x = torch.rand(3, 1, 24, 24)
    out = m(x)
    assert out.selected_logits is None and out.kind == "logits"
    z = m.classify_patches(m.normalize_patches(m.patches(x)))  # (B, P, K)
    torch.testing.assert_close(out.answer, combine(m.patch_weights(x), z, "logits"))
