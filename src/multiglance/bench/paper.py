"""Reproduce the report's tables on the real data and publish them: `multiglance bench paper`.

    multiglance bench paper                                   # everything (CPU budgets stated in EXPERIMENTS)
    multiglance bench paper --datasets cifar10 --threads 1    # one data set (two of these run side by side)
    multiglance bench paper --report-only                     # rebuild docs from the finished runs only
    multiglance bench paper --quick --docs runs/q --runs-dir runs/q/runs   # CI: the whole pipeline, ~1 min

Each experiment (a preset, `--set` overrides, an epoch budget, a number of seeds) trains with `train.fit`
into `RUNS/<dataset>__<name>__seed<N>` (resumed if cut short, skipped if complete, or copied from a matching
finished run under `--reuse DIR`; bench/common.py `train_or_resume`), is evaluated with `common.val_and_test`
(`evaluate.evaluate_run`: validation accuracy, then the test split once: accuracy hard and soft, params, FLOPs, CPU
latency and throughput) and written to `DOCS/results/<dataset>__<name>__seed<N>.json`. The tables
(mean ± std over seeds), the curves (the report's figures 4 to 7) and the `paper` section of
`DOCS/RESULTS.md` are then rebuilt from those JSON files alone.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import results, runs
from ..config import apply_overrides, to_dict
from ..errors import UserError
from .common import epoch_records, find_reusable, is_complete, train_or_resume, val_and_test

REPORT = {  # the report's top-1 accuracy, its tables (pooling stride 1, 500 train images per class on Tiny)
    ("cifar10", "one"): 0.78, ("cifar10", "two"): 0.68,
    ("tiny-imagenet", "one"): 0.23, ("tiny-imagenet", "two"): 0.23,
}
DATASET_NOTES = {
    "cifar10": "CIFAR-10 from `cifar10/cifar10-jpeg.zip` (a JPEG copy, quality 75, 4:2:0 chroma, not the official "
               "lossless pixels): 45,000 training and 5,000 validation images (a seeded, stratified 10% of the 50,000 "
               "training images), and all 10,000 test images, read once per run after training.",
    "tiny-imagenet": "Tiny ImageNet with all 500 training images per class, as the report had (built with "
                     "`../shared/data/build_tiny_imagenet_full.py`, read from `$MULTIGLANCE_DATA`): 90,000 training "
                     "and 10,000 validation images (a seeded, stratified 10%), and its 10,000 labelled val images as "
                     "the test split, read once per run after training.",
    "cluttered-digits": "The embedded cluttered digits (48x48, one digit among clutter).",
}


@dataclass(frozen=True)
class Experiment:
    name: str  # row and file name within its data set, e.g. "two-logits-s2"
    dataset: str  # "cifar10" | "tiny-imagenet" | "cluttered-digits"
    preset: str  # the preset it starts from (models/presets.py)
    overrides: tuple[str, ...] = ()  # `--set` values on top of the preset
    epochs: int = 10  # training budget
    seeds: int = 1  # seeds 0 .. seeds-1

    def config(self, seed: int, extra: list[str] = ()):
        from ..models import get_preset

        cfg = get_preset(self.preset)
        return apply_overrides(cfg, [*self.overrides, f"train.epochs={self.epochs}", f"train.seed={seed}", *extra])


def _paper(dataset: str, short: str, epochs_s2: int, epochs_s1: int, seeds: int,
           combine_seeds: int) -> list[Experiment]:
    """The report's one- and two-glance rows, in priority order: stride 2 first (`seeds` seeds; the probs and
    mixture combinations `combine_seeds`), then the literal stride-1 pair (1 seed)."""
    rows = [Experiment("one-s2", dataset, f"paper-{short}-one-s2", (), epochs_s2, seeds),
            Experiment("two-logits-s2", dataset, f"paper-{short}-two-s2", (), epochs_s2, seeds)]
    rows += [Experiment(f"two-{mode}-s2", dataset, f"paper-{short}-two-s2", (f"model.combine={mode}",), epochs_s2,
                        combine_seeds) for mode in ("probs", "mixture")]
    rows += [Experiment("one-s1", dataset, f"paper-{short}-one", (), epochs_s1, 1),
             Experiment("two-logits-s1", dataset, f"paper-{short}-two", (), epochs_s1, 1)]
    return rows


# The presets' full budgets (20 epochs CIFAR-10, 15 Tiny ImageNet), one training job at a time with both cores
# (idle: ~7 s per CIFAR-10 epoch of paper-cifar10-one-s2, ~60 s per Tiny ImageNet epoch at 500 images per class).
EXPERIMENTS: list[Experiment] = [
    *_paper("cifar10", "cifar10", epochs_s2=20, epochs_s1=20, seeds=3, combine_seeds=3),
    *_paper("tiny-imagenet", "tiny", epochs_s2=15, epochs_s1=15, seeds=3, combine_seeds=1),
    Experiment("one-s2", "cluttered-digits", "digits-one", (), 12, 1),  # CI and tests only (--datasets)
    Experiment("two-logits-s2", "cluttered-digits", "digits-two", (), 12, 1),
]
DEFAULT_DATASETS = ("cifar10", "tiny-imagenet")
QUICK = dict(epochs=1, seeds=1, names=("one-s2", "two-logits-s2"),
             overrides=["data.train_limit=1024", "data.test_limit=500", "train.batch_size=64"])


def run_id(exp: Experiment, seed: int) -> str:
    return f"{exp.dataset}__{exp.name}__seed{seed}"


def select(datasets: list[str], only: list[str] | None, quick: bool, seeds: int | None) -> list[tuple[Experiment, int]]:
    known = {e.dataset for e in EXPERIMENTS}
    for d in datasets:
        if d not in known:
            raise UserError(f"no experiments for data set {d!r}; choose from {', '.join(sorted(known))}")
    chosen = [e for e in EXPERIMENTS if e.dataset in datasets]
    if only:
        names = {e.name for e in chosen} | {f"{e.dataset}/{e.name}" for e in chosen}
        unknown = [n for n in only if n not in names]
        if unknown:
            raise UserError(f"unknown experiment(s) {', '.join(unknown)}; choose from {', '.join(sorted(names))}")
        chosen = [e for n in only for e in chosen if n in (e.name, f"{e.dataset}/{e.name}")]  # in the order given
    if quick:
        chosen = [Experiment(e.name, e.dataset, e.preset, e.overrides, QUICK["epochs"], QUICK["seeds"])
                  for e in chosen if only or e.name in QUICK["names"]]
    # seeds last to first: seed 0 is the run most likely to exist already under --reuse (a preset's default run)
    return [(e, s) for e in chosen for s in reversed(range(min(e.seeds, seeds or e.seeds)))]


# ---- the record of one run ----------------------------------------------------------------------------------
def run_record(exp: Experiment, seed: int, run_dir: Path, repeats: int) -> dict:
    """The published record of a finished run: validation accuracy (what any choice is made on), then the test
    split, read once, by the saved model's own inference path (`common.val_and_test`: `multiglance eval RUN`),
    with CPU latency and throughput."""
    import os

    from ..train import load_data

    ev = val_and_test(run_dir, timing=True, repeats=repeats)
    cfg = runs.load_config(run_dir)
    (train,) = load_data(cfg, ("train",))
    epochs = epoch_records(run_dir)
    return {"dataset": exp.dataset, "experiment": exp.name, "preset": exp.preset, "model": ev.pop("model"),
            "seed": seed, "commit": results.git_commit(), "epochs": len(epochs),
            "train_seconds": round(sum(r.get("train_seconds", 0.0) for r in epochs), 1),
            "train_images": len(train), **ev, "final_train_loss": epochs[-1]["train_loss"],
            "timing_threads": torch.get_num_threads(), "load_average_1min": round(os.getloadavg()[0], 2),
            "config": to_dict(cfg)}


# ---- tables, curves, the RESULTS.md section ------------------------------------------------------------------
def _mean_std(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0] * scale:.{digits}f}"
    return f"{statistics.mean(values) * scale:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def aggregate(records: list[dict], exps: list[Experiment]) -> list[dict]:
    """One row per experiment with results: accuracies over seeds, cost numbers (same for every seed)."""
    rows = []
    for exp in exps:
        recs = [r for r in records if r["dataset"] == exp.dataset and r.get("experiment") == exp.name]
        if not recs:
            continue
        m = recs[0]["config"]["model"]
        rows.append({"exp": exp, "recs": recs, "model": recs[0]["model"], "stride": m["pool_stride"],
                     "combine": m["combine"] if recs[0]["model"] == "two" else "-",
                     "hard": [r["accuracy_hard"] for r in recs],
                     "val": [r["val_accuracy_hard"] for r in recs if r.get("val_accuracy_hard") is not None],
                     "soft": [r["accuracy_soft"] for r in recs if r["accuracy_soft"] is not None],
                     "params": recs[0]["params"], "flops": recs[0]["test_flops_per_image"],
                     "latency": statistics.median(r["latency_ms_batch1"] for r in recs),
                     "throughput": statistics.median(r["images_per_s_batch256"] for r in recs),
                     "train_min": statistics.mean(r["train_seconds"] for r in recs) / 60,
                     "epochs": recs[0]["epochs"], "train_images": recs[0].get("train_images")})
    return rows


def dataset_table(rows: list[dict]) -> str:
    one_flops = {r["stride"]: r["flops"] for r in rows if r["model"] == "one"}
    head = ("| config | glances | pool stride | combine | seeds | epochs | val % hard | top-1 % hard | top-1 % soft "
            "| report % "
            "| params | MFLOPs/img | FLOPs vs one | ms/img (b=1) | img/s (b=256) | train min/run |")
    lines = [head, "|" + "---|" * head.count(" |")]
    for r in rows:
        report = REPORT.get((r["exp"].dataset, r["model"]))
        ratio = f"{r['flops'] / one_flops[r['stride']]:.2f}x" if r["stride"] in one_flops else "-"
        lines.append(f"| {r['exp'].name} | {r['model']} | {r['stride']} | {r['combine']} | {len(r['recs'])} | "
                     f"{r['epochs']} | {_mean_std(r['val'])} | {_mean_std(r['hard'])} | {_mean_std(r['soft'])} | "
                     f"{'-' if report is None else f'~{report * 100:.0f}'} | {r['params']:,} | "
                     f"{r['flops'] / 1e6:.2f} | {ratio} | {r['latency']:.2f} | {r['throughput']:.0f} | "
                     f"{r['train_min']:.1f} |")
    return "\n".join(lines)


def verdicts(rows: list[dict]) -> list[str]:
    """Match (within 2 points), beat or fall short of the report, per row, from the numbers alone."""
    out = []
    for r in rows:
        report = REPORT.get((r["exp"].dataset, r["model"]))
        if report is None:
            continue
        ours = statistics.mean(r["hard"])
        gap = (ours - report) * 100
        word = "matches" if abs(gap) <= 2 else "beats" if gap > 0 else "falls short of"
        out.append(f"{r['exp'].name} ({r['exp'].dataset}): {ours * 100:.1f}% {word} the report's ~{report * 100:.0f}% "
                   f"({gap:+.1f} points)")
    return out


def curves(rows: list[dict], docs: Path, runs_dir: Path) -> list[str]:
    """The report's figures 4 to 7: loss and validation accuracy against iterations, one vs two, per stride."""
    from ..compare import plot_curves

    made = []
    for stride in sorted({r["stride"] for r in rows}):
        pick = [r for r in rows if r["stride"] == stride and r["combine"] in ("-", "logits")]
        # per experiment, the lowest seed whose run folder is on this machine
        dirs = [next((d for d in (runs_dir / Path(rec["run_dir"]).name for rec in r["recs"]) if d.is_dir()), None)
                for r in pick]
        dirs = [d for d in dirs if d is not None]
        dataset = rows[0]["exp"].dataset
        png = docs / f"paper-{dataset}-curves-s{stride}.png"
        if dirs:
            plot_curves(dirs, png, title=f"{dataset}, pool stride {stride}: one glance vs two glances "
                                         "(lowest seed at hand of each)")
        if dirs or png.is_file():  # without the run folders, the figure made with them stays
            made.append(png.name)
    return made


