"""Evaluation: FLOPs from PyTorch's counter, per-class accuracy, and the eval record of a run."""
from __future__ import annotations

import torch

from multiglance.evaluate import evaluate_run, flops_per_image, per_class_accuracy
from multiglance.models import create_model


def test_two_glance_hard_costs_a_fraction_of_one_glance():
    one, two = create_model("paper-cifar10-one-s2"), create_model("paper-cifar10-two-s2")
    f_one, f_two = flops_per_image(one, (3, 32, 32)), flops_per_image(two, (3, 32, 32))
    f_soft = flops_per_image(two, (3, 32, 32), mode="soft")
    assert f_two * 5 < f_one and f_two < f_soft


def test_per_class_accuracy():
    pred, labels = torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2])
    assert per_class_accuracy(pred, labels, 4) == [1.0, 1.0, 0.5, None]


def test_evaluate_run_matches_training_validation(tiny_run):
    """`eval --split val` recomputes the last epoch's validation numbers exactly; the test split is another one."""
    from multiglance import runs

    val = evaluate_run(tiny_run, timing=False, split="val")
    last = [r for r in runs.read_metrics(tiny_run) if r["kind"] == "epoch"][-1]
    assert val["accuracy_hard"] == last["val_acc_hard"] and val["accuracy_soft"] == last["val_acc_soft"]
    assert val["test_images"] == last["val_images"] == 128
    test = evaluate_run(tiny_run, timing=False)
    assert test["split"] == "test" and test["test_images"] == 128
    assert sum(p.numel() for p in create_model("digits-two").parameters()) == test["params"]
