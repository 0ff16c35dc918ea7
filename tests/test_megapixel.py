"""Tests for models/megapixel.py and megapixel.py: stage shapes, NMS top-k, the selected-patch training step
(glance 2 only on the chosen patches, the gradient reaching glance 1), and bounded inference memory."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from multiglance import megapixel as mp
from multiglance.data.megapixel import make_megapixel
from multiglance.models.megapixel import MegaTwoGlance, select_topk


def tiny_cfg(**kw) -> mp.MegaConfig:
    return mp.MegaConfig(**({"easy": True, "thumb_size": 40, "channels": (4, 8), "glance1_channels": (4, 8),
                             "top_k": 3, "explore": 2} | kw))


def tiny_split(n: int = 8, size: int = 200):
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, (100, 28, 28), dtype=np.uint8)
    return make_megapixel("train", images=images, labels=np.arange(100) % 10, n=n, size=size, n_noise=3)


def test_stage_shapes() -> None:
    torch.manual_seed(0)
    model = mp.build_model(tiny_cfg(), 200)
    assert model.grid == 7 and model.num_patches == 49  # (200 - 50) / 25 + 1
    canvas = tiny_split().render(torch.arange(2))
    scores = model.canvas_scores(canvas)
    assert scores.shape == (2, 49)
    idx = select_topk(scores, 3, model.grid, 1)
    assert idx.shape == (2, 3)
    patches = model.canvas_patches(canvas, idx)
    assert patches.shape == (2, 3, 1, 50, 50)
    out, index = model.infer_canvas(canvas, 3)
    assert out.shape == (2, 10) and torch.equal(index, idx)
    # the uint8 path equals TwoGlance's float path (normalising commutes with resizing)
    ref, ref_idx = model.infer(canvas.float() / 255)
    assert torch.equal(ref_idx, idx) and torch.allclose(ref, out, atol=1e-4)


def test_nms_topk_never_overlaps_and_is_prefix_consistent() -> None:
    torch.manual_seed(0)
    scores = torch.randn(4, 100)
    idx = select_topk(scores, 6, 10, 1)
    r, c = idx // 10, idx % 10
    near = ((r[:, :, None] - r[:, None]).abs() <= 1) & ((c[:, :, None] - c[:, None]).abs() <= 1)
    assert (near.sum(-1) == 1).all()  # each chosen patch is near itself only
    assert torch.equal(select_topk(scores, 3, 10, 1), idx[:, :3])
    assert torch.equal(idx[:, 0], scores.argmax(-1))
    assert torch.equal(select_topk(scores, 4, 10, 0), scores.topk(4).indices)


@pytest.mark.parametrize("choice", ["topk", "gumbel"])
def test_train_step_runs_glance2_on_selected_patches_and_reaches_glance1(choice: str) -> None:
    torch.manual_seed(0)
    cfg = tiny_cfg(choice=choice)
    model = mp.build_model(cfg, 200).train()
    split = tiny_split()
    seen = []
    model.glance2.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    loss, out = mp.train_step(model, split.render(torch.arange(4)), split.labels[:4], cfg,
                              torch.Generator().manual_seed(0))
    loss.backward()
    assert seen == [4 * (cfg.top_k + cfg.explore)]  # glance 2 saw the chosen patches only, not all 49
    assert out.shape == (4, 10) and torch.isfinite(loss)
    g1 = model.glance1.body[0].weight.grad
    assert g1 is not None and g1.abs().sum() > 0, "the gradient reaches glance 1 through the renormalised weights"
    assert model.where.body[0].weight.grad.abs().sum() > 0
    assert model.glance2.body[0].weight.grad.abs().sum() > 0


def test_soft_choice_uses_every_patch() -> None:
    torch.manual_seed(0)
    cfg = tiny_cfg(choice="soft")
    model = mp.build_model(cfg, 200).train()
    seen = []
    model.glance2.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    split = tiny_split()
    mp.train_step(model, split.render(torch.arange(2)), split.labels[:2], cfg, torch.Generator())
    assert seen == [2 * model.num_patches]


def test_evaluate_accuracy_by_k_and_digit_hits() -> None:
    torch.manual_seed(0)
    model = mp.build_model(tiny_cfg(), 200)
    split = tiny_split(6)
    ev = mp.evaluate(model, split, ks=(1, 3))
    assert set(ev["accuracy_by_k"]) == {"1", "3"} and 0 <= ev["digit_recall"] <= 1
    # a patch whose box holds a digit's centre is a hit; one far away is not
    boxes = split.boxes(torch.arange(1))  # (1, 5, 4)
    cx, cy = (boxes[0, 0, 0] + 14).item(), (boxes[0, 0, 1] + 14).item()
    pb = model.patch_boxes()
    inside = ((pb[:, 0] <= cx) & (cx < pb[:, 2]) & (pb[:, 1] <= cy) & (cy < pb[:, 3])).nonzero()[0]
    assert mp.patch_hits(model, inside[None], boxes)[0, 0]


def test_two_glance_flops_far_below_full_resolution() -> None:
    torch.manual_seed(0)
    cfg = mp.MegaConfig()
    canvas = torch.zeros(1, 1, 1500, 1500, dtype=torch.uint8)
    ours = mp.count_flops(mp.two_glance_forward(mp.build_model(cfg, 1500).eval(), 5), canvas)
    with torch.device("meta"):  # count without computing: 45 GFLOPs would take seconds
        full = mp.full_resolution_cnn(image_size=1500).eval()
        full_flops = mp.count_flops(lambda c: full(c), torch.empty(1, 1, 1500, 1500))
    assert ours > 0 and full_flops > 20 * ours


def test_inference_memory_stays_bounded_for_one_image() -> None:
    spec = {"model": "two", "size": 1500, "k": 5, "cfg": {}}
    peak = mp.peak_memory_mb(spec)
    canvas_float_mb = 1500 * 1500 * 4 / 2 ** 20  # 8.6 MB
    first_full_layer_mb = 32 * canvas_float_mb  # the full-resolution CNN's first activation alone
    assert 0 < peak < 6 * canvas_float_mb and peak < first_full_layer_mb / 5
    more = mp.peak_memory_mb(dict(spec, k=20))
    assert more < peak + 8  # four times the patches adds at most a few MB


def test_init_from_loads_a_megapixel_run_and_refuses_others(tmp_path) -> None:
    """A curriculum start: the weights of one megapixel run (easy variant) start another, even at another canvas
    size (both glances are convolutional); a run of another kind, or of other shapes, is one clear error."""
    from multiglance import runs
    from multiglance.errors import UserError

    torch.manual_seed(0)
    src = mp.build_model(tiny_cfg(), 200)
    (tmp_path / "easy").mkdir()
    (tmp_path / "other").mkdir()
    runs.save_checkpoint(tmp_path / "easy", {"model": src.state_dict(), "preset": "megapixel-mnist-easy"})
    dst = mp.build_model(tiny_cfg(easy=False), 300)  # another canvas size: more patches, same weights
    mp.start_from(dst, tmp_path / "easy")
    for name, value in src.state_dict().items():
        assert torch.equal(dst.state_dict()[name], value), name
    runs.save_checkpoint(tmp_path / "other", {"model": src.state_dict(), "preset": "digits-two"})
    with pytest.raises(UserError, match="not a megapixel run"):
        mp.start_from(dst, tmp_path / "other")
    wide = mp.build_model(tiny_cfg(channels=(8, 8)), 200)
    with pytest.raises(UserError, match="do not fit"):
        mp.start_from(wide, tmp_path / "easy")
