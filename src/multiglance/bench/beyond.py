"""Beyond the report: one-glance fronts against two-glance models and their top-k curves, per data set.

    multiglance bench beyond --runs-dir ../runs/beyond                 # train, evaluate, write the results
    multiglance bench beyond --report-only                             # regenerate RESULTS.md + plots from JSON
    multiglance bench beyond --quick --docs runs/beyond-quick           # a tiny end-to-end pass (the test's)

Each run trains one preset (with `--set`-style overrides) on a fixed subset of the training split, validating
every epoch on the validation split (held out from the training data; for generated canvases, canvases of
held-out training digits); after training, `common.val_and_test` measures validation accuracy and reads the
test split once by the saved model's own path (`multiglance eval RUN`). Recorded: hard and soft accuracy,
PyTorch-counted test-time FLOPs per image, the top-k curve (k patches classified and combined; validation and
test accuracy per k), and glance 1's weights on validation (mean per-image entropy, spread across images, how
often the top patch holds the whole object). Fronts, "above the front" and the targets use validation accuracy.
One JSON per run in docs/results/beyond-<dataset>-<label>.json (`selection: "val"`); the `beyond` section of
docs/RESULTS.md and docs/front_<dataset>.png are rebuilt from all of them. Publishing needs a committed tree
(`--allow-dirty` to override; `--quick` never checks).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import UserError
from .beyond_report import above_front, dataset_section, front, target_line, write_report  # noqa: F401

DOCS = Path(__file__).resolve().parents[2] / "docs"


@dataclass
class Budget:
    train: int  # training images (a fixed random subset, or the first n generated canvases)
    test: int  # test images, read once per run after training, reported beside validation
    epochs: int
    val: int | None = None  # validation images (held out from training): every epoch, every choice; None: all


@dataclass
class Plan:
    dataset: str
    budget: Budget
    runs: list[tuple[str, str, list[str]]] = field(default_factory=list)  # (label, preset, overrides)


def plans(quick: bool) -> dict[str, Plan]:
    fresh = ["data.fresh_canvases=true"]
    tiny = ["model.batchnorm=true", "data.flip=true", "data.crop_padding=4", "train.lr=0.05", "train.warmup_epochs=1"]
    if quick:  # tiny nets and data: the whole pipeline in seconds
        b = Budget(train=128, test=64, epochs=1, val=32)
        small = ["model.channels=4,4", "model.glance1_channels=4,4", "train.batch_size=32"]
        return {"mnist-cluttered-60": Plan("mnist-cluttered-60", b, [
            ("one", "mnist60-one", small),
            ("thumb-one", "mnist60-thumb-one", small),
            ("two-reinforce", "mnist60-two", small),
            ("two-gumbel", "mnist60-two", small + ["model.choice=gumbel", "train.tau_final=0.5"])])}
    mnist = Budget(train=6000, test=2000, epochs=3)
    return {
        "mnist-cluttered-60": Plan("mnist-cluttered-60", mnist, [
            ("two-reinforce", "mnist60-two", []),
            ("thumb-one", "mnist60-thumb-one", []),
            ("two-gumbel", "mnist60-two", ["model.choice=gumbel", "model.combine=mixture", "train.tau_final=0.3",
                                           "train.entropy_weight=0.01"]),
            ("one", "mnist60-one", [])]),
        "cifar10": Plan("cifar10", Budget(train=10000, test=2000, epochs=3), [
            ("thumb-one", "cifar10-thumb-one", []),
            ("narrow-one", "cifar10-narrow-one", []),
            ("one", "cifar10-one", []),
            ("two-fuse-soft", "cifar10-two-fuse", []),
            ("two-fuse-reinforce", "cifar10-two-fuse-reinforce", [])]),
        "mnist-cluttered-100": Plan("mnist-cluttered-100", mnist, [
            ("two-reinforce", "mnist100-two", []),
            ("thumb-one", "mnist100-thumb-one", []),
            ("one", "mnist100-one", ["train.epochs=2"])]),
        # the report's own scheme (soft mixture in training, no fusion) on the same budget: the soft-hard gap
        "mnist-cluttered-60:report": Plan("mnist-cluttered-60", mnist, [
            ("two-report-soft", "mnist60-two", ["model.choice=soft", "model.combine=logits", "model.fuse=false"])]),
        # CIFAR-10 at a real budget (all 50,000 training images, all 10,000 test images, 15 epochs)
        "cifar10:full": Plan("cifar10", Budget(train=50000, test=10000, epochs=15), [
            ("one-full", "cifar10-one", []),
            ("thumb-one-full", "cifar10-thumb-one", []),
            ("narrow-one-full", "cifar10-narrow-one", []),
            ("two-fuse-soft-full", "cifar10-two-fuse", [])]),
        "cifar10:oracle": Plan("cifar10", Budget(train=50000, test=10000, epochs=15), [
            ("two-fuse-oracle-wide-full", "cifar10-two-fuse-oracle-wide", []),
            ("two-fuse-oracle-full", "cifar10-two-fuse-oracle", []),
            # ablation: the same net without glance 1's features in the decision (does the thumbnail carry it?)
            ("two-oracle-nofuse-full", "cifar10-two-fuse-oracle", ["model.fuse=false"])]),
        # every MNIST training digit once (60,000 fixed canvases) and the whole test split
        "mnist-cluttered-60:full": Plan("mnist-cluttered-60", Budget(train=60000, test=10000, epochs=10), [
            ("one-full", "mnist60-one", []),
            ("thumb-one-full", "mnist60-thumb-one", [])]),
        # the same budgets with 60,000 new canvases every epoch (data.fresh_canvases, as RAM's generator): the
        # fixed canvases above let the one-glance nets overfit (99.7% train, 96% test)
        **{f"{name}:fresh": Plan(name, Budget(train=60000, test=10000, epochs=epochs), [
            ("one-fresh", f"mnist{size}-one", fresh),
            ("thumb-one-fresh", f"mnist{size}-thumb-one", fresh),
            ("two-oracle-fresh", f"mnist{size}-two-oracle", fresh + [f"train.epochs={two_epochs}"]),
            # the one-glance net on exactly the thumbnail glance 1 sees (60 -> 20x20, 100 -> 25x25)
            ("glance1-view-one-fresh", f"mnist{size}-thumb-one", fresh + [f"model.input_size={thumb}"])])
           for name, size, epochs, two_epochs, thumb in (("mnist-cluttered-60", 60, 10, 8, 20),
                                                         ("mnist-cluttered-100", 100, 6, 3, 25),
                                                         ("mnist-translated-60", 60, 4, 4, 20))},
        # Tiny ImageNet: the report's s2 nets with batch norm and augmentation, every shared training image (121
        # per class, as ../shared/data's README says) and every val image
        "tiny-imagenet:full": Plan("tiny-imagenet", Budget(train=24200, test=10000, epochs=10), [
            ("thumb-one-full", "paper-tiny-one-s2", [*tiny, "model.input_size=32"]),
            ("two-fuse-oracle-full", "paper-tiny-two-s2", [*tiny, "model.choice=oracle", "model.fuse=true"]),
            ("one-full", "paper-tiny-one-s2", tiny)]),
        # the hard-choice two-glance net trained longer on more canvases
        "mnist-cluttered-60:long": Plan("mnist-cluttered-60", Budget(train=20000, test=2000, epochs=10), [
            ("two-reinforce-long", "mnist60-two", []),
            ("thumb-one-long", "mnist60-thumb-one", [])]),
    }


# ---- configs and data ---------------------------------------------------------------------------------------
def make_config(dataset: str, preset: str, overrides: list[str], budget: Budget, root: str | None = None):
    """The run's config: the preset, the budget (train / val / test limits, epochs), CPU, then `overrides`."""
    from ..config import apply_overrides
    from ..models import get_preset

    cfg = apply_overrides(get_preset(preset), [f"train.epochs={budget.epochs}", "train.device=cpu", *overrides])
    cfg.data.name, cfg.data.root = dataset, root  # where the data comes from (fresh canvases are drawn there too)
    cfg.data.train_limit, cfg.data.val_limit, cfg.data.test_limit = budget.train, budget.val, budget.test
    return cfg


