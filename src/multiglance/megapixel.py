"""Megapixel MNIST: training, evaluation and costs of the two-glance model where images are large.

    make megapixel                                   # the published runs (below), about 1 h on one core
    multiglance bench megapixel --easy --epochs 10 --set channels=16,32,64   # 500x500: 99.2% (8 min)
    multiglance bench megapixel --epochs 8 --set init_from=RUN --set explore=8  # 1500x1500, starting from a
                                                     # 500x500 run RUN (a curriculum): 98.5% (25 min)
    multiglance bench megapixel --quick           # the whole pipeline on 64 images, ~1 min
    multiglance bench megapixel --costs-only      # FLOPs, memory, CPU time of both models; no training

Training (IPS-like, Bergner et al. 2023): glance 1 scores every patch from the thumbnail (cheap, with grad);
the k best non-overlapping patches, plus `explore` inked patches (sampled by ink, no labels used), are cut from the uint8 canvas; glance 2 runs with grad on those only; the
per-patch evidence is combined with glance 1's weights renormalised over the selected patches, so the loss
reaches glance 1 through the weights; a second term, the same evidence with equal weights, keeps glance 2
learning while glance 1 still looks at empty patches (without it, glance 1 learned to put all weight on empty
patches, whose uniform answer is "safe", and the loss sat at ln 10). `choice="gumbel"` samples the k patches (Gumbel top-k) instead of
taking the best; `choice="soft"` runs glance 2 on every patch (the report's scheme; easy variant only).
Canvases are rendered per batch from the sparse split (`data/megapixel.py`); nothing dense is stored.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from . import runs
from .data.megapixel import MegapixelSplit
from .errors import UserError
from .models.glances import combine, resize
from .models.megapixel import MegaTwoGlance, full_resolution_cnn, low_resolution_cnn, select_topk


PIXEL_STD = 0.3081  # MNIST's pixel std: the scale both glances' inputs are divided by


@dataclass
class MegaConfig:
    easy: bool = False  # megapixel-mnist-easy (500x500, no noise) instead of megapixel-mnist (1500x1500)
    thumb_size: int = 240  # glance 1's view: 0.16 of 1500 (80 for the easy variant)
    patch_size: int = 50  # glance 2's patch side (IPS's 50x50)
    patch_stride: int = 25  # overlapping patches: every 28x28 digit lies (almost) whole in one of them
    channels: tuple[int, ...] = (8, 16, 32)  # glance 2's filters (small: CPU budget)
    glance1_channels: tuple[int, ...] = (16, 32)  # glance 1's filters (pool stride 2 each)
    combine: str = "mixture"  # per-patch evidence -> one answer: log sum_i w_i softmax(z_i)
    top_k: int = 5  # patches glance 2 sees, at training and (by default) at test time
    explore: int = 4  # extra training patches sampled by thumbnail ink (0: none)
    choice: str = "topk"  # "topk" | "gumbel" | "soft" (see the module docstring)
    uniform_weight: float = 1.0  # + this * the loss of the equal-weight combination (0: off; see train_step)
    epochs: int = 6  # passes over the 5000 training canvases
    batch_size: int = 16  # canvases per step
    lr: float = 1e-3  # AdamW peak learning rate, cosine to 0, no warm-up
    weight_decay: float = 1e-4  # AdamW decoupled weight decay
    seed: int = 0  # weights, shuffling, exploration
    train_limit: int | None = None  # use only N training canvases (quick runs)
    test_limit: int | None = None  # evaluate on N test canvases
    eval_ks: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10)  # accuracy against k
    data_root: str | None = None  # the MNIST folder; None: the default place
    init_from: str | None = None  # a megapixel run folder whose weights start this run (a curriculum: the easy
    # variant's run; both glances are convolutional and see digits at the same scale, so every weight fits)

    @property
    def dataset(self) -> str:
        return "megapixel-mnist-easy" if self.easy else "megapixel-mnist"


def easy_config(**overrides) -> MegaConfig:
    return MegaConfig(**({"easy": True, "thumb_size": 80} | overrides))


def build_model(cfg: MegaConfig, size: int) -> MegaTwoGlance:
    return MegaTwoGlance(image_size=size, thumb_size=cfg.thumb_size, patch_size=cfg.patch_size,
                         patch_stride=cfg.patch_stride, channels=tuple(cfg.channels),
                         glance1_channels=tuple(cfg.glance1_channels), combine=cfg.combine, top_k=cfg.top_k)


def load_data(cfg: MegaConfig) -> tuple[MegapixelSplit, MegapixelSplit]:
    from .data import load_split

    train, test = (load_split(cfg.dataset, cfg.data_root, s) for s in ("train", "test"))
    pick = lambda s, n: s if not n or n >= len(s) else s.subset(torch.arange(n))  # noqa: E731 (random order)
    return pick(train, cfg.train_limit), pick(test, cfg.test_limit)


def batches(split: MegapixelSplit, batch_size: int, *, order: torch.Tensor | None = None):
    """Yield (uint8 canvases (b, 1, S, S), labels (b,), index (b,)) rendered on the fly."""
    order = torch.arange(len(split)) if order is None else order
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        yield split.render(index), split.labels[index], index


# ---- training ---------------------------------------------------------------------------------------------
def ink_scores(model: MegaTwoGlance, canvas: torch.Tensor) -> torch.Tensor:
    """(B, 1, S, S) uint8 -> (B, P): each patch's mean ink, from a patch-sized average of the canvas (cheap)."""
    s = model.patch_stride
    cells = F.avg_pool2d(canvas.float(), s)  # (B, 1, S/s, S/s)
    return F.avg_pool2d(cells, model.patch_size // s, stride=1).flatten(1)  # (B, P)


def choose(model: MegaTwoGlance, scores: torch.Tensor, canvas: torch.Tensor, cfg: MegaConfig,
           g: torch.Generator) -> torch.Tensor:
    """(B, P) scores -> (B, k + explore) patch indices for one training step (no gradient)."""
    s = scores.detach()
    if cfg.choice == "gumbel":  # Gumbel top-k: k patches sampled without replacement from softmax(s)
        s = s - torch.empty_like(s).exponential_(generator=g).log()
    index = select_topk(s, cfg.top_k, model.grid, model.nms_radius)  # (B, k)
    if cfg.explore:
        # Gumbel top-k with NMS on log-ink: distinct inked places, each at its best-centred patch
        ink = (ink_scores(model, canvas) + 1e-3).log()  # (B, P)
        ink = ink - torch.empty_like(ink).exponential_(generator=g).log()
        ink = ink.scatter(1, index, float("-inf"))  # never the patches already chosen
        index = torch.cat([index, select_topk(ink, cfg.explore, model.grid, model.nms_radius)], dim=1)
    return index


def train_step(model: MegaTwoGlance, canvas: torch.Tensor, y: torch.Tensor, cfg: MegaConfig,
               g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and (B, K) output of one step: glance 1 with grad on the thumbnail, glance 2 with grad on the
    selected patches only; weights renormalised over them, so the gradient reaches glance 1."""
    scores = model.canvas_scores(canvas)  # (B, P), with grad
    if cfg.choice == "soft":
        index = torch.arange(model.num_patches).expand(canvas.shape[0], -1)  # (B, P)
    else:
        index = choose(model, scores, canvas, cfg, g)  # (B, n)
    z = model.classify_patches(model.canvas_patches(canvas, index))  # (B, n, K), with grad
    w = scores.gather(1, index).softmax(-1)  # (B, n)
    out = combine(w, z, model.combine)  # (B, K)
    loss = F.cross_entropy(out, y)
    if cfg.uniform_weight:  # the same evidence with equal weights: glance 2 keeps learning wherever glance 1 looks
        u = torch.full_like(w, 1.0 / w.shape[1])  # (B, n)
        loss = loss + cfg.uniform_weight * F.cross_entropy(combine(u, z, model.combine), y)
    return loss, out


def start_from(model: MegaTwoGlance, run_dir: str | os.PathLike) -> None:
    """Load the weights of megapixel run `run_dir` into `model` (both glances and heads; the optimiser starts
    afresh). Any other checkpoint, or one whose shapes differ, is refused with one line."""
    state = runs.load_checkpoint(run_dir)
    if not isinstance(state.get("model"), dict) or "megapixel" not in str(state.get("preset", "")):
        raise UserError(f"{run_dir} is not a megapixel run folder; init_from needs one written by "
                        "`multiglance bench megapixel`")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1].strip()
        raise UserError(f"the weights in {run_dir} do not fit this model ({first}); use a run with the same "
                        "channels and patch size") from None


def fit(cfg: MegaConfig, out_dir: str | os.PathLike, *, data=None, progress: bool = True) -> dict:
    """Train into run folder `out_dir` (checkpoint + metrics.jsonl); returns the last epoch's record."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train, test = data or load_data(cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, train.size)
    # fixed statistics: the canvases' own (mean ~0.003, std ~0.04, and less on the thumbnail) would blow up
    # every inked pixel to 25-60; MNIST's std keeps digits near 3 in patches and thumbnails alike
    model.normalize.set_stats(torch.zeros(1), torch.full((1,), PIXEL_STD))
    if cfg.init_from:
        start_from(model, cfg.init_from)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = max(1, len(train) // cfg.batch_size) * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0))))
    (out_dir / runs.METRICS).unlink(missing_ok=True)
    (out_dir / "megapixel.json").write_text(json.dumps(asdict(cfg), indent=1))
    g = torch.Generator().manual_seed(cfg.seed)
    record, step = {}, 0
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(train), generator=g)
        n = (len(train) // cfg.batch_size) * cfg.batch_size
        seen, correct, total, data_s, start = 0, 0, 0.0, 0.0, time.perf_counter()
        it = batches(train, cfg.batch_size, order=order[:n])
        while True:
            t0 = time.perf_counter()
            try:
                canvas, y, _ = next(it)
            except StopIteration:
                break
            data_s += time.perf_counter() - t0
            loss, out = train_step(model, canvas, y, cfg, g)
            if not torch.isfinite(loss):
                raise UserError(f"the loss became {loss.item()} at step {step}; lower lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            seen += y.shape[0]
            total += loss.item() * y.shape[0]
            correct += (out.argmax(-1) == y).sum().item()
            if progress and step % 25 == 0:
                print(f"  step {step}/{steps} loss {total / seen:.3f} acc {correct / seen:.3f} "
                      f"{time.perf_counter() - start:.0f}s", flush=True)
        seconds = time.perf_counter() - start
        ev = evaluate(model, test, ks=(cfg.top_k,))
        record = {"kind": "epoch", "epoch": epoch + 1, "step": step, "train_loss": total / max(seen, 1),
                  "train_acc": correct / max(seen, 1), "train_seconds": seconds, "data_seconds": data_s,
                  "val_acc_hard": ev["accuracy_by_k"][str(cfg.top_k)], "digit_recall": ev["digit_recall"]}
        runs.append_metrics(out_dir, record)
        runs.save_checkpoint(out_dir, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                       "scheduler": sched.state_dict(), "epoch": epoch, "step": step,
                                       "config": asdict(cfg), "preset": cfg.dataset})
        if progress:
            print(f"epoch {epoch + 1}/{cfg.epochs} loss {record['train_loss']:.3f} train {record['train_acc']:.3f} "
                  f"val@k={cfg.top_k} {record['val_acc_hard']:.4f} digit recall {record['digit_recall']:.3f} "
                  f"{seconds:.0f}s (data {data_s:.0f}s)", flush=True)
    return record


def load_model(run_dir: str | os.PathLike) -> tuple[MegaTwoGlance, MegaConfig]:
    state = runs.load_checkpoint(run_dir)
    cfg = MegaConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in state["config"].items()})
    model = build_model(cfg, 500 if cfg.easy else 1500)
    model.normalize.set_stats(torch.zeros(1), torch.full((1,), PIXEL_STD))
    model.load_state_dict(state["model"])
    return model.eval(), cfg


# ---- evaluation ---------------------------------------------------------------------------------------------
def patch_hits(model: MegaTwoGlance, index: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(B, k) patch indices, (B, 5, 4) digit boxes -> (B, 5) bool: the digit's centre lies in a chosen patch."""
    pb = model.patch_boxes()[index]  # (B, k, 4)
    cx = (boxes[..., 0] + boxes[..., 2]) / 2  # (B, 5)
    cy = (boxes[..., 1] + boxes[..., 3]) / 2
    inside = ((pb[:, None, :, 0] <= cx[..., None]) & (cx[..., None] < pb[:, None, :, 2]) &
              (pb[:, None, :, 1] <= cy[..., None]) & (cy[..., None] < pb[:, None, :, 3]))  # (B, 5, k)
    return inside.any(-1)


@torch.no_grad()
def evaluate(model: MegaTwoGlance, split: MegapixelSplit, *, ks=(1, 2, 3, 4, 5, 6, 8, 10),
             batch_size: int = 32) -> dict:
    """Hard top-k accuracy for every k in `ks` in one pass (greedy NMS top-k is prefix-consistent), and the
    fraction of digits whose centre lies in one of the top-`model.top_k` patches ("digit recall")."""
    model.eval()
    kmax = max(ks)
    correct = {k: 0 for k in ks}
    votes = {k: 0 for k in ks}  # the same patches, equal weights (a plain vote of glance 2's probabilities)
    hits = 0
    for canvas, y, index in batches(split, batch_size):
        scores = model.canvas_scores(canvas)  # (B, P)
        top = select_topk(scores, kmax, model.grid, model.nms_radius)  # (B, kmax)
        z = model.classify_patches(model.canvas_patches(canvas, top))  # (B, kmax, K)
        s = scores.gather(1, top)  # (B, kmax)
        for k in ks:
            out = combine(s[:, :k].softmax(-1), z[:, :k], model.combine)
            correct[k] += (out.argmax(-1) == y).sum().item()
            votes[k] += (z[:, :k].softmax(-1).sum(1).argmax(-1) == y).sum().item()
        hits += patch_hits(model, top[:, :model.top_k], split.boxes(index)).sum().item()
    n = max(len(split), 1)
    return {"accuracy_by_k": {str(k): correct[k] / n for k in ks},
            "accuracy_by_k_equal_weights": {str(k): votes[k] / n for k in ks}, "digit_recall": hits / (5 * n)}


# ---- costs: FLOPs, memory, CPU time -------------------------------------------------------------------------
def two_glance_forward(model: MegaTwoGlance, k: int):
    return lambda canvas: model.infer_canvas(canvas, k)


def one_glance_forward(model):
    return lambda canvas: model(canvas.float().div_(255))


def count_flops(fn, canvas: torch.Tensor) -> int:
    """FLOPs (PyTorch's counter: convs, matmuls; resizes and sampling are not counted) of fn(canvas)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(canvas)
    return counter.get_total_flops()


def saved_activation_mb(model, loss_fn, canvas: torch.Tensor) -> float:
    """MB of tensors autograd keeps for the backward of loss_fn(model, canvas) (the training step's
    activation memory, weights and input excluded), counted with saved-tensor hooks."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss_fn(model, canvas)
    return total[0] / 2 ** 20


def cpu_seconds(fn, canvas: torch.Tensor, repeats: int = 5) -> float:
    """Median wall seconds of fn(canvas) on the CPU (threads as set), after one warm-up."""
    with torch.no_grad():
        fn(canvas)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn(canvas)
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


_CHILD = r"""
import json, sys, torch
torch.set_num_threads(1)
from multiglance import megapixel as m
def status(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key)) / 1024
spec = json.loads(sys.argv[1])
fn, canvas = m._memory_case(spec)
if spec.get("warm", True):
    fn(canvas)  # one call first: one-time library set-up is not the model's memory
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current resident size
before = status("VmRSS:")
fn(canvas)
print(json.dumps({"peak_mb": status("VmHWM:") - before + canvas.numel() * canvas.element_size() / 2 ** 20}))
"""


def _memory_case(spec: dict):
    """(fn, canvas) for a memory measurement: spec = {model: two|full, size, k, batch, train, cfg}."""
    torch.manual_seed(0)
    size, batch = spec["size"], spec.get("batch", 1)
    canvas = torch.zeros(batch, 1, size, size, dtype=torch.uint8)
    canvas[:, :, ::37, ::41] = 255  # some ink, so nothing is special-cased
    if spec["model"] == "two":
        cfg = MegaConfig(**spec.get("cfg", {}))
        model = build_model(cfg, size)
        if spec.get("train"):
            y = torch.zeros(batch, dtype=torch.long)
            g = torch.Generator().manual_seed(0)
            return (lambda c: train_step(model.train(), c, y, cfg, g)[0].backward()), canvas
        return (lambda c: model.eval().infer_canvas(c, spec.get("k", cfg.top_k))), canvas
    model = full_resolution_cnn(image_size=size).eval()
    if spec.get("train"):
        y = torch.zeros(batch, dtype=torch.long)
        return (lambda c: F.cross_entropy(model.train()(c.float().div_(255)), y).backward()), canvas
    return (lambda c: torch.no_grad()(one_glance_forward(model))(c)), canvas


def peak_memory_mb(spec: dict, timeout: float = 600) -> float:
    """Peak resident memory (MB) that one call adds, input canvas included, measured in a fresh process: the
    kernel's peak RSS (VmHWM, reset just before the call) minus the RSS before it, model weights and canvas
    already loaded, after one warm-up call. Every allocation over 16 kB is its own mmap there, so freed memory is never reused unseen."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_="16384", MALLOC_TRIM_THRESHOLD_="0")
    out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(spec)], capture_output=True, text=True,
                         timeout=timeout, env=env)
    if out.returncode != 0:
        raise UserError(f"memory measurement failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


# ---- the low-resolution one-glance baseline ---------------------------------------------------------------------
def fit_low_resolution(cfg: MegaConfig, train: MegapixelSplit, test: MegapixelSplit, *, epochs: int,
                       progress: bool = True) -> dict:
    """Train the one-glance CNN on glance 1's view (thumbnails rendered once: (N, 1, t, t) float), with glance
    2's filters (not twice them: the CPU budget), AdamW as the two-glance run."""
    torch.manual_seed(cfg.seed)
    model = low_resolution_cnn(image_size=train.size, input_size=cfg.thumb_size, channels=tuple(cfg.channels))

    def thumbs(split):
        return torch.cat([resize(c.float().div_(255), cfg.thumb_size) for c, _, _ in batches(split, 64)])

    xtr, xte = thumbs(train), thumbs(test)  # (N, 1, t, t)
    model.normalize.set_stats(torch.zeros(1), torch.full((1,), PIXEL_STD))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(cfg.seed)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(xtr), generator=g)
        for s in range(0, len(order) - cfg.batch_size + 1, cfg.batch_size):
            i = order[s:s + cfg.batch_size]
            loss = F.cross_entropy(model(xtr[i]), train.labels[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = (torch.cat([model(xte[s:s + 256]).argmax(-1) for s in range(0, len(xte), 256)])
                   == test.labels).float().mean().item()
        if progress:
            print(f"low-res epoch {epoch + 1}/{epochs} loss {loss.item():.3f} test {acc:.4f}", flush=True)
    return {"accuracy": acc, "epochs": epochs, "train_seconds": time.perf_counter() - start, "model": model}


# ---- the command ------------------------------------------------------------------------------------------------
def register(subparsers) -> None:
    from .bench import bench_subparsers

    sub = bench_subparsers(subparsers)
    p = sub.add_parser("megapixel", help="megapixel MNIST: train, evaluate, measure costs, publish")
    p.add_argument("--easy", action="store_true", help="the 500x500 variant without noise")
    p.add_argument("--quick", action="store_true", help="64 training / 64 test canvases, 1 epoch (CI)")
    p.add_argument("--costs-only", action="store_true", help="only FLOPs, memory and CPU time; no training")
    p.add_argument("--report-only", action="store_true", help="rebuild the RESULTS section from the JSON files")
    p.add_argument("--epochs", type=int, help="training epochs (default: the config's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a MegaConfig field")
    p.add_argument("--runs-dir", default="/tmp/multiglance-megapixel", help="where run folders go")
    p.add_argument("--docs", default="docs", help="docs folder (results/ and RESULTS.md inside)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--low-res-epochs", type=int, help="epochs of the low-resolution one-glance baseline "
                   "(default: min(epochs, 3) easy, 1 at 1500x1500)")
    p.set_defaults(func=bench_megapixel)


def bench_megapixel(args) -> None:
    from .megapixel_report import run_bench

    run_bench(args)