def build_report(docs: Path, datasets: list[str], quick: bool, runs_dir: Path = Path("runs/paper")) -> str:
    records = [r for r in results.read_results(docs / "results") if r["dataset"] in datasets]
    parts = ["## Reproducing the report (`multiglance bench paper`)", "",
             "Regenerate: `make reproduce` (= `multiglance bench paper --threads 2`: one training job at a time with "
             "both cores, at the presets' full budgets; `--report-only` rebuilds this page from the JSON files; rows "
             "of the experiment list without JSON files are not shown). Every row is the mean ± std over the seeds "
             "listed of the JSON files `docs/results/<dataset>__<config>__seed<N>.json`. Each run validates on its "
             "validation split (held out from the training images) and its test split is read once, after "
             "training, by the saved model's own inference path (`eval_command` in the JSON). Accuracy is top-1; "
             "'hard' is the two-glance model's real test-time path (glance 2 on the top patch only), 'soft' "
             "weights all patches as in training. FLOPs, and 'FLOPs vs one', are convolution and matrix-product FLOPs "
             "(PyTorch's counter, multiply and add counted apart; the other ops' share is in docs/PERFORMANCE.md) "
             "for one image on the hard path; latency and throughput are medians on this 2-core CPU with "
             "the number of threads in each JSON's `timing_threads`, so compare them within a table, not across "
             "machines. 'train min/run' is the sum of the epochs' training time (no evaluation)."]
    if quick:
        parts += ["", "**Quick mode** (`--quick`): tiny budgets that only prove the pipeline works; these numbers "
                      "mean nothing."]
    all_rows = []
    for dataset in datasets:
        rows = aggregate(records, [e for e in EXPERIMENTS if e.dataset == dataset])
        if not rows:
            continue
        all_rows += rows
        r0 = rows[0]["recs"][0]
        sizes = (f"Split sizes: {r0.get('train_images') or '?'} train / {r0.get('val_images') or '?'} validation / "
                 f"{r0.get('test_images') or '?'} test; test read once per run, after training.")
        parts += ["", f"### {dataset}", "", DATASET_NOTES.get(dataset, ""), "", sizes, "", dataset_table(rows)]
        if r0["config"]["data"].get("train_limit"):
            parts += ["", f"(Training used only {r0['train_images']} images: `data.train_limit`.)"]
        pngs = curves(rows, docs, runs_dir)
        parts += [""] + [f"![{p}]({p})" for p in pngs]
    if verdicts(all_rows):
        parts += ["", "Against the report, from the numbers above (within 2 points counts as a match):", ""]
        parts += [f"- {v}" for v in verdicts(all_rows)]
    if (docs / "early-results").is_dir() and not quick:
        parts += ["", "The early runs of this table (2 and 3 epochs, trained while 4-6 jobs shared the 2 cores, "
                      "validated on the test split) are kept, as an appendix outside `docs/results/`, in "
                      "`docs/early-results/` and no longer shown."]
    notes = docs / "paper-discussion.md"
    if notes.is_file() and not quick:
        parts += ["", notes.read_text().strip()]
    return "\n".join(parts)


