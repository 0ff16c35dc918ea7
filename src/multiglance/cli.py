"""The `multiglance` command: thin subcommands that parse, call one function, and print.

Any `UserError` (bad path, corrupt file, unknown option, wrong checkpoint) is one line on stderr and exit 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import Stopped, UserError


def cmd_train(args) -> None:
    from .config import apply_overrides, apply_yaml, validate
    from .models import get_preset
    from .allocator import tune_allocator
    from .train import fit

    tune_allocator()  # keep freed activations in the heap (as the Makefile's MALLOC_* variables do)
    cfg = get_preset(args.preset)
    if args.config:
        apply_yaml(cfg, args.config)
    if args.data:
        cfg.data.root = args.data
    if args.epochs is not None:
        cfg.train.epochs = args.epochs
    apply_overrides(cfg, args.set or [])
    if args.data:
        from .data.registry import reads_files

        if not reads_files(cfg.data.name):
            raise UserError(f"--data {args.data}: data set {cfg.data.name!r} is generated and reads no files; to "
                            "train on a class folder use --preset large-two (or --set data.name=folder), or drop "
                            "--data")
    validate(cfg)  # ranges and consistency: one line naming the key, before anything is built or written
    out = args.out or f"runs/{args.preset}"
    fit(cfg, out, resume=args.resume, progress=not args.quiet)
    print(f"run saved in {out}")


def cmd_eval(args) -> None:
    from .compare import COLUMNS, table
    from .evaluate import evaluate_run

    result = evaluate_run(args.run, weights=args.weights, data_root=args.data, timing=not args.no_timing,
                          split=args.split, overrides=args.set or [], memory=args.memory)
    if args.json:
        print(json.dumps(result))
        return
    row = dict(result, acc_hard=result["accuracy_hard"], acc_soft=result["accuracy_soft"],
               test_flops_per_image=f"{result['test_flops_per_image'] / 1e6:.2f}",
               test_other_flops_per_image=f"{result['test_other_flops_per_image'] / 1e6:.2f}")
    print(table([row], [c for c in COLUMNS if c[0] not in ("epochs", "train_seconds")]))
    print("per-class accuracy (hard): " + ", ".join(f"{k} {v}" for k, v in result["per_class_accuracy"].items()))
    if (pub := result.get("published")) and args.split == pub["split"] and not args.set:
        same = abs(pub["accuracy_hard"] - result["accuracy_hard"]) < 5e-5
        print(f"published ({pub['result']}, commit {pub['commit']}): {pub['accuracy_hard']:.4f}; now "
              f"{result['accuracy_hard']:.4f} ({'the same' if same else 'DIFFERENT: check the data and versions'})")


def cmd_weights(args) -> None:
    from . import weights

    if args.export:
        if not args.result:
            raise UserError("--export RUN needs --result docs/results/NAME.json (the run's published record)")
        path = weights.export(args.export, args.result, name=args.name, overrides=args.set or [])
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB) and its line in {weights.SUMS}")
        return
    rows = weights.listing()
    if not rows:
        print(f"no shipped weights in {weights.SHIPPED}")
    for r in rows:
        acc = "-" if r["accuracy_hard"] is None else f"{r['accuracy_hard']:.4f}"
        print(f"{r['name']:40s} {r['kb']:6d} KB  sha256 {'ok' if r['sha256_ok'] else 'MISMATCH'}  "
              f"published test {acc}  ({r['result']})")


def cmd_compare(args) -> None:
    from .compare import compare_table, plot_curves

    print(compare_table([Path(r) for r in args.runs]))
    if args.plot:
        plot_curves([Path(r) for r in args.runs], Path(args.plot))
        print(f"curves saved in {args.plot}")


# config.derive's rule for the two-glance fields a preset leaves to the data (H x W images, short side S)
DERIVE_RULE = {"patch_size": "about S/8", "patch_stride": "about patch/2 (so the grid tiles)",
               "thumb_size": "about H/8"}


def preset_grid(model) -> str:
    """A two-glance preset's patches and thumbnail. Fields the preset leaves to the data are printed with the rule
    of `config.derive` that sets them, and its result at the preset's image size when the preset has one."""
    from .models.registry import without_data

    if model.kind == "one":
        return ""
    rule = [f"{f} {r}" for f, r in DERIVE_RULE.items() if getattr(model, f) is None]
    if not rule:
        return f" patches {model.patch_size}/{model.patch_stride} thumb {model.thumb_size}"
    rule_text = f"from the data by config.derive: {', '.join(rule)}"
    if model.image_size is None:  # the image size itself comes from the data
        return f" patches and thumb {rule_text}, H x W from the images"
    d = without_data(model)
    side = f"{model.image_size}x{model.image_width or model.image_size}"
    return f" patches {d.patch_size}/{d.patch_stride} thumb {d.thumb_size} ({rule_text}; shown for {side})"


def cmd_presets(args) -> None:
    from .config import all_keys
    from .models import get_preset, list_models

    if args.keys:
        print("\n".join(all_keys()))
        return
    for name in list_models():
        m = get_preset(name).model
        if m.backbone == "house":
            net = f"channels {list(m.channels)} pool stride {m.pool_stride}"
        else:
            glance1 = f" (glance 1: {m.glance1_backbone})" if m.kind == "two" and m.glance1_backbone else ""
            net = f"{m.backbone}{glance1}{', ImageNet-pretrained' if m.pretrained else ''}"
        print(f"{name:24s} {m.kind}-glance {net}{preset_grid(m)}")


def command(sub: argparse._SubParsersAction, name: str, func, help: str) -> argparse.ArgumentParser:
    """The parser of subcommand `name`, which runs `func(args)`."""
    p = sub.add_parser(name, help=help)
    p.set_defaults(func=func)
    return p


