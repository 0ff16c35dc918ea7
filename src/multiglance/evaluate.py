"""Evaluation of a trained run by its own inference path: accuracy (hard top-k, and soft for small grids),
per-class accuracy, parameters, test-time FLOPs per image (two counts: flops.py), CPU latency at batch 1,
throughput, and, on request, the peak memory of one forward.

    multiglance eval runs/digits-two --json
    multiglance eval runs/photos --split val --set model.top_k=5 --set model.topk_combine=equal
    multiglance eval runs/photos --memory          # + peak resident memory of a batch-1 forward (fresh process)

Inference-time options (`--set model.top_k / topk_combine / inference / selection / nms_radius`) change how the
saved weights are used, never the weights; the test split is the default, "val" is the held-out validation split.

One entry point for a run: `evaluate_run(RUN, split=..., overrides=...)` loads it and its data and calls
`evaluate_model` (everything above, for a model, its config and a split), which reads accuracy and loss with
`train.evaluate` (one pass, the model's own inference path, what training validates with). The bench drivers
read runs through `evaluate_run` only (bench/common.py).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

from .config import RunConfig, apply_inference_overrides, to_dict
from .errors import UserError
from .flops import count_flops, flop_counts_per_image, flop_keys, flops_per_image  # noqa: F401  (count_flops,
# flops_per_image: re-exported, the bench drivers count through evaluate)
from .runs import load_run
from .train import SOFT_MAX_PATCHES, check_fit, evaluate, load_data

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


def throughput_batch(image_shape: tuple[int, ...], budget_bytes: int = 256 << 20) -> int:
    """The throughput batch: 256, or fewer for large images (at most `budget_bytes` of float input)."""
    per_image = 4 * int(torch.tensor(image_shape).prod())
    return max(1, min(256, budget_bytes // per_image))


def speed(model: nn.Module, image_shape: tuple[int, ...], *, repeats: int = 20, **kwargs) -> dict:
    """CPU latency per image at batch 1 (ms) and images/s at the throughput batch, channels_last inputs."""
    model = model.to(memory_format=torch.channels_last)
    b = throughput_batch(image_shape)
    x1 = torch.rand(1, *image_shape).contiguous(memory_format=torch.channels_last)
    xb = torch.rand(b, *image_shape).contiguous(memory_format=torch.channels_last)
    t1 = time_forward(model, x1, repeats=repeats * 5, **kwargs)
    tb = time_forward(model, xb, repeats=max(3, repeats // 2), **kwargs)
    return {"latency_ms_batch1": t1 * 1e3, "throughput_batch": b,
            "images_per_s_batch256": b / tb if b == 256 else None, "images_per_s": b / tb}


def per_class_accuracy(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float | None]:
    hits = torch.bincount(labels[pred == labels], minlength=num_classes).float()
    counts = torch.bincount(labels, minlength=num_classes).float()
    return [None if c == 0 else round((h / c).item(), 4) for h, c in zip(hits, counts)]


_CHILD = r"""
import json, sys, torch
torch.set_num_threads(1)
from multiglance.config import from_dict
from multiglance.models import as_output, build_model
def status(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key)) / 1024
spec = json.loads(sys.argv[1])
torch.manual_seed(0)
model = build_model(from_dict(spec["config"]).model, initial_weights=False)
c, h, w = spec["shape"]
x = torch.randint(0, 256, (spec["batch"], c, h, w), dtype=torch.uint8)
if spec["train"]:
    model.train()
    y = torch.zeros(spec["batch"], dtype=torch.long)
    def call():
        out = model(x if getattr(model, "accepts_uint8", False) else x.float().div(255))
        torch.nn.functional.cross_entropy(as_output(out).answer, y).backward()
else:
    model.eval()
    def call():
        with torch.no_grad():
            model(x if getattr(model, "accepts_uint8", False) else x.float().div(255))