# ---- the command ---------------------------------------------------------------------------------------------
def bench_paper(args) -> None:
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    docs, runs_dir = Path(args.docs), Path(args.runs_dir)
    if not (args.report_only or args.quick):
        results.require_clean(args.allow_dirty)
    todo = select(datasets, args.only, args.quick, args.seeds)
    if args.threads:
        torch.set_num_threads(args.threads)
    extra = QUICK["overrides"] if args.quick else []
    log = print if not args.quiet else (lambda *a, **k: None)
    start = time.perf_counter()
    for i, (exp, seed) in enumerate(todo):
        name = run_id(exp, seed)
        out = docs / "results" / f"{name}.json"
        if args.report_only or (out.exists() and not args.retime):
            continue
        cfg = exp.config(seed, extra)
        run_dir = runs_dir / name
        log(f"[{i + 1}/{len(todo)}] {name}: {exp.preset} {' '.join(exp.overrides)} {cfg.train.epochs} epochs "
            f"({time.perf_counter() - start:.0f} s so far)", flush=True)
        if args.no_train and not (run_dir.is_dir() and is_complete(run_dir, cfg)) and \
                find_reusable(cfg, [Path(p) for p in args.reuse or []]) is None:
            continue
        if not train_or_resume(cfg, run_dir, args.progress, reuse=[Path(p) for p in args.reuse or []], log=log):
            log(f"stopped before {name} finished; run the same command again to resume")
            return
        record = run_record(exp, seed, run_dir, repeats=3 if args.quick else 20)
        results.write_result(docs / "results", name, record)
        log(f"  {name}: top-1 hard {record['accuracy_hard']:.4f}"
            + (f" soft {record['accuracy_soft']:.4f}" if record["accuracy_soft"] is not None else "")
            + f", {record['train_seconds']:.0f} s training", flush=True)
    section = build_report(docs, list(dict.fromkeys([*datasets, *DEFAULT_DATASETS])) if not args.quick
                           else datasets, args.quick, runs_dir)
    results.replace_section(docs / "RESULTS.md", "paper", section)
    log(f"wrote {docs / 'RESULTS.md'} (section paper) in {time.perf_counter() - start:.0f} s")


