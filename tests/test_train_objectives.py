"""Objectives (train/objectives.py): the loss of each model.choice, chosen by the config and read from the typed
output of the model's forward (models/output.py), bit for bit what it was when the objective was chosen by the
`last_*` attributes the forward left on the module."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from multiglance.config import ModelConfig, RunConfig, TrainConfig
from multiglance.models import build_model
from multiglance.train import loss_fn

SMALL = dict(in_channels=1, num_classes=5, image_size=24, channels=(4, 4), pool_stride=2, patch_size=12,
             patch_stride=6, thumb_size=8)  # a 3 x 3 grid of patches

# (model options, train options): every choice, each combination of the soft choice, every extra loss term
CASES = {
    "soft-logits": (dict(combine="logits"), dict(entropy_weight=0.1, label_smoothing=0.1)),
    "soft-probs": (dict(combine="probs"), {}),
    "soft-mixture": (dict(combine="mixture", fuse=True), {}),
    "gumbel-logits": (dict(choice="gumbel", combine="logits", tau=0.5), {}),
    "gumbel-mixture": (dict(choice="gumbel", combine="mixture"), dict(entropy_weight=0.05)),
    "reinforce": (dict(choice="reinforce", fuse=True), {}),
    "oracle": (dict(choice="oracle"), dict(oracle_best=0.3, label_smoothing=0.1)),
    "topk": (dict(choice="topk", combine="mixture", top_k=2, explore=1, scorer="conv", glance1_aux=True),
             dict(rank_weight=0.5, uniform_weight=0.3, glance1_weight=0.2)),
    "topk-probs-ink": (dict(choice="topk", combine="probs", top_k=1, explore=2, explore_by="ink", selection="nms"),
                       dict(uniform_weight=1.0)),
    "one": (dict(kind="one"), dict(label_smoothing=0.1)),
}

# Recorded before the objective read the typed output, with the code of commit 579578c (the forward left
# `last_*` attributes on the module, `loss_fn` read them with getattr): `record()` below, run as
# `.venv/bin/python tests/test_train_objectives.py` on the dev machine (x86-64, torch 2.13.0+cpu, one thread).
RECORDED = {
    'soft-logits': [2.0896897315979004, 3.6095638275146484, 1.81891930103302],
    'soft-probs': [1.6574287414550781, 1.6593916416168213, 1.6034271717071533],
    'soft-mixture': [1.6406465768814087, 4.236766815185547, 1.5027689933776855],
    'gumbel-logits': [1.8654062747955322, 3.7452666759490967, 1.6129904985427856],
    'gumbel-mixture': [1.9747962951660156, 3.8546555042266846, 1.72238290309906],
    'reinforce': [1.667162537574768, 4.382918834686279, 1.504178762435913],
    'oracle': [4.010120391845703, 5.396821022033691, 3.922703504562378],
    'topk': [3.62288498878479, 4.704084396362305, 3.0148160457611084],
    'topk-probs-ink': [3.3128888607025146, 3.44039249420166, 3.2156965732574463],
    'one': [1.681640625, 5.18413782119751, 1.4551548957824707],
}


def record(name: str, steps: int = 3) -> list[float]:
    """The training loss of `steps` SGD steps of CASES[name] from torch seed 0, on one thread: `out = model(x)`,
    `loss_fn(model, out, y, cfg)` as the training loop calls them."""
    model_kw, train_kw = CASES[name]
    cfg = RunConfig(model=ModelConfig(**SMALL, **model_kw), train=TrainConfig(**train_kw))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = build_model(cfg.model).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
        data = torch.Generator().manual_seed(1)
        losses = []
        for _ in range(steps):
            x = torch.randint(0, 256, (8, 1, 24, 24), generator=data, dtype=torch.uint8)
            x = x if cfg.model.kind == "two" else x.float().div(255)
            y = torch.randint(0, 5, (8,), generator=data)
            loss = loss_fn(model, model(x), y, cfg)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("name", sorted(CASES))
def test_losses_are_bit_identical_to_the_recorded_ones(name):
    assert record(name) == RECORDED[name]


if __name__ == "__main__":
    print("RECORDED = {")
    for case in CASES:
        print(f"    {case!r}: {record(case)!r},")
    print("}")
