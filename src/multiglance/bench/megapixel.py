"""Megapixel MNIST on the shared path: `multiglance bench megapixel` trains the two-glance model (presets
`megapixel-two`, 1500x1500, and `megapixel-easy-two`, 500x500) and its low-resolution one-glance baseline
(`megapixel-low-one` / `megapixel-easy-low-one`) with `train.fit`, chooses the test-time k and combination rule
on the validation split, evaluates the test split once by the saved model's own inference, measures costs
beside the full-resolution CNN in one process, and writes docs/results/megapixel-mnist*.json and the megapixel
section of docs/RESULTS.md (megapixel_report.py).

    make megapixel                                     # the published runs: the Makefile's three commands
    multiglance bench megapixel --easy                 # 500x500, the preset's 10 epochs
    multiglance bench megapixel --easy --set model.channels=8,16,32 --low-res-epochs 0 \
        --runs-dir runs/megapixel/curriculum --docs runs/megapixel/curriculum   # a 500x500 run to start from
    multiglance bench megapixel --set train.init_from=runs/megapixel/curriculum/megapixel-mnist-easy
                                                       # 1500x1500, 8 epochs, from that run (a curriculum)
    multiglance bench megapixel --easy --quick --docs runs/megapixel/quick   # the pipeline on 64 canvases, ~15 s
    multiglance bench megapixel --costs-only           # FLOPs, memory, CPU time of both models; no training
    multiglance bench megapixel --report-only          # rebuild the RESULTS.md section from the JSON files

Run folders (`--runs-dir`, default runs/megapixel): RUNS/megapixel-mnist[-easy][-quick] and the baseline's
RUNS/...-low-one, ordinary runs that `multiglance eval / predict / analyze` open; the same command resumes a run
cut short and keeps a finished one. `--set` takes ordinary config keys (model.explore=8, train.init_from=RUN).

Selection: accuracy against k = 1..10 for both rules ("weights": glance 1's scores softmaxed over the k
patches; "equal": the mean of their probabilities), by the model's own `infer`, on the validation canvases
(built from MNIST training digits that no training canvas uses); the best (rule, k) is taken, ties to fewer
patches. The test split is read after all training and that choice, once for the published number, by
`evaluate.evaluate_run(RUN, split="test", overrides=[rule, k])`: the JSON records that `multiglance eval`
command. The test curve against k is published beside the validation one; nothing is chosen on it.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import torch

from .. import results, runs
from ..config import RunConfig, apply_overrides, validate
from ..models.glances import TOPK_COMBINES
from ..models.megapixel import full_resolution_cnn, full_resolution_config
from . import megapixel_report as report
from .common import epoch_records, published_test, shown_config, train_or_resume

KS = tuple(range(1, 11))  # the test-time k compared on validation
QUICK = ["data.train_limit=64", "data.val_limit=32", "data.test_limit=32", "train.epochs=1", "train.workers=0",
         "train.eval_batch_size=32"]
PATH_KEYS = ("train.init_from", "init_from", "data.root", "root")  # values shown without machine paths


# ---- configs and run folders --------------------------------------------------------------------------------
def make_config(args) -> RunConfig:
    """The two-glance run's config: the preset, then `--set`, `--epochs`, and `--quick`'s tiny budget."""
    from ..models import get_preset

    cfg = apply_overrides(get_preset("megapixel-easy-two" if args.easy else "megapixel-two"), list(args.set or []))
    if args.epochs is not None:
        cfg.train.epochs = args.epochs
    if args.quick:
        apply_overrides(cfg, QUICK)
    return validate(cfg)


def low_res_config(cfg: RunConfig, epochs: int) -> RunConfig:
    """The baseline for the same data: the one-glance CNN on the canvas resized to glance 1's thumbnail side,
    with glance 2's filters, trained with the two-glance run's optimiser, batch and seed for `epochs`."""
    from ..models import get_preset

    low = get_preset("megapixel-easy-low-one" if cfg.model.image_size == 500 else "megapixel-low-one")
    low.model = replace(low.model, image_size=cfg.model.image_size, input_size=cfg.model.thumb_size,
                        channels=tuple(cfg.model.channels))
    low.data = replace(cfg.data)
    low.train = replace(cfg.train, epochs=epochs, init_from=None, uniform_weight=0.0)
    return validate(low)


def low_res_epochs(args, cfg: RunConfig) -> int:
    """--low-res-epochs, else the baseline preset's own budget; 1 with --quick; 0 means no baseline."""
    if args.quick:
        return 1 if args.low_res_epochs is None else min(args.low_res_epochs, 1)
    if args.low_res_epochs is not None:
        return args.low_res_epochs
    from ..models import get_preset

    return get_preset("megapixel-easy-low-one" if cfg.model.image_size == 500 else "megapixel-low-one").train.epochs