def register(subparsers) -> None:
    from .common import bench_subparsers

    sub = bench_subparsers(subparsers)
    p = sub.add_parser("paper", help="train, evaluate and tabulate the report's experiments on the real data")
    p.add_argument("--quick", action="store_true", help="tiny budgets (1 epoch, 1024 images): proves the pipeline")
    p.add_argument("--datasets", default=",".join(DEFAULT_DATASETS),
                   help="comma-separated: cifar10, tiny-imagenet (cluttered-digits for tests)")
    p.add_argument("--runs-dir", default="runs/paper", help="where the run folders go (default runs/paper)")
    p.add_argument("--docs", default="docs", help="where RESULTS.md, results/*.json and the PNGs go")
    p.add_argument("--seeds", type=int, help="at most this many seeds per experiment")
    p.add_argument("--only", nargs="+", metavar="NAME",
                   help="only these experiments, in this order (e.g. one-s2 cifar10/two-logits-s2)")
    p.add_argument("--reuse", action="append", metavar="DIR",
                   help="copy finished runs with the same config from DIR/* instead of training them")
    p.add_argument("--report-only", action="store_true", help="train nothing: rebuild the docs from the JSON files")
    p.add_argument("--no-train", action="store_true", help="evaluate only runs that are complete (or reusable)")
    p.add_argument("--retime", action="store_true", help="re-evaluate runs whose JSON exists (fresh timings)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--progress", action="store_true", help="show a progress bar per epoch")
    p.add_argument("--quiet", action="store_true", help="no log lines")
    p.add_argument("--allow-dirty", action="store_true", help="publish from a tree with uncommitted changes (the "
                   "JSON's commit then ends in -dirty)")
    p.set_defaults(func=bench_paper)
