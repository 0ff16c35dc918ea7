"""Evaluation of a trained run: accuracy (hard and soft), per-class accuracy, parameters, test-time FLOPs per
image (PyTorch's FLOP counter), CPU latency at batch 1 and throughput at batch 256.

    multiglance eval runs/digits-two --json
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .config import RunConfig
from .data import Split, load_split
from .runs import load_run
from .train import evaluate


def count_flops(model: nn.Module, x: torch.Tensor, **kwargs) -> int:
    """FLOPs (multiply and add counted separately, as PyTorch's counter does) of one eval forward of x."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, **kwargs)
    return counter.get_total_flops()


def flops_per_image(model: nn.Module, image_shape: tuple[int, ...], **kwargs) -> int:
    return count_flops(model, torch.rand(1, *image_shape), **kwargs)


@torch.no_grad()
def time_forward(model: nn.Module, x: torch.Tensor, *, repeats: int = 20, warmup: int = 3, **kwargs) -> float:
    """Median seconds of one eval forward of x, after warm-up."""
    model.eval()
    for _ in range(warmup):
        model(x, **kwargs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x, **kwargs)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def speed(model: nn.Module, image_shape: tuple[int, ...], *, repeats: int = 20, **kwargs) -> dict:
    """CPU latency per image at batch 1 (ms) and images/s at batch 256, channels_last inputs."""
    model = model.to(memory_format=torch.channels_last)
    x1 = torch.rand(1, *image_shape).contiguous(memory_format=torch.channels_last)
    x256 = torch.rand(256, *image_shape).contiguous(memory_format=torch.channels_last)
    t1 = time_forward(model, x1, repeats=repeats * 5, **kwargs)
    t256 = time_forward(model, x256, repeats=max(3, repeats // 2), **kwargs)
    return {"latency_ms_batch1": t1 * 1e3, "images_per_s_batch256": 256 / t256}


def per_class_accuracy(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float | None]:
    hits = torch.bincount(labels[pred == labels], minlength=num_classes).float()
    counts = torch.bincount(labels, minlength=num_classes).float()
    return [None if c == 0 else round((h / c).item(), 4) for h, c in zip(hits, counts)]


def evaluate_model(model: nn.Module, cfg: RunConfig, test: Split, *, timing: bool = True,
                   repeats: int = 20) -> dict:
    """Everything `multiglance eval` reports, for a model and its config, as one JSON-ready dict."""
    kw = dict(batch_size=cfg.train.eval_batch_size, channels_last=True)
    hard = evaluate(model, test, mode="hard", **kw)
    soft = evaluate(model, test, mode="soft", **kw)["accuracy"] if model.kind == "two" else None
    shape = tuple(test.images.shape[1:])
    result = {
        "dataset": cfg.data.name,
        "preset": cfg.preset,
        "model": model.kind,
        "accuracy_hard": hard["accuracy"],
        "accuracy_soft": soft,
        "test_images": len(test),
        "per_class_accuracy": dict(zip(test.classes, per_class_accuracy(hard["predictions"], test.labels,
                                                                         len(test.classes)))),
        "params": sum(p.numel() for p in model.parameters()),
        "test_flops_per_image": flops_per_image(model, shape),
        "top_k": getattr(model, "top_k", None),
    }
    if model.kind == "two":
        result["soft_flops_per_image"] = flops_per_image(model, shape, mode="soft")
    if timing:
        result |= speed(model, shape, repeats=repeats)
    return result


def evaluate_run(run_dir: str | Path, *, data_root: str | None = None, timing: bool = True) -> dict:
    model, cfg = load_run(run_dir)
    if data_root is not None:
        cfg.data.root = data_root
    test = load_split(cfg.data.name, cfg.data.root, "test")
    from .train import check_fit, limit

    test = limit(test, cfg.data.test_limit)
    check_fit(cfg, test)
    return {"run": str(run_dir), **evaluate_model(model, cfg, test, timing=timing)}