def load_data(dataset: str, budget: Budget, root: str | None = None):
    """(train, val) of a plan, loaded once for all its runs, exactly as `train.fit` and `multiglance eval` load
    them (`train.load_data`, the budget's limits); the test split is not read here."""
    from ..train import load_data as load

    return load(make_config(dataset, "digits-one", [], budget, root))


# ---- measurement ---------------------------------------------------------------------------------------------
def glance1_stats(model, split, batch_size: int = 500) -> dict:
    """Glance 1's weights on `split`: mean per-image entropy (nats, and as a fraction of log P), the mean over
    patches of the std across images, and how often the top patch holds the whole object (when boxes are known)."""
    from ..data.batches import eval_batches
    from ..train.objectives import entropy

    model.eval()
    ws = []
    with torch.no_grad():
        for x, _ in eval_batches(split, batch_size=batch_size):
            ws.append(model.patch_weights(x))  # (b, P)
    w = torch.cat(ws)  # (N, P)
    ent = entropy(w)  # (N,)
    out = {"entropy_mean": ent.mean().item(), "entropy_fraction": ent.mean().item() / math.log(w.shape[1]),
           "weight_std_across_images": w.std(0).mean().item(), "top_weight_mean": w.max(-1).values.mean().item()}
    if split.boxes is not None:
        box = model.patch_boxes()[w.argmax(-1)]  # (N, 4) the chosen patches
        inside = ((box[:, :2] <= split.boxes[:, :2]) & (box[:, 2:] >= split.boxes[:, 2:])).all(-1)
        out["top_patch_holds_object"] = inside.float().mean().item()
    return out


