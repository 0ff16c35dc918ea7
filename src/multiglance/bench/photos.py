"""multiglance bench photos: real photographs, where a small object decides the class.

    multiglance bench photos --gtsdb gtsdb-signs.zip --runs-dir runs/photos --docs docs       # one seed
    multiglance bench photos --parts shapes --seeds 0 1 2                                     # the house CNN

Parts (each run trained by `train.fit` on the training split less a held-out validation split, its numbers
read from validation, then the test split read once, by the saved model's own inference path):
    gtsdb   GTSDB street photographs (`gtsdb-signs.zip`, built by shared/data/build_gtsdb.py; which kind of
            traffic sign a 1360x800 photograph shows, or none): photos-two, photos-one (the same backbone on the
            photograph resized to about photos-two's test FLOPs), photos-full-one (the same backbone at full
            resolution: the ceiling; `--full-epochs`, 2 by default, as it is 8x the cost), and large-two (the
            house CNN from scratch, its size read from the data). For the two-glance models: where glance 1
            looks, against the signs' boxes (`sign_hits`).
    scenes  `scenes-cifar10-512` (a 64x64 CIFAR-10 object in a 512x512 scene of photographs): photos-two and
            photos-one, each on 2,000 of the 10,000 training scenes for 3 epochs, validated on 200 and tested on
            500 (fixed random subsets): what a 2-core CPU session affords.
    shapes  the house CNN's stability: large-two on 300 generated 1024x1024 JPEGs of one 40-pixel white square,
            disc or cross and two grey discs (`data.synthetic_folders.make_clutter_folder`), 10 epochs, the loss
            of every step logged; the largest training loss after the first step, as a multiple of the first
            (other parts log every 50 steps, so theirs is coarse).
Each run writes docs/results/photos-PART-PRESET-sSEED.json (from a clean commit unless --allow-dirty; `--quick`
writes under the runs folder), and `build_section` the "photos" section of docs/RESULTS.md from all of them.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from .. import results, runs
from ..config import apply_overrides
from ..errors import UserError

PARTS = ("gtsdb", "scenes", "shapes")
GTSDB_ROWS = {"photos-two": ["model.combine=presence", "model.background=none"], "photos-one": [],
              "photos-full-one": [],
              "large-two": ["model.image_size=none", "data.stream=true"]}
SCENES_BUDGET = ["data.name=scenes-cifar10-512", "data.train_limit=2000", "train.epochs=3", "data.val_limit=200",
                 "data.test_limit=500"]  # a CPU session's share (validation also runs glance 2 on all 49 patches)
SCENES_ROWS = {"photos-two": SCENES_BUDGET, "photos-one": SCENES_BUDGET}
QUICK = ["data.train_limit=16", "data.val_limit=8", "data.test_limit=8", "train.epochs=1", "train.batch_size=4",
         "train.eval_batch_size=4", "train.workers=0"]


def sign_hits(model, split, boxes: dict[str, list], photo_size: tuple[int, int], seed: int = 0) -> dict:
    """Where glance 1 looks on GTSDB: the share of test photographs with a sign whose top patch (and any of the
    top k) contains a sign's centre, against a patch drawn at random. Boxes are in the photograph's pixels
    (`photo_size` = (h0, w0)); the model reads it resized by data/stream.py's rule (scale to cover, centre crop)."""
    from ..analysis.stats import collect

    looks = collect(model, split, batch_size=8)
    (h, w), (h0, w0) = model.image_shape, photo_size
    s = max(h / h0, w / w0)
    oy, ox = (h0 - h / s) / 2, (w0 - w / s) / 2  # the crop's corner in the photograph
    patch = model.patch_boxes().float()  # (P, 4) x0, y0, x1, y1
    top1 = anyk = chance = counted = 0
    for row, i in enumerate(looks.index.tolist()):
        signs = boxes.get(split.files[i].split("gtsdb-signs/", 1)[-1], [])
        if not signs:
            continue
        centres = torch.tensor([[((x0 + x1) / 2 - ox) * s, ((y0 + y1) / 2 - oy) * s]
                                for x0, y0, x1, y1, _ in signs])  # (S, 2) in the model's pixels
        inside = ((centres[None, :, 0] >= patch[:, None, 0]) & (centres[None, :, 0] < patch[:, None, 2])
                  & (centres[None, :, 1] >= patch[:, None, 1]) & (centres[None, :, 1] < patch[:, None, 3]))
        holds = inside.any(1)  # (P,) patches that hold a sign's centre
        top1 += bool(holds[looks.chosen[row, 0]])
        anyk += bool(holds[looks.chosen[row]].any())
        chance += holds.float().mean().item()
        counted += 1
    n = max(counted, 1)
    return {"photos_with_signs": counted, "top1_holds_sign": top1 / n, "topk_holds_sign": anyk / n,
            "random_patch_holds_sign": chance / n, "top_k": model.top_k}


