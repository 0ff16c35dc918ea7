"""models/combine.py: the combination rules, above all "presence" (multiple-instance, with a background class),
its config keys (model.combine=presence, model.background) and what the topk objective does with it."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from multiglance.config import ModelConfig, RunConfig, derive, set_value, validate
from multiglance.errors import ConfigError
from multiglance.models import build_model, combine
from multiglance.models.combine import log1mexp
from multiglance.train.objectives import rank_loss

BG = 2  # the background class of these tests


def test_presence_is_the_stated_formula_and_a_distribution():
    torch.manual_seed(0)
    w, z = torch.rand(4, 3).softmax(-1), 3 * torch.randn(4, 3, 5)  # (B, n), (B, n, K)
    q = combine(w, z, "presence", BG).exp()  # (B, K)
    p = z.softmax(-1)
    q_bg = p[..., BG].prod(1)  # every patch says "nothing here"
    share = (w[..., None] * p).sum(1) / (w * (1 - p[..., BG])).sum(1, keepdim=True)  # (B, K)
    assert torch.allclose(q[:, BG], q_bg, atol=1e-6)
    objects = [c for c in range(5) if c != BG]
    assert torch.allclose(q[:, objects], ((1 - q_bg)[:, None] * share)[:, objects], atol=1e-6)
    assert torch.allclose(q.sum(-1), torch.ones(4), atol=1e-5)


def test_one_sure_patch_outvotes_empty_ones_where_a_mixture_does_not():
    """A validation photograph of GTSDB: two patches say "none", one says "mandatory" (class 1) at 0.99."""
    p = torch.tensor([[[0.01, 0.01, 0.96, 0.01, 0.01], [0.0025, 0.99, 0.0025, 0.0025, 0.0025],
                       [0.01, 0.02, 0.95, 0.01, 0.01]]])  # (1, 3, 5)
    w = torch.tensor([[0.46, 0.32, 0.22]])
    z = p.log()
    assert combine(w, z, "mixture").argmax(-1).item() == BG
    assert combine(w, z, "presence", BG).argmax(-1).item() == 1


def test_an_image_of_the_background_class_trains_every_patch_to_say_so():
    torch.manual_seed(1)
    z = torch.randn(2, 4, 5, requires_grad=True)
    loss = F.cross_entropy(combine(torch.rand(2, 4).softmax(-1), z, "presence", BG), torch.tensor([BG, BG]),
                           reduction="sum")
    assert torch.allclose(loss, -z.log_softmax(-1)[..., BG].sum(), atol=1e-5)
    loss.backward()
    assert (z.grad[..., BG] < 0).all()  # every patch's background logit goes up


def test_presence_stays_finite_where_every_patch_is_sure():
    z = torch.full((2, 3, 5), -60.0)
    z[0, :, BG] = 60.0  # all background
    z[1, :, 0] = 60.0  # all class 0
    z.requires_grad_(True)
    out = combine(torch.full((2, 3), 1 / 3), z, "presence", BG)
    F.cross_entropy(out, torch.tensor([0, BG])).backward()  # both the wrong way round
    assert torch.isfinite(out).all() and torch.isfinite(z.grad).all()
    assert torch.isfinite(log1mexp(torch.tensor([0.0, -1e-9, -50.0]))).all()


def test_presence_without_a_background_is_refused():
    with pytest.raises(ConfigError, match="background"):
        combine(torch.ones(1, 2) / 2, torch.zeros(1, 2, 3), "presence")
    with pytest.raises(ConfigError, match="model.background"):
        build_model(ModelConfig(combine="presence", num_classes=3, image_size=24, patch_size=8, patch_stride=8,
                                thumb_size=12, channels=(4,)))


def test_config_keys_name_the_background_by_its_class():
    cfg = RunConfig(model=ModelConfig(image_size=None, num_classes=None, patch_size=None, patch_stride=None,
                                      thumb_size=None))
    set_value(cfg, "model.combine", "presence")
    set_value(cfg, "model.background", "none")  # the class is called "none": a name, never a null
    assert cfg.model.background == "none"
    validate(cfg)
    derive(cfg, (3, 64, 96), ["danger", "none", "other"])
    assert cfg.model.background_index == 1
    model = build_model(cfg.model)
    assert model.background == 1
    with pytest.raises(ConfigError, match="not a class of the data"):
        derive(RunConfig(model=ModelConfig(combine="presence", background="nothing")), (3, 32, 32), ["a", "b"])


@pytest.mark.parametrize("model", [dict(combine="mixture", background="none"),
                                   dict(kind="one", combine="presence", background="none"),
                                   dict(combine="presence")])
def test_presence_and_background_go_together(model):
    with pytest.raises(ConfigError, match="presence"):
        validate(RunConfig(model=ModelConfig(**model)))


def test_rank_loss_skips_images_of_the_background_class():
    torch.manual_seed(2)
    z, scores = torch.randn(3, 4, 5), torch.randn(3, 4)
    y = torch.tensor([0, BG, 4])
    keep = [0, 2]
    assert torch.allclose(rank_loss(z, scores, y, BG), rank_loss(z[keep], scores[keep], y[keep]))
    all_bg = rank_loss(z, scores.requires_grad_(True), torch.full((3,), BG), BG)
    assert all_bg.item() == 0.0
