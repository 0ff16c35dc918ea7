"""The `analyze`, `report` and `predict` subcommands (added to the CLI by `register(subparsers)`)."""
from __future__ import annotations

import csv
import json
import sys

from ..errors import UserError


def cmd_analyze(args) -> None:
    from .analyze import analyze_run

    if args.publish:
        from ..results import require_clean

        require_clean(args.allow_dirty)
    if (args.run is None) == (args.weights is None):
        raise UserError("give a run folder or --weights NAME (not both)")
    out = args.out or (args.run and f"{args.run.rstrip('/')}/analysis")
    summary = analyze_run(args.run, weights=args.weights, data=args.data, out=out, split=args.split,
                          limit=args.limit, k=args.k, example=args.example)
    if args.publish:
        from pathlib import Path

        from .publish import publish

        path = publish(summary, Path(out), args.run and Path(args.run), args.publish, Path(args.docs),
                       data=args.data, weights=args.weights)
        print(f"published {path} and the analysis section of {Path(args.docs) / 'RESULTS.md'}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
        return
    w, (gh, gw) = summary["weights"], summary["grid"]
    skipped = f" ({summary['skipped_images']} files skipped: they do not decode)" if summary["skipped_images"] else ""
    print(f"{summary['images']} images of {summary['dataset']} {summary['split']}{skipped}, {gh}x{gw} patches; "
          f"hard accuracy {summary['accuracy_hard']:.4f} (top {summary['top_k']})")
    print(f"glance 1 entropy {w['entropy_mean']:.3f} of {w['entropy_max']:.3f} nats; mean top weight "
          f"{w['max_weight_mean']:.3f}; std/mean over images {w['relative_std_mean']:.3f}")
    if gh * gw <= 64:
        print("share on top, by position: " + "  ".join(" ".join(f"{v:.2f}" for v in row) for row in w["top_share"]))
    else:  # a large grid: the most used positions only
        share = sorted(((v, r, c) for r, row in enumerate(w["top_share"]) for c, v in enumerate(row)), reverse=True)
        print(f"share on top, the 5 most used of {w['top_positions_used']} positions used: "
              + ", ".join(f"({r}, {c}) {v:.2f}" for v, r, c in share[:5]))
    loc = summary["localisation"]
    if not loc:
        print(f"localisation: skipped; {summary.get('localisation_skipped', 'no object boxes')}")
    else:
        for m in ("overlap", "contains_centre", "coverage"):
            print(f"{m:16s} " + "  ".join(f"{n} {loc[m][n]:.3f}" for n in ("model", "normalized", "random",
                                                                              "centre", "best")))
    print(f"figures and analysis.json saved in {out}")


def cmd_report(args) -> None:
    from .report import write_report

    path = write_report(args.run, args.out, data=args.data, split=args.split, limit=args.limit, k=args.k)
    print(f"report saved in {path}")


def cmd_predict(args) -> None:
    from ..data.images import set_max_pixels
    from ..predict import predict_files, run_classes
    from ..runs import load_run

    model, cfg = load_run(args.run)
    set_max_pixels(cfg.data.max_pixels)  # the run's decompression-bomb guard (data.max_pixels)
    classes = run_classes(cfg, args.data, run_dir=args.run)
    preds, errors = predict_files(model, classes, args.images, top_k=args.top_k, patches=args.patches,
                                  overlays=args.save_overlays)
    for f, message in errors:
        print(f"skipped {f}: {message}", file=sys.stderr)
    if not preds:
        raise UserError(f"none of the {len(errors)} image files could be read (see above)")
    if args.json:
        print(json.dumps({"predictions": [p.row() for p in preds], "errors": [{"file": f, "error": m}
                                                                             for f, m in errors]}))
    elif args.csv:
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(["file", "class", "probability", "patch", "x0", "y0", "x1", "y1", "top_k", "patches",
                    "patch_boxes"])
        for p in preds:
            box = p.patch_box or ["", "", "", ""]
            w.writerow([p.file, p.label, f"{p.probability:.6f}", "" if p.patch is None else p.patch, *box,
                        ";".join(f"{c}:{q:.6f}" for c, q in p.top_k), " ".join(map(str, p.patches or [])),
                        ";".join(" ".join(map(str, b)) for b in p.patch_boxes or [])])
    else:
        for p in preds:
            where = "" if p.patch is None else f"  patch {p.patch} at {tuple(p.patch_box)}"
            if p.patches and len(p.patches) > 1:
                boxes = ", ".join(str(tuple(b)) for b in p.patch_boxes)
                where = f"  patches {', '.join(map(str, p.patches))} at {boxes}"
            others = "" if len(p.top_k) < 2 else "  (" + ", ".join(f"{c} {q:.3f}" for c, q in p.top_k[1:]) + ")"
            print(f"{p.file}: {p.label} {p.probability:.3f}{where}{others}")
    if args.save_overlays and preds:
        print(f"overlays saved in {args.save_overlays}", file=sys.stderr)


def _analysis_arguments(p, out_help: str, weights: bool = False) -> None:
    """The options `analyze` and `report` share (`weights`: the run may instead be shipped weights)."""
    if weights:
        p.add_argument("run", nargs="?", help="a two-glance run folder (or give --weights)")
        p.add_argument("--weights", metavar="NAME", help="shipped weights (`multiglance weights` lists them) or a "
                       ".pt file, instead of a run folder (then give --out)")
    else:
        p.add_argument("run", help="a two-glance run folder")
    p.add_argument("--data", help="data file or folder (default: the one the run was trained on)")
    p.add_argument("--out", help=out_help)
    p.add_argument("--split", default="test", choices=("test", "val", "train"),
                   help="which split (default test; val: the validation split held out from train)")
    p.add_argument("--limit", type=int, help="only a fixed random subset of N images")
    p.add_argument("--k", type=int, default=6, help="images per cell of the top-patch grid (default 6)")


def register(sub) -> None:
    p = sub.add_parser("analyze", help="where glance 1 looks: patch-weight statistics, figures, localisation")
    _analysis_arguments(p, out_help="folder for the PNGs and analysis.json (default RUN/analysis)", weights=True)
    p.add_argument("--example", type=int, default=0, help="index of the image of the rank and heat-map figures")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--publish", metavar="NAME", help="store the summary as DOCS/results/analysis/NAME.json, the "
                   "grid as DOCS/analysis-NAME-grid.png, and regenerate the analysis section of DOCS/RESULTS.md")
    p.add_argument("--docs", default="docs", help="the docs folder for --publish (default docs)")
    p.add_argument("--allow-dirty", action="store_true", help="--publish from a tree with uncommitted changes (the "
                   "JSON's commit then ends in -dirty)")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("report", help="one self-contained HTML page: config, metrics, curves, figures, scores")
    _analysis_arguments(p, out_help="the HTML file (default RUN/report.html)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("predict", help="classify your own image files; print class, probability, chosen patch",
                       description="Each image is prepared as streamed training data is: EXIF orientation "
                       "applied, converted to the model's channels, scaled (antialiased) to just cover the model's "
                       "input and centre-cropped to it. The patches glance 2 looked at are given in the original "
                       "image's pixels. Unreadable files are reported and skipped.")
    p.add_argument("run", help="a run folder")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files, or folders searched "
                   "recursively")
    p.add_argument("--top-k", type=int, default=1, help="also list the K most probable classes (default 1)")
    p.add_argument("--patches", type=int, help="two-glance: glance 2 on the best N patches, all N reported and "
                   "drawn (default: the model's top_k)")
    p.add_argument("--data", help="where the run's data set is, to read its class names (default: the "
                   "run's)")
    p.add_argument("--save-overlays", metavar="DIR", help="write each image with its chosen patches outlined "
                   "(the top one red)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object: predictions and errors")
    fmt.add_argument("--csv", action="store_true", help="CSV on stdout")
    p.set_defaults(func=cmd_predict)
