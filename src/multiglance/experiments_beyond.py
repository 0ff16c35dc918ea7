"""Beyond the report: one-glance fronts against two-glance models and their top-k curves, per data set.

    multiglance bench beyond --runs-dir /work/bg/beyond/runs            # train, evaluate, write the results
    multiglance bench beyond --report-only                             # regenerate RESULTS.md + plots from JSON
    multiglance bench beyond --quick --docs /tmp/docs                  # a tiny end-to-end pass (the test's)

Each run trains one preset (with `--set`-style overrides) on a fixed subset, then measures on the test subset:
hard and soft accuracy, PyTorch-counted test-time FLOPs per image, the top-k curve (k patches classified and
combined), and glance 1's weights (mean per-image entropy, spread across images, how often the top patch holds
the whole object). One JSON per run in docs/results/beyond-<dataset>-<label>.json; the `beyond` section of
docs/RESULTS.md and docs/front_<dataset>.png are rebuilt from all of them.
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import UserError

DOCS = Path(__file__).resolve().parents[2] / "docs"


@dataclass
class Budget:
    train: int  # training images (a fixed random subset, or the first n generated canvases)
    test: int  # test images every number is measured on
    epochs: int
    val: int = 500  # images of the per-epoch validation inside training


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


# ---- data ----------------------------------------------------------------------------------------------------
def load_data(dataset: str, budget: Budget, root: str | None = None):
    from .data import load_split
    from .data.registry import is_generated_canvases
    from .train import limit

    generated = is_generated_canvases(dataset)
    kw = lambda n: {"n": n} if generated else {}  # noqa: E731  (canvases: generate only what is used)
    train = limit(load_split(dataset, root, "train", **kw(budget.train)), budget.train)
    test = limit(load_split(dataset, root, "test", **kw(budget.test)), budget.test)
    return train, test


# ---- measurement ---------------------------------------------------------------------------------------------
def glance1_stats(model, split, batch_size: int = 500) -> dict:
    """Glance 1's weights on `split`: mean per-image entropy (nats, and as a fraction of log P), the mean over
    patches of the std across images, and how often the top patch holds the whole object (when boxes are known)."""
    from .data.batches import eval_batches

    model.eval()
    ws = []
    with torch.no_grad():
        for x, _ in eval_batches(split, batch_size=batch_size):
            ws.append(model.patch_weights(x))  # (b, P)
    w = torch.cat(ws)  # (N, P)
    ent = -(w * w.clamp_min(1e-12).log()).sum(-1)  # (N,)
    out = {"entropy_mean": ent.mean().item(), "entropy_fraction": ent.mean().item() / math.log(w.shape[1]),
           "weight_std_across_images": w.std(0).mean().item(), "top_weight_mean": w.max(-1).values.mean().item()}
    if split.boxes is not None:
        box = model.patch_boxes()[w.argmax(-1)]  # (N, 4) the chosen patches
        inside = ((box[:, :2] <= split.boxes[:, :2]) & (box[:, 2:] >= split.boxes[:, 2:])).all(-1)
        out["top_patch_holds_object"] = inside.float().mean().item()
    return out


def top_k_curve(model, split, shape, ks: list[int], batch_size: int) -> list[dict]:
    from .evaluate import flops_per_image
    from .train import evaluate

    return [{"k": k, "accuracy": evaluate(model, split, mode="hard", k=k, batch_size=batch_size)["accuracy"],
             "test_flops_per_image": flops_per_image(model, shape, k=k)} for k in ks]


def run_one(dataset: str, label: str, preset: str, overrides: list[str], budget: Budget, data, runs_dir: Path,
            results_dir: Path, *, timing: bool = True, root: str | None = None) -> dict:
    from . import runs
    from .config import apply_overrides
    from .evaluate import flops_per_image, speed
    from .models import get_preset
    from .results import git_commit, write_result
    from .train import evaluate, fit, limit

    train, test = data
    cfg = apply_overrides(get_preset(preset), [f"train.epochs={budget.epochs}", "train.device=cpu", *overrides])
    cfg.data.name, cfg.data.train_limit, cfg.data.test_limit = dataset, budget.train, budget.test
    cfg.data.root = root  # where `data` came from (fresh canvases are drawn from there too)
    run_dir = runs_dir / f"{dataset}-{label}"
    if (run_dir / runs.CHECKPOINT).exists():  # a finished or stopped run: resume it (a no-op when finished)
        fit(cfg, run_dir, resume=True, progress=False, data=(train, limit(test, budget.val)))
    else:
        fit(cfg, run_dir, progress=False, data=(train, limit(test, budget.val)))
    epochs = [r for r in runs.read_metrics(run_dir) if r.get("kind") == "epoch"]
    if len(epochs) < cfg.train.epochs:  # stopped by a signal: never publish a half-trained run as the plan's
        raise UserError(f"the run in {run_dir} stopped after {len(epochs)} of {cfg.train.epochs} epochs; nothing "
                        "was published. Run the same command again to resume it")
    model, cfg = runs.load_run(run_dir)
    shape = tuple(test.images.shape[1:])
    bs = cfg.train.eval_batch_size
    record = {"dataset": dataset, "preset": preset, "label": label, "overrides": overrides, "model": model.kind,
              "seed": cfg.train.seed, "commit": git_commit(), "epochs": len(epochs),
              "train_seconds": sum(r.get("train_seconds", 0.0) for r in epochs),
              "train_images": len(train), "test_images": len(test),
              "accuracy_hard": evaluate(model, test, mode="hard", batch_size=bs)["accuracy"],
              "accuracy_soft": None, "test_flops_per_image": flops_per_image(model, shape),
              "params": sum(p.numel() for p in model.parameters()), "top_k": None}
    if model.kind == "two":
        record["accuracy_soft"] = evaluate(model, test, mode="soft", batch_size=bs)["accuracy"]
        record["soft_flops_per_image"] = flops_per_image(model, shape, mode="soft")
        p = model.num_patches
        ks = sorted({k for k in (1, 2, 3, 4, 8, 16, p) if k <= p})
        record["top_k"] = top_k_curve(model, test, shape, ks, bs)
        record["glance1"] = glance1_stats(model, test)
    record |= speed(model, shape, repeats=5) if timing else {"latency_ms_batch1": None,
                                                              "images_per_s_batch256": None}
    record["config"] = runs.to_dict(cfg)
    write_result(results_dir, f"beyond-{dataset}-{label}", record)
    return record


# ---- report --------------------------------------------------------------------------------------------------
def front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The upper-left front of (flops, accuracy) points: those no cheaper-or-equal point beats."""
    out, best = [], -1.0
    for f, a in sorted(points, key=lambda p: (p[0], -p[1])):
        if a > best:
            out.append((f, a))
            best = a
    return out