def _gtsdb_boxes(root: str) -> dict[str, list]:
    from ..data.archive import open_tree

    with open_tree(root) as tree:
        name = next((n for n in tree.names() if n.endswith("boxes.json")), None)
        if name is None:
            raise UserError(f"{root} has no boxes.json; build it with shared/data/build_gtsdb.py")
        return json.loads(tree.read(name))


def run_row(part: str, preset: str, sets: list[str], seed: int, runs_dir: Path, *, quick: bool,
            progress: bool) -> dict:
    """Train (or resume) one row, then its validation and test numbers, as one JSON-ready record."""
    from ..models import get_preset
    from ..train import load_data
    from .common import epoch_records, finished_run, shown_config, val_and_test
    from .memory import PeakPss

    cfg = apply_overrides(get_preset(preset), [*sets, f"train.seed={seed}", *(QUICK if quick else [])])
    run_dir = runs_dir / f"{part}-{preset}-s{seed}{'-quick' if quick else ''}"
    start = time.perf_counter()
    epochs_before = len(epoch_records(run_dir)) if (run_dir / "metrics.jsonl").exists() else 0
    with PeakPss() as peak:  # the training process and its data workers
        model, cfg, n_train, done = finished_run(cfg, run_dir, progress)
    losses = [r["loss"] for r in runs.read_metrics(run_dir) if r.get("kind") == "train"]
    record = {"dataset": cfg.data.name, "part": part, "preset": preset, "seed": seed, "commit": results.git_commit(),
              **val_and_test(run_dir, timing=not quick), "train_images": n_train, "epochs": len(done),
              "train_seconds": round(sum(r["train_seconds"] for r in done), 1),
              "max_loss_over_first": round(max(losses[1:], default=0) / losses[0], 3) if losses else None,
              "wall_seconds": round(time.perf_counter() - start, 1), "config": shown_config(cfg),
              # measured when this call trained every epoch (a resumed or finished run is not measured whole)
              "train_peak_pss_mb": round(peak.mb) if epochs_before == 0 else None}
    if quick:  # no timing on a quick run: the keys every result carries, empty
        record |= {"latency_ms_batch1": None, "images_per_s_batch256": None}
    if part == "gtsdb" and model.kind == "two":
        (test,) = load_data(cfg, ("test",))
        record["glance1"] = sign_hits(model, test, _gtsdb_boxes(cfg.data.root), (800, 1360), seed)
    return record


ROW_NAMES = {"photos-two": "two glances, pretrained (`photos-two`, top 3 patches)",  # the order of the table
             "photos-one": "one glance on the photograph resized to equal cost (`photos-one`)",
             "photos-full-one": "one glance at full resolution (`photos-full-one`)",
             "large-two": "two glances, house CNN from scratch (`large-two`)"}


def row_name(record: dict) -> str:
    """A row's name in the table: its preset's, and the combination when it is not the preset's."""
    name, model = ROW_NAMES.get(record["preset"], record["preset"]), record["config"]["model"]
    if model.get("combine") == "presence":
        name = f"{name[:-1]}, `combine=presence`, background `{model['background']}`)"
    return name