def top_k_curve(model, val, test, shape, ks: list[int], batch_size: int) -> list[dict]:
    """For each k: validation accuracy (what the front is drawn from) and, beside it, test accuracy."""
    from ..evaluate import flops_per_image
    from ..train import evaluate

    def acc(split, k):
        return evaluate(model, split, mode="hard", k=k, batch_size=batch_size)["accuracy"]

    return [{"k": k, "val_accuracy": acc(val, k), "accuracy": acc(test, k),
             "test_flops_per_image": flops_per_image(model, shape, k=k)} for k in ks]


def run_one(dataset: str, label: str, preset: str, overrides: list[str], budget: Budget, data, runs_dir: Path,
            results_dir: Path, *, timing: bool = True, root: str | None = None) -> dict:
    """Train (or resume) one run on `data` = (train, val), validating every epoch on val; then val accuracy,
    the test split once by the saved model's own path (`val_and_test`), and one JSON."""
    from .. import runs
    from ..evaluate import speed
    from ..results import command_line, git_commit, write_result
    from ..train import load_data as load
    from .common import epoch_records, shown_config, train_or_resume, val_and_test

    cfg = make_config(dataset, preset, overrides, budget, root)
    run_dir = Path(runs_dir) / f"{dataset}-{label}"
    if not train_or_resume(cfg, run_dir, progress=False, data=data):  # never publish a half-trained run
        done = len(epoch_records(run_dir))
        raise UserError(f"the run in {run_dir.name} stopped after {done} of {cfg.train.epochs} epochs; nothing "
                        "was published. Run the same command again to resume it")
    epochs = epoch_records(run_dir)
    ev = val_and_test(run_dir)  # the training is over: the test split is read from here on only
    model, cfg = runs.load_run(run_dir)
    record = {"command": command_line(), "dataset": dataset, "preset": preset, "label": label,
              "overrides": overrides, "model": model.kind, "seed": cfg.train.seed, "commit": git_commit(),
              "epochs": len(epochs), "train_seconds": sum(r.get("train_seconds", 0.0) for r in epochs),
              "train_images": len(data[0]), **{k: ev[k] for k in (
                  "selection", "val_images", "val_accuracy_hard", "val_accuracy_soft", "test_images",
                  "accuracy_hard", "accuracy_soft", "test_flops_per_image", "params", "eval_command", "run_dir")},
              "top_k": None}
    if model.kind == "two":
        val, test = load(cfg, ("val", "test"))
        shape, bs = tuple(test.shape), cfg.train.eval_batch_size
        if "soft_flops_per_image" in ev:
            record["soft_flops_per_image"] = ev["soft_flops_per_image"]
        p = model.num_patches
        record["top_k"] = top_k_curve(model, val, test, shape, sorted({k for k in (1, 2, 3, 4, 8, 16, p)
                                                                        if k <= p}), bs)
        record["glance1"] = glance1_stats(model, val)  # descriptive, on validation
    shape = tuple(data[1].shape)
    record |= speed(model, shape, repeats=5) if timing else {"latency_ms_batch1": None,
                                                              "images_per_s_batch256": None}
    record["config"] = shown_config(cfg)
    write_result(results_dir, f"beyond-{dataset}-{label}", record)
    return record