call()  # one call first: one-time library set-up is not the model's memory
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current resident size
before = status("VmRSS:")
call()
print(json.dumps({"peak_mb": status("VmHWM:") - before + x.numel() / 2 ** 20}))
"""


def peak_memory_mb(cfg: RunConfig, shape: tuple[int, int, int], *, batch: int = 1, train: bool = False,
                   timeout: float = 600) -> float:
    """Peak resident memory (MB) that one forward (or training step, with `train`) of `cfg`'s model adds,
    its uint8 input included, measured in a fresh single-thread process: the kernel's peak RSS (VmHWM, reset
    just before the call) minus the RSS before it, after one warm-up call. Every allocation over 16 kB is its
    own mmap there, so freed memory is never reused unseen."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_="16384", MALLOC_TRIM_THRESHOLD_="0")
    spec = {"config": to_dict(cfg), "shape": list(shape), "batch": batch, "train": train}
    out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(spec)], capture_output=True, text=True,
                         timeout=timeout, env=env)
    if out.returncode != 0:
        raise UserError(f"memory measurement failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


def evaluate_model(model: nn.Module, cfg: RunConfig, test, *, timing: bool = True, repeats: int = 20,
                   memory: bool = False) -> dict:
    """Everything `multiglance eval` reports, for a model, its config and a split, as one JSON-ready dict."""
    kw = dict(batch_size=cfg.train.eval_batch_size, channels_last=True, workers=cfg.train.workers)
    hard = evaluate(model, test, mode="hard", **kw)
    small_grid = model.kind == "two" and model.num_patches <= SOFT_MAX_PATCHES
    soft = evaluate(model, test, mode="soft", **kw)["accuracy"] if small_grid else None
    shape = tuple(test.shape)
    result = {
        "dataset": cfg.data.name,
        "preset": cfg.preset,
        "model": model.kind,
        "accuracy_hard": hard["accuracy"],
        "accuracy_soft": soft,
        "test_images": hard["images"],
        "skipped_images": hard["skipped"],
        "per_class_accuracy": dict(zip(test.classes, per_class_accuracy(hard["predictions"], hard["labels"],
                                                                         len(test.classes)))),
        "params": sum(p.numel() for p in model.parameters()),
        **flop_keys("test", flop_counts_per_image(model, shape)),
        "top_k": getattr(model, "top_k", None),
        "topk_combine": getattr(model, "topk_combine", None),
    }
    if small_grid:
        result |= flop_keys("soft", flop_counts_per_image(model, shape, mode="soft"))
    if timing:
        result |= speed(model, shape, repeats=repeats)
    if memory:
        result["peak_memory_mb_batch1"] = round(peak_memory_mb(cfg, shape), 1)
    return result


def evaluate_run(run_dir: str | Path | None = None, *, weights: str | None = None, data_root: str | None = None,
                 timing: bool = True, split: str = "test", overrides: list[str] = (), memory: bool = False,
                 repeats: int = 20) -> dict:
    """Evaluate a saved run (or shipped `weights`, see weights.py) on `split` ("test" or "val"), with
    inference-time `overrides` (INFERENCE_KEYS): what `multiglance eval` prints, and the one way every bench
    driver reads a run's accuracy (bench/common.py `val_and_test`, `published_test`). `repeats`: timing runs."""
    if split not in ("test", "val"):
        raise UserError(f"--split {split!r}: use test or val")
    if (run_dir is None) == (weights is None):
        raise UserError("give a run folder or --weights NAME (one of them)")
    published = None
    if weights is not None:
        from .weights import load_weights

        model, cfg, record = load_weights(weights)
        published = record["published"]
    else:
        model, cfg = load_run(run_dir)
    if overrides:
        apply_inference_overrides(cfg, list(overrides))
        model = _rebuild(model, cfg)
    if data_root is not None:
        cfg.data.root = data_root
    (data,) = load_data(cfg, (split,))
    check_fit(cfg, data)
    source = {"run": str(run_dir)} if weights is None else {"weights": weights, "published": published}
    return {**source, "split": split, "overrides": list(overrides),
            **evaluate_model(model, cfg, data, timing=timing, repeats=repeats, memory=memory)}


def _rebuild(model: nn.Module, cfg: RunConfig) -> nn.Module:
    """The same weights under other inference options."""
    from .models import build_model

    new = build_model(cfg.model, initial_weights=False)
    new.load_state_dict(model.state_dict())
    return new.eval()