def above_front(point: tuple[float, float], one_front: list[tuple[float, float]]) -> bool:
    """True when `point` is more accurate than every one-glance model costing no more; False when no one-glance
    model costs that little (a point cheaper than all of them is not compared, not counted as above)."""
    cheaper = [a for f, a in one_front if f <= point[0]]
    return bool(cheaper) and point[1] > max(cheaper)


def two_glance_points(r: dict) -> list[tuple[float, float, str]]:
    pts = [(r["test_flops_per_image"], r["accuracy_hard"], "hard")]
    for t in r.get("top_k") or []:
        if t["k"] > 1:
            pts.append((t["test_flops_per_image"], t["accuracy"], f"top-{t['k']}"))
    return pts


def dataset_section(dataset: str, records: list[dict], docs: Path) -> str:
    ones = [r for r in records if r["model"] == "one"]
    twos = [r for r in records if r["model"] == "two"]
    one_front = front([(r["test_flops_per_image"], r["accuracy_hard"]) for r in ones])
    lines = [f"### {dataset}", ""]
    budgets = sorted({(r.get("train_images"), r.get("test_images"), r["epochs"]) for r in records})
    lines.append("Budget (train images, test images, epochs): " + "; ".join(f"{a}, {b}, {c}" for a, b, c in budgets)
                 + ". Accuracy on the test subset; FLOPs per test image, PyTorch's counter.")
    lines += ["", f"![accuracy against FLOPs](front_{dataset}.png)", "",
              "| run | preset | model | train imgs x epochs | acc hard | acc soft | MFLOPs | top-k (k: acc @ MFLOPs) | glance-1 entropy "
              "(frac of log P) | w std across images | top patch holds digit | train s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: r["test_flops_per_image"]):
        g = r.get("glance1") or {}
        tk = ", ".join(f"{t['k']}: {t['accuracy']:.3f} @ {t['test_flops_per_image'] / 1e6:.2f}"
                       for t in r.get("top_k") or [])
        soft = "" if r["accuracy_soft"] is None else f"{r['accuracy_soft']:.4f}"
        ent = f"{g['entropy_mean']:.2f} ({g['entropy_fraction']:.2f})" if g else ""
        std = f"{g['weight_std_across_images']:.4f}" if g else ""
        hold = f"{g['top_patch_holds_object']:.3f}" if "top_patch_holds_object" in g else ""
        lines.append(f"| {r.get('label', '')} | {r['preset']} | {r['model']} | "
                     f"{r.get('train_images')} x {r['epochs']} | {r['accuracy_hard']:.4f} | {soft} | "
                     f"{r['test_flops_per_image'] / 1e6:.2f} | {tk} | {ent} | {std} | {hold} | "
                     f"{r['train_seconds']:.0f} |")
    beats = [(r.get("label"), how, f, a) for r in twos for f, a, how in two_glance_points(r)
             if above_front((f, a), one_front)]
    lines.append("")
    if not ones or not twos:
        lines.append("Front: not measured (needs both one- and two-glance runs).")
    elif beats:
        lines.append("Front: the two-glance front lies above the one-glance front at " + "; ".join(
            f"{lab} {how} ({a:.4f} at {f / 1e6:.2f} MFLOPs)" for lab, how, f, a in beats) + ".")
    else:
        lines.append("Front: no two-glance point lies above the one-glance front on this data set.")
    lines += ["", target_line(dataset, ones, twos)]
    plot_front(dataset, ones, twos, one_front, docs / f"front_{dataset}.png")
    return "\n".join(lines)


# the targets: (largest test error, or None: match the full one-glance net; largest FLOPs fraction of it)
TARGETS = {"mnist-cluttered-100": (0.02, 1 / 5), "mnist-cluttered-60": (0.015, 1 / 5), "cifar10": (None, 1 / 3),
           "tiny-imagenet": (0.67, None)}  # Tiny ImageNet: the report's 23% + 10 points, at any cost


def target_line(dataset: str, ones: list[dict], twos: list[dict]) -> str:
    """Met or missed, and by how much: the best two-glance point within the FLOPs budget."""
    if dataset not in TARGETS or not ones or not twos:
        return ""
    max_error, fraction = TARGETS[dataset]
    full = max(ones, key=lambda r: (r["test_flops_per_image"], r["accuracy_hard"]))  # the best-trained full net
    budget = fraction * full["test_flops_per_image"] if fraction else math.inf
    goal = 1 - max_error if max_error is not None else full["accuracy_hard"]
    pts = [(a, f, f"{r.get('label')} {how}") for r in twos for f, a, how in two_glance_points(r) if f <= budget]
    what = (f"error at most {max_error:.1%}, accuracy at least {goal:.1%}" if max_error is not None else
            f"accuracy at least the full one-glance net's {goal:.4f} ({full.get('label')})")
    cost = (f" at no more than {budget / 1e6:.2f} MFLOPs, 1/{round(1 / fraction)} of {full.get('label')}"
            if fraction else "")
    head = f"Target ({what}{cost}): "
    if not pts:
        return head + "missed: no two-glance point within the FLOPs budget."
    a, f, name = max(pts)
    verdict = "met" if a >= goal else f"missed by {goal - a:.4f} accuracy ({1 - a:.2%} error)"
    return head + f"{verdict}; best is {name}, {a:.4f} at {f / 1e6:.2f} MFLOPs."


def plot_front(dataset: str, ones: list[dict], twos: list[dict], one_front, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=90)
    for r in ones:
        ax.scatter(r["test_flops_per_image"] / 1e6, r["accuracy_hard"], marker="s", color="tab:blue")
        ax.annotate(r.get("label", r["preset"]), (r["test_flops_per_image"] / 1e6, r["accuracy_hard"]), fontsize=7)
    if one_front:
        ax.step([f / 1e6 for f, _ in one_front], [a for _, a in one_front], where="post", color="tab:blue",
                alpha=0.5, label="one-glance front")
    for i, r in enumerate(twos):
        color = f"C{(i + 1) % 10}"
        tk = r.get("top_k") or []
        if tk:
            ax.plot([t["test_flops_per_image"] / 1e6 for t in tk], [t["accuracy"] for t in tk], "-o", ms=3,
                    color=color, label=f"{r.get('label', r['preset'])} top-k")
        ax.scatter(r["test_flops_per_image"] / 1e6, r["accuracy_hard"], marker="*", s=90, color=color)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("test-time MFLOPs per image")
    ax.set_ylabel("test accuracy (hard)")
    ax.set_title(dataset, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def write_report(docs: Path) -> str:
    from .results import read_results, replace_section

    records = read_results(docs / "results", "beyond-*.json")
    by_set: dict[str, list[dict]] = {}
    for r in records:
        by_set.setdefault(r["dataset"], []).append(r)
    parts = ["## Beyond the report: accuracy against test-time FLOPs",
             "", "Regenerate: `multiglance bench beyond --report-only` (from the JSONs); rerun the training with "
             "`multiglance bench beyond --datasets PLAN ... --runs-dir DIR`, PLAN one of mnist-cluttered-60:fresh, "
             "mnist-cluttered-60:full, mnist-cluttered-100:fresh, mnist-translated-60:fresh, cifar10:full, "
             "cifar10:oracle, tiny-imagenet:full (the published runs) or the small plain ones. Each plot: "
             "one-glance models (squares) and their front, "
             "two-glance models (stars: hard, one patch) and their top-k curves (k patches classified, their "
             "weights renormalised). Each table lists every run with its budget: the small early runs (a few "
             "thousand images, 2-3 epochs) stay for the record; the `-full` runs use every training image "
             "(CIFAR-10: 50,000; MNIST canvases: one per training digit, 60,000) and every test image, and the "
             "`-fresh` runs draw 60,000 new canvases every epoch (`data.fresh_canvases`). One seed each, CPU only, "
             "far fewer epochs than the published anchors. What the numbers show, and what was tried: "
             "[beyond-discussion.md](beyond-discussion.md)."]
    for name in sorted(by_set):
        parts += ["", dataset_section(name, by_set[name], docs)]
    if not by_set:
        parts.append("\n(No beyond-* results yet.)")
    text = "\n".join(parts)
    replace_section(docs / "RESULTS.md", "beyond", text)
    return text


# ---- command -------------------------------------------------------------------------------------------------
def run_bench(args) -> None:
    docs = Path(args.docs)
    if not args.report_only:
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
                print(f"{plan.dataset} {label}: hard {r['accuracy_hard']:.4f} soft {r['accuracy_soft']} "
                      f"{r['test_flops_per_image'] / 1e6:.2f} MFLOPs ({time.perf_counter() - start:.0f} s)",
                      flush=True)
    write_report(docs)
    print(f"wrote the beyond section of {docs / 'RESULTS.md'}")


def _bench_subparsers(subparsers):
    from .bench import bench_subparsers

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
    p.set_defaults(func=run_bench)