def train_run(cfg: RunConfig, run_dir: Path, data: tuple) -> list[dict] | None:
    """Make `run_dir` a finished run of `cfg` trained on `data` = (train, val): its epoch records, or None when
    training stopped early."""
    return epoch_records(run_dir) if train_or_resume(cfg, run_dir, data=data) else None


# ---- accuracy against k, digit recall -----------------------------------------------------------------------
def digit_hits(model, index: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(B, k) patch indices, (B, 5, 4) digit boxes -> (B, 5) bool: the digit's centre lies in a chosen patch."""
    pb = model.patch_boxes()[index]  # (B, k, 4)
    cx = (boxes[..., 0] + boxes[..., 2]) / 2  # (B, 5)
    cy = (boxes[..., 1] + boxes[..., 3]) / 2
    inside = ((pb[:, None, :, 0] <= cx[..., None]) & (cx[..., None] < pb[:, None, :, 2]) &
              (pb[:, None, :, 1] <= cy[..., None]) & (cy[..., None] < pb[:, None, :, 3]))  # (B, 5, k)
    return inside.any(-1)


@torch.no_grad()
def accuracy_by_k(model, split, *, ks: tuple[int, ...] = KS, recall_k: int | None = None, batch_size: int = 32,
                  workers: int = 0) -> dict:
    """Hard top-k accuracy on `split` for every k in `ks` and both rules of `topk_combine`, in one pass: for
    each, exactly what `model.infer(x, "hard", k)` answers with that rule (greedy NMS is prefix-consistent,
    so the first k of the top max(ks) patches are the top k). With `recall_k`, also the share of digits whose
    centre lies in one of the top `recall_k` patches. Canvases are rendered in `workers` DataLoader workers."""
    from ..data.batches import fetch

    model.eval()
    kmax, own = max(ks), model.topk_combine
    hits = {rule: dict.fromkeys(ks, 0) for rule in TOPK_COMBINES}
    found, n = 0, 0
    lists = [torch.arange(s, min(s + batch_size, len(split))) for s in range(0, len(split), batch_size)]
    try:
        for index, x, keep in fetch(split, lists, workers):
            index, y = index[keep], split.labels[index[keep]]
            g = model.glance1_features(x)  # (B, F1)
            scores = model.where(g)  # (B, P)
            top = model.top_patches(scores, kmax)  # (B, kmax)
            z = model.classify_patches(model.normalize_patches(model.select_patches(x, top)),
                                       g if model.fuse else None)  # (B, kmax, K)
            s = scores.gather(1, top)  # (B, kmax)
            for rule in TOPK_COMBINES:
                model.topk_combine = rule
                for k in ks:
                    out = z[:, 0] if k == 1 else model.combine_topk(s[:, :k], z[:, :k])  # (B, K), as infer
                    hits[rule][k] += (out.argmax(-1) == y).sum().item()
            if recall_k:
                found += digit_hits(model, top[:, :recall_k], split.boxes(index)).sum().item()
            n += y.shape[0]
    finally:
        model.topk_combine = own
    n = max(n, 1)
    return {"accuracy_by_k": {r: {str(k): h / n for k, h in by_k.items()} for r, by_k in hits.items()},
            "digit_recall": found / (5 * n) if recall_k else None, "images": n}


def choose(accuracy: dict[str, dict[str, float]], own_rule: str) -> tuple[str, int]:
    """The (rule, k) of the best accuracy (validation's); ties go to fewer patches, then to the model's rule."""
    pairs = [(rule, int(k)) for rule, by_k in accuracy.items() for k in by_k]
    return min(pairs, key=lambda rk: (-accuracy[rk[0]][str(rk[1])], rk[1], rk[0] != own_rule))


# ---- costs: FLOPs, memory, CPU time, beside the full-resolution CNN -----------------------------------------
def saved_activation_mb(loss) -> float:
    """MB of tensors autograd keeps for the backward of `loss()` (a training step's activation memory, weights
    and input excluded), counted with saved-tensor hooks."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss()
    return total[0] / 2 ** 20


def costs(cfg: RunConfig, model, *, k: int | None = None, rule: str | None = None) -> dict:
    """Per test image, ours (at test-time k and rule, default the config's; FLOPs for every k of KS) and the
    full-resolution CNN side by side in this process: FLOPs (PyTorch's counter), peak resident memory (fresh
    single-thread processes, `evaluate.peak_memory_mb`), CPU time (median, this process's threads); and the
    memory of a training step of `cfg` (its own top_k + explore patches)."""
    from ..evaluate import count_flops, peak_memory_mb, time_forward
    from ..train import loss_fn

    size, k = cfg.model.image_size, k or cfg.model.top_k
    rule = rule or cfg.model.topk_combine
    test_cfg = RunConfig(preset=cfg.preset, model=replace(cfg.model, top_k=k, topk_combine=rule), data=cfg.data,
                         train=cfg.train)
    shape = (1, size, size)
    canvas = torch.zeros(1, *shape, dtype=torch.uint8)
    canvas[..., ::37, ::41] = 255  # some ink, so that nothing is special-cased
    flops = {str(j): count_flops(model, canvas, mode="hard", k=j) for j in KS}
    with torch.device("meta"):  # count without computing: the full CNN's 56 GFLOPs would take seconds
        meta = full_resolution_cnn(image_size=size)
        full_flops = count_flops(meta, torch.empty(1, *shape))
        full_train_mb = saved_activation_mb(lambda: meta.train()(torch.empty(1, *shape)).sum())
    b = cfg.train.batch_size
    batch, y = canvas.expand(b, -1, -1, -1).contiguous(), torch.zeros(b, dtype=torch.long)
    train_mb = saved_activation_mb(lambda: loss_fn(model, model.train()(batch), y, cfg))
    own, model.topk_combine = model.topk_combine, rule  # an inference option: the weights stay
    try:
        ms = 1e3 * time_forward(model.eval(), canvas, repeats=5, warmup=1, mode="hard", k=k)
    finally:
        model.topk_combine = own
    full = full_resolution_cnn(image_size=size).eval()
    return {"flops_by_k": flops, "full_flops": full_flops,
            "peak_memory_mb": peak_memory_mb(test_cfg, shape),
            "full_peak_memory_mb": peak_memory_mb(full_resolution_config(image_size=size), shape),
            "train_step_peak_memory_mb": peak_memory_mb(cfg, shape, batch=b, train=True), "train_step_batch": b,
            "train_saved_activations_mb_per_step": train_mb,
            "full_train_saved_activations_mb_per_image": full_train_mb,
            "cpu_ms_per_image": ms,
            "full_cpu_ms_per_image": 1e3 * time_forward(full, canvas.float().div_(255), repeats=3, warmup=1),
            "threads": torch.get_num_threads(), "params": sum(p.numel() for p in model.parameters()),
            "full_params": sum(p.numel() for p in full.parameters())}


# ---- the command ------------------------------------------------------------------------------------------------
def command_line(args) -> str:
    """The bench command as the JSON records it (paths shown without this machine's folders)."""
    parts = ["multiglance", "bench", "megapixel"] + ["--easy"] * args.easy + ["--quick"] * args.quick
    parts += ["--epochs", str(args.epochs)] if args.epochs is not None else []
    for item in args.set or []:
        key, _, value = item.partition("=")
        parts += ["--set", f"{key}={results.shown_path(value) if key.strip() in PATH_KEYS else value}"]
    parts += ["--low-res-epochs", str(args.low_res_epochs)] if args.low_res_epochs is not None else []
    return " ".join(parts + ["--runs-dir", results.shown_path(args.runs_dir)])


def run_bench(args) -> None:
    from ..train import load_data

    torch.set_num_threads(args.threads)
    docs, runs_dir = Path(args.docs), Path(args.runs_dir)
    if args.report_only:
        return report.publish_section(docs)
    cfg = make_config(args)
    if args.costs_only:
        from ..models import build_model

        torch.manual_seed(0)
        print(json.dumps(costs(cfg, build_model(cfg.model)), indent=1))
        return None
    if not args.quick:
        results.require_clean(args.allow_dirty)
    name = cfg.data.name + ("-quick" if args.quick else "")
    run_dir, low_dir = runs_dir / name, runs_dir / f"{name}-low-one"
    train, val = load_data(cfg)  # train and validation only: the test split is read after every choice
    curve = train_run(cfg, run_dir, (train, val))
    low_cfg = low_res_config(cfg, epochs) if (epochs := low_res_epochs(args, cfg)) else None
    low_curve = train_run(low_cfg, low_dir, (train, val)) if low_cfg else []
    if curve is None or low_curve is None:
        print("stopped before the runs finished; run the same command again to resume")
        return None
    model, _ = runs.load_run(run_dir)
    kw = dict(batch_size=cfg.train.eval_batch_size, workers=cfg.train.workers)
    val_ev = accuracy_by_k(model, val, **kw)  # every choice is made here
    rule, k = choose(val_ev["accuracy_by_k"], cfg.model.topk_combine)
    ev = published_test(run_dir, [f"model.topk_combine={rule}", f"model.top_k={k}"])
    (test,) = load_data(cfg, ("test",))
    test_ev = accuracy_by_k(model, test, recall_k=k, **kw)  # published beside the val curve, never chosen on
    record = {"dataset": name, "preset": cfg.preset, "model": "two", "seed": cfg.train.seed,
              "commit": results.git_commit(), "command": command_line(args), "run_dir": run_dir.name,
              "epochs": len(curve), "train_seconds": round(sum(r["train_seconds"] for r in curve), 1),
              "data_seconds": round(sum(r["data_seconds"] for r in curve), 1), "curve": curve,
              "selection": "val", "train_images": len(train), "val_images": val_ev["images"],
              "test_images": ev["test_images"], "combination": rule, "top_k": k,
              "val_accuracy": val_ev["accuracy_by_k"][rule][str(k)], "val_accuracy_by_k": val_ev["accuracy_by_k"],
              "test_accuracy_by_k": test_ev["accuracy_by_k"], "accuracy_hard": ev["accuracy_hard"],
              "accuracy_soft": None, "eval_command": ev["eval_command"], "digit_recall": test_ev["digit_recall"],
              "test_flops_per_image": ev["test_flops_per_image"], "params": ev["params"],
              "train_split_mb": train.nbytes() / 2 ** 20,
              "dense_train_split_mb": len(train) * train.size ** 2 / 2 ** 20,
              "images_per_s_batch256": None, "load_average_1min": round(os.getloadavg()[0], 2),
              "config": shown_config(cfg)}
    if low_cfg:
        low_ev = published_test(low_dir)
        record["low_resolution_cnn"] = {
            "preset": low_cfg.preset, "run_dir": low_dir.name, "epochs": len(low_curve),
            "train_seconds": round(sum(r["train_seconds"] for r in low_curve), 1),
            "input_size": low_cfg.model.input_size, "channels": list(low_cfg.model.channels),
            "params": low_ev["params"], "flops": low_ev["test_flops_per_image"],
            "val_accuracy": low_curve[-1]["val_acc_hard"], "accuracy": low_ev["accuracy_hard"],
            "eval_command": low_ev["eval_command"]}
    docs.mkdir(parents=True, exist_ok=True)
    report.glance_figure(model, test, k, docs / f"{name}-glance1.png")
    c = costs(cfg, model, k=k, rule=rule)
    record |= c | {"latency_ms_batch1": c["cpu_ms_per_image"]}
    results.write_result(docs / "results", name, record)
    print(json.dumps({key: v for key, v in record.items() if key not in ("config", "curve")}, indent=1))
    return report.publish_section(docs)


def register(subparsers) -> None:
    from .common import bench_subparsers

    sub = bench_subparsers(subparsers)
    p = sub.add_parser("megapixel", help="megapixel MNIST: train, choose on validation, test once, costs, publish")
    p.add_argument("--easy", action="store_true", help="the 500x500 variant without noise (megapixel-easy-two)")
    p.add_argument("--quick", action="store_true", help="64 training / 32 validation / 32 test canvases, 1 epoch")
    p.add_argument("--costs-only", action="store_true", help="print FLOPs, memory and CPU time; no training")
    p.add_argument("--report-only", action="store_true", help="rebuild the RESULTS section from the JSON files")
    p.add_argument("--epochs", type=int, help="training epochs (default: the preset's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a config key (model.explore=8, train.init_from=RUN), repeatable")
    p.add_argument("--runs-dir", default="runs/megapixel", help="where the run folders go (default runs/megapixel)")
    p.add_argument("--docs", default="docs", help="docs folder (results/ and RESULTS.md inside)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--low-res-epochs", type=int, help="epochs of the low-resolution one-glance baseline (default: "
                   "its preset's, 3 at 500x500 and 8 at 1500x1500; 0: no baseline)")
    p.add_argument("--allow-dirty", action="store_true", help="publish from a tree with uncommitted changes (the "
                   "JSON's commit then ends in -dirty)")
    p.set_defaults(func=run_bench)