def add_inference_set(p: argparse.ArgumentParser, whose: str = "an ") -> None:
    """`--set KEY=VALUE` for a trained model: only the inference-time keys (config.INFERENCE_KEYS) may change."""
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=f"{whose}inference-time option, e.g. "
                   "model.top_k=5 or model.topk_combine=equal (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="multiglance", description="Two-glance image classification: a coarse "
                                     "glance picks a patch, a close glance classifies it.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = command(sub, "train", cmd_train, "train a preset into a run folder")
    p.add_argument("--preset", required=True, help="a preset name (see `multiglance presets`)")
    p.add_argument("--data", help="data file or folder (default: the data set's default place)")
    p.add_argument("--epochs", type=int, help="number of epochs (same as --set train.epochs=N)")
    p.add_argument("--out", help="run folder (default runs/PRESET)")
    p.add_argument("--config", help="a YAML file of overrides, applied before --set")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress output")

    p = command(sub, "eval", cmd_eval, "accuracy, FLOPs, latency and throughput of a trained run")
    p.add_argument("run", nargs="?", help="a run folder (or give --weights)")
    p.add_argument("--weights", metavar="NAME", help="shipped weights (`multiglance weights` lists them) or a .pt file")
    p.add_argument("--data", help="data file or folder (default: the one the run was trained on)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-timing", action="store_true", help="skip latency/throughput measurement")
    p.add_argument("--split", default="test", help="test (default) or val (the validation split held out from train)")
    add_inference_set(p)
    p.add_argument("--memory", action="store_true", help="also measure the peak memory of a batch-1 forward")

    p = command(sub, "weights", cmd_weights, "list the shipped weights of the headline runs (or export a run's)")
    p.add_argument("--export", metavar="RUN", help="write docs/weights/NAME.pt from this finished run folder")
    p.add_argument("--result", metavar="JSON", help="with --export: the run's published result JSON")
    p.add_argument("--name", help="with --export: the file's name (default: the JSON's)")
    add_inference_set(p, "with --export: the published number's ")

    p = command(sub, "compare", cmd_compare, "a table of several runs side by side, and their training curves")
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("--plot", help="write the training curves to this PNG")

    p = command(sub, "presets", cmd_presets, "list the presets (or, with --keys, every config key)")
    p.add_argument("--keys", action="store_true", help="list the config keys --set accepts")

    # the later stages' subcommands, each module's `register(subparsers)`, in the order `--help` lists them
    from .analysis import commands as analysis_commands
    from .bench import beyond, large, megapixel, paper, photos, speed

    paper.register(sub)              # bench paper: reproduce the report, publish docs/results
    speed.register(sub)              # bench speed
    analysis_commands.register(sub)  # analyze, report, predict
    add_data_parser(sub)             # data download
    megapixel.register(sub)          # bench megapixel
    beyond.register(sub)             # bench beyond: glimpse benchmark, top-k, the accuracy-FLOPs front
    large.register(sub)              # bench large: a folder of large photos, the photo scenes
    photos.register(sub)             # bench photos: GTSDB street photographs, photo scenes, the house CNN's stability
    return parser


def cmd_download(args) -> None:
    from .data.download import DATASETS, download

    path = download(args.name, args.root, url_base=args.url_base, keep_archive=args.keep_archive,
                    progress=not args.quiet)
    print(f"{args.name} is in {path}; train on it with: multiglance train --preset PRESET "
          + DATASETS[args.name].use.format(root=args.root))


def add_data_parser(subparsers) -> None:
    from .data.download import DATASETS

    p = subparsers.add_parser("data", help="data sets: download")
    sub = p.add_subparsers(dest="data_command", required=True)
    d = command(sub, "download", cmd_download, "download, check (SHA-256) and unpack an official data set")
    d.add_argument("name", choices=sorted(DATASETS), help="the data set")
    d.add_argument("--root", default="data", help="folder to put it in (default: data)")
    d.add_argument("--url-base", help="fetch the same file names from this address instead (a mirror)")
    d.add_argument("--keep-archive", action="store_true", help="keep the archive after unpacking it")
    d.add_argument("--quiet", action="store_true", help="no progress output")


OOM_MARKERS = ("not enough memory", "DefaultCPUAllocator", "out of memory")  # torch's CPU and CUDA messages
OOM_ADVICE = ("lower train.batch_size, train.eval_batch_size, model.top_k or the patch count (model.patch_stride "
              "up), or use fewer workers")


def out_of_memory(e: BaseException) -> str | None:
    """The one-line message for an out-of-memory error (MemoryError, torch's CPU `RuntimeError`, CUDA's
    `OutOfMemoryError`), or None when `e` is another error, which is not caught."""
    if isinstance(e, MemoryError):
        what = "MemoryError"
    elif type(e).__name__ == "OutOfMemoryError" or (isinstance(e, RuntimeError)
                                                   and any(m in str(e) for m in OOM_MARKERS)):
        lines = str(e).strip().splitlines()
        what = lines[0][:120] if lines else type(e).__name__
    else:
        return None
    return f"out of memory ({what}); {OOM_ADVICE}"


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    return f"multiglance: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    import warnings

    warnings.formatwarning = _one_line_warning  # a skipped file is one line, not a source listing
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except Stopped as e:  # SIGINT / SIGTERM: the checkpoint is saved; 128 + the signal's number, as shells do
        print(f"multiglance: {e}", file=sys.stderr)
        return e.exit_code
    except UserError as e:
        print(f"multiglance: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("multiglance: interrupted", file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError) as e:  # torch.cuda.OutOfMemoryError is a RuntimeError
        message = out_of_memory(e)
        if message is None:
            raise
        print(f"multiglance: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