def build_section(docs: Path) -> str:
    """The RESULTS.md section (and the README's table) from docs/results/photos-*.json: mean and spread over
    seeds of each row's test accuracy, its validation accuracy, test FLOPs, ms per image, and where glance 1
    looks on GTSDB."""
    import statistics

    records = results.read_results(Path(docs) / "results", "photos-*.json")
    lines = ["## Photographs (`multiglance bench photos`; from the JSONs: `multiglance bench photos --report-only`)",
             "", "Each row: trained on the training split less a held-out validation split, the test split read once "
             "after training by the saved model's own inference path (hard, top 3 for two glances); \"largest loss "
             "/ first\" is the largest logged training loss after the first as a multiple of the first (every step "
             "for the shapes runs, every 50 for the others). Discussion: [photos-discussion.md](photos-discussion.md).",
             ""]
    for part, title in (("gtsdb", "GTSDB street photographs (`gtsdb-signs`, 5 classes, 251 test photographs)"),
                        ("scenes", "`scenes-cifar10-512`"), ("shapes", "1024x1024 shapes on noise (house CNN)")):
        rows = [r for r in records if r["part"] == part]
        if not rows:
            continue
        lines += [f"### {title}", "", "| model | seeds | epochs | test accuracy | validation | GFLOPs per image "
                  "(conv + matmul; other ops) | ms per image, batch 1 | largest loss / first |",
                  "|---|---|---|---|---|---|---|---|"]
        for preset in sorted(dict.fromkeys(r["preset"] for r in rows), key=lambda p: list(ROW_NAMES).index(p)
                             if p in ROW_NAMES else len(ROW_NAMES)):
            rs = [r for r in rows if r["preset"] == preset]
            acc = [100 * r["accuracy_hard"] for r in rs]
            spread = f" ± {statistics.stdev(acc):.1f}" if len(acc) > 1 else ""
            ms = [r["latency_ms_batch1"] for r in rs if r.get("latency_ms_batch1")]
            lines.append(f"| {row_name(rs[0])} | {len(rs)} | {rs[0]['epochs']} | "
                         f"{statistics.mean(acc):.1f}%{spread} | "
                         f"{100 * statistics.mean(r['val_accuracy_hard'] for r in rs):.1f}% | "
                         f"{rs[0]['test_flops_per_image'] / 1e9:.2f}; {rs[0].get('test_other_flops_per_image', 0) / 1e9:.2f} | "
                         f"{statistics.mean(ms) if ms else float('nan'):.0f} | "
                         f"{max(r['max_loss_over_first'] or 0 for r in rs):.2f} |")
        looks = [r for r in rows if r.get("glance1")]
        for r in looks:
            g = r["glance1"]
            lines += ["", f"Where glance 1 of `{r['preset']}` (seed {r['seed']}) looks, over the {g['photos_with_signs']} "
                      f"test photographs with a sign: its top patch holds a sign's centre in "
                      f"{100 * g['top1_holds_sign']:.1f}%, one of its top {g['top_k']} in {100 * g['topk_holds_sign']:.1f}%, "
                      f"a random patch in {100 * g['random_patch_holds_sign']:.1f}%."]
        for r in rows:
            if r.get("train_peak_pss_mb"):
                lines += ["", f"Training `{r['preset']}` (seed {r['seed']}): {r['train_seconds'] / 60:.1f} minutes "
                          f"over its {r['epochs']} epochs ({r['wall_seconds'] / 60:.1f} for the whole row, with "
                          "validation, the test split and timing); peak memory "
                          f"{r['train_peak_pss_mb'] / 1000:.2f} GB (PSS of the training process and its data "
                          "workers, sampled every 0.2 s)."]
        lines.append("")
    return "\n".join(lines)


def bench_photos(args) -> None:
    from .common import check_load

    parts = args.parts or list(PARTS)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise UserError(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    if "gtsdb" in parts and not (args.gtsdb or args.report_only):
        raise UserError("part gtsdb needs --gtsdb PATH/gtsdb-signs.zip (shared/data/build_gtsdb.py builds it)")
    if not (args.quick or args.report_only):
        results.require_clean(args.allow_dirty)
        check_load(args.max_load)
    runs_dir, docs = Path(args.runs_dir), Path(args.docs)
    runs_dir.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    for part in [] if args.report_only else parts:
        if part == "gtsdb":
            rows = {p: [f"data.root={args.gtsdb}", *s, *([f"train.epochs={args.full_epochs}"]
                                                        if p == "photos-full-one" else [])]
                    for p, s in GTSDB_ROWS.items()}
        elif part == "scenes":
            rows = SCENES_ROWS
        else:
            from ..data.synthetic_folders import make_clutter_folder

            folder = runs_dir / "shapes-1024"
            if not (folder / "test").is_dir():
                make_clutter_folder(folder, n_per_class=4 if args.quick else 100, size=256 if args.quick else 1024,
                                    n_test_per_class=2 if args.quick else 50, seed=0)
            rows = {"large-two": [f"data.root={folder}", "model.image_size=none", "train.log_every=1"]}
        for preset, sets in rows.items():
            if args.only and preset not in args.only:
                continue
            for seed in args.seeds:
                record = run_row(part, preset, sets, seed, runs_dir, quick=args.quick, progress=not args.quiet)
                name = f"photos-{part}-{preset}-s{seed}"
                path = results.write_result(runs_dir if args.quick else docs / "results", name, record)
                print(f"{name}: val {record['val_accuracy_hard']:.4f} test {record['accuracy_hard']:.4f} "
                      f"{record['test_flops_per_image'] / 1e9:.2f} GFLOPs -> {path}", flush=True)
    if not args.quick:
        results.replace_section(docs / "RESULTS.md", "photos", build_section(docs))


def register(subparsers) -> None:
    from .common import add_publish_options, bench_subparsers

    p = bench_subparsers(subparsers).add_parser("photos", help="real photographs: GTSDB signs, photo scenes, and "
                                                              "the house CNN's stability")
    p.add_argument("--parts", nargs="+", metavar="PART", help=f"some of: {', '.join(PARTS)} (default all)")
    p.add_argument("--only", nargs="+", metavar="PRESET", help="only these presets of each part")
    p.add_argument("--gtsdb", help="gtsdb-signs.zip (shared/data/build_gtsdb.py)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds (default 0)")
    p.add_argument("--full-epochs", type=int, default=2, help="epochs of photos-full-one (default 2)")
    p.add_argument("--quick", action="store_true", help="tiny budgets (CI): proves the pipeline, publishes nothing")
    add_publish_options(p, "runs/photos")
    p.set_defaults(func=bench_photos)