# ---- command -------------------------------------------------------------------------------------------------
def run_bench(args) -> None:
    from ..results import require_clean

    docs = Path(args.docs)
    if not args.report_only:
        if not args.quick:
            require_clean(args.allow_dirty)
        if args.threads:
            torch.set_num_threads(args.threads)
        all_plans = plans(args.quick)
        names = args.datasets or [n for n in all_plans if ":" not in n]
        unknown = [n for n in names if n not in all_plans]
        if unknown:
            raise UserError(f"no beyond plan for {', '.join(unknown)}; choose from {', '.join(all_plans)}")
        runs_dir = Path(args.runs_dir)
        for name in names:
            plan = all_plans[name]
            data = load_data(plan.dataset, plan.budget, args.data)
            for label, preset, overrides in plan.runs:
                if args.only and label not in args.only:
                    continue
                start = time.perf_counter()
                r = run_one(plan.dataset, label, preset, overrides, plan.budget, data, runs_dir, docs / "results",
                            timing=not args.quick, root=args.data)
                print(f"{plan.dataset} {label}: val {r['val_accuracy_hard']:.4f}, test hard "
                      f"{r['accuracy_hard']:.4f} soft {r['accuracy_soft']} "
                      f"{r['test_flops_per_image'] / 1e6:.2f} MFLOPs ({time.perf_counter() - start:.0f} s)",
                      flush=True)
    write_report(docs)
    print(f"wrote the beyond section of {docs / 'RESULTS.md'}")


def _bench_subparsers(subparsers):
    from .common import bench_subparsers

    return bench_subparsers(subparsers)


def register(subparsers) -> None:
    p = _bench_subparsers(subparsers).add_parser(
        "beyond", help="one-glance fronts vs two-glance models and top-k curves (cluttered MNIST, CIFAR-10)")
    p.add_argument("--quick", action="store_true", help="tiny data and nets: the pipeline end to end in seconds")
    p.add_argument("--datasets", nargs="+", help="plans to run: data set names, or extra plans such as "
                   "mnist-cluttered-60:long (default: every plain data set)")
    p.add_argument("--only", nargs="+", help="run labels to run (default: all)")
    p.add_argument("--runs-dir", default="runs/beyond", help="where run folders go (keep it outside the repo)")
    p.add_argument("--docs", default=str(DOCS), help="docs folder: results/*.json, RESULTS.md, front_*.png")
    p.add_argument("--data", help="data root (default: the data set's default place)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    p.add_argument("--report-only", action="store_true", help="only rebuild RESULTS.md and the plots from JSON")
    p.add_argument("--allow-dirty", action="store_true", help="publish from a tree with uncommitted changes (the "
                   "JSONs' commit then ends in -dirty)")
    p.set_defaults(func=run_bench)
