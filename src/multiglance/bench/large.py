"""Large images: a folder of large photos trains, evaluates and predicts in bounded memory, and the second
glance pays on real photographs with a small object. `multiglance bench large`.

    multiglance bench large                          # every part -> docs/{results,benchmarks}/large-*.json, RESULTS.md
    multiglance bench large --parts memory speed     # only some parts
    multiglance bench large --quick --docs runs/large-quick  # CI: small images, a few steps, seconds

Parts (one job at a time; each records the load average it ran at and refuses to publish above --max-load):
- memory: class folders of generated 1024x1024 JPEGs (a small shape on noise, `data.stream.make_shape_folder`),
  200 and 2,000 of them, each trained for one epoch with `large-two` at batch 16 in a child process
  (`multiglance train`, DataLoader workers streaming the files). Peak memory is the largest sum of the
  proportional set sizes (PSS) of the child and its workers, sampled every 50 ms; the share of step time spent
  waiting for data comes from the run's own metrics. Beside it, the training-step memory of the report's soft
  training (glance 2 with gradients on every patch) of the same model, measured at batch 1 and 2 and
  extrapolated linearly to batch 16 (it does not fit in this machine's memory at 16).
- speed: two-glance hard inference (large-two) against the full-resolution one-glance CNN (the house CNN with
  twice glance 2's filters and two more blocks, on the whole image) at 1024 and 1500, batch 1 and 32, measured
  side by side in one process: FLOPs (PyTorch's counter), median wall time, and the end-to-end time per image
  including decoding a JPEG of that size.
- scenes: `scenes-two` against `scenes-one` (equal test-time FLOPs: the one-glance net sees the scene at 1/8)
  on the photo benchmark `scenes-cifar10-512`, trained through `train.fit`, validation accuracy beside the test
  accuracy read once per run by the model's own inference path.
"""
from __future__ import annotations

import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from .. import results, runs
from ..config import apply_overrides, to_dict
from ..errors import UserError
from ..files import atomic_write
from .large_report import part_folder
from .memory import tree_pss_mb

PARTS = ("memory", "speed", "scenes")


# ---- memory of a whole training process ------------------------------------------------------------------------
def run_measured(argv: list[str], *, env: dict | None = None, timeout: float = 3600, every: float = 0.05) -> dict:
    """Run `argv`; return its exit code, wall seconds, stderr's last lines and the peak over time of the summed
    PSS of the process and its descendants (the DataLoader workers)."""
    start = time.perf_counter()
    err_path = Path(tempfile.gettempdir()) / f"multiglance-measure-{os.getpid()}.err"
    with open(err_path, "w") as err:
        child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env)
        peak = 0.0
        while child.poll() is None:
            peak = max(peak, tree_pss_mb(child.pid))
            if time.perf_counter() - start > timeout:
                child.kill()
            time.sleep(every)
    tail = err_path.read_text().strip().splitlines()[-3:]
    err_path.unlink(missing_ok=True)
    return {"returncode": child.returncode, "seconds": time.perf_counter() - start, "peak_mb": peak,
            "stderr": tail}


def photo_folder(root: Path, n: int, size: int) -> Path:
    """A class folder of n generated JPEGs of size x size (2 classes), made once and reused."""
    from ..data.synthetic_folders import make_shape_folder

    folder = root / f"photos-{size}-{n}"
    if not (folder / ".complete").exists():
        make_shape_folder(folder, n_per_class=n // 2, size=size, seed=0, n_test_per_class=max(1, n // 20))
        (folder / ".complete").write_text("")
    return folder


def train_memory(folder: Path, run_dir: Path, size: int, *, batch: int, workers: int, threads: int,
                 extra: list[str] = ()) -> dict:
    """One epoch of `large-two` on `folder` in a child process: peak memory (PSS of the process tree), wall
    time, and the data-wait share from the run's metrics."""
    import shutil

    shutil.rmtree(run_dir, ignore_errors=True)
    argv = [sys.executable, "-m", "multiglance", "train", "--preset", "large-two", "--data", str(folder),
            "--out", str(run_dir), "--epochs", "1", "--quiet", "--set", f"model.image_size={size}",
            "--set", f"train.batch_size={batch}", "--set", f"train.workers={workers}",
            "--set", "data.stream=true", *[a for e in extra for a in ("--set", e)]]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    m = run_measured(argv, env=env)
    if m["returncode"] != 0:
        raise UserError(f"training on {folder.name} failed: {' '.join(m['stderr'])}")
    epoch = next(r for r in runs.read_metrics(run_dir) if r.get("kind") == "epoch")
    return {"images": len(list((folder / "train").rglob("*.jpg"))), "peak_mb": round(m["peak_mb"], 1),
            "wall_seconds": round(m["seconds"], 1), "train_seconds": round(epoch["train_seconds"], 1),
            "data_seconds": round(epoch["data_seconds"], 2),
            "data_wait_share": round(epoch["data_seconds"] / max(epoch["train_seconds"], 1e-9), 4),
            "steps": epoch["step"], "images_per_s": round(epoch["images_per_s"], 2)}


def part_memory(work: Path, *, quick: bool, threads: int) -> dict:
    from ..evaluate import peak_memory_mb
    from ..models import get_preset

    size, counts, batch = (256, (48, 96), 8) if quick else (1024, (200, 2000), 16)
    rows = [train_memory(photo_folder(work, n, size), work / f"memory-run-{n}", size, batch=batch, workers=2,
                         threads=threads) for n in counts]
    cfg = apply_overrides(get_preset("large-two"), [f"model.image_size={size}", "model.in_channels=3",
                                                    "model.num_classes=2"])
    from ..config import derive

    derive(cfg, (3, size, size), ["a", "b"])
    soft = apply_overrides(copy.deepcopy(cfg), ["model.choice=soft"])
    topk_step = [peak_memory_mb(cfg, (3, size, size), batch=b, train=True) for b in (1, 2)]
    soft_step = [peak_memory_mb(soft, (3, size, size), batch=b, train=True) for b in (1, 2)]
    extrapolate = lambda m: m[0] + (m[1] - m[0]) * (batch - 1)  # noqa: E731  (linear in the batch)
    small, large = rows
    return {"size": size, "batch": batch, "runs": rows,
            "peak_ratio_large_to_small": round(large["peak_mb"] / small["peak_mb"], 3),
            "train_step_mb_topk_batch1_2": [round(v, 1) for v in topk_step],
            "train_step_mb_soft_batch1_2": [round(v, 1) for v in soft_step],
            "train_step_mb_soft_extrapolated": round(extrapolate(soft_step), 1),
            "train_step_mb_topk_extrapolated": round(extrapolate(topk_step), 1),
            "patches": cfg.model.patch_size and ((size - cfg.model.patch_size) // cfg.model.patch_stride + 1) ** 2,
            "config": to_dict(cfg)}


# ---- speed: two glances against the full-resolution CNN, side by side ------------------------------------------
def _median_seconds(fn, x: torch.Tensor, reps: int) -> float:
    with torch.no_grad():
        fn(x)
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def _jpeg_bytes(size: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = (rng.random((size, size, 3)) * 60 + 100).astype(np.uint8)  # a textured photo-sized image
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def part_speed(*, quick: bool, threads: int) -> dict:
    from ..config import derive
    from ..data.stream import decode_fitted
    from ..evaluate import count_flops
    from ..models import build_model, get_preset
    from ..models.megapixel import FULL_CHANNELS, full_resolution_cnn

    sizes, batches, reps = ((256,), (1, 4), 2) if quick else ((1024, 1500), (1, 32), 3)
    rows = []
    for size in sizes:
        cfg = apply_overrides(get_preset("large-two"), [f"model.image_size={size}"])
        derive(cfg, (3, size, size), [str(i) for i in range(10)])
        torch.manual_seed(0)
        two = build_model(cfg.model).eval().to(memory_format=torch.channels_last)  # as training leaves it
        full = full_resolution_cnn(image_size=size, in_channels=3).eval().to(memory_format=torch.channels_last)
        x1 = torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8)
        flops_two, flops_full = count_flops(two, x1), count_flops(full, x1.float() / 255)
        jpeg = _jpeg_bytes(size)
        decode = _median_seconds(lambda _: decode_fitted(jpeg, "bench", height=size, width=size), x1, reps * 3)
        row = {"size": size, "patches": two.num_patches, "top_k": two.top_k, "mflops_two": flops_two / 1e6,
               "mflops_full": flops_full / 1e6, "flop_ratio": flops_full / flops_two,
               "jpeg_decode_ms": decode * 1e3}
        for b in batches:
            x = torch.randint(0, 256, (b, 3, size, size), dtype=torch.uint8)
            t_two = _median_seconds(two, x, reps)
            chunk = min(b, 8)  # the full CNN runs the batch in chunks of 8 (per-image time is the same; the
            # activations of 32 images at 1500x1500 would need ~12 GB)
            t_full = _median_seconds(lambda z: [full(z[i:i + chunk].float().div(255).contiguous(
                memory_format=torch.channels_last)) for i in range(0, b, chunk)], x, reps)
            row |= {f"ms_per_image_two_b{b}": t_two / b * 1e3, f"ms_per_image_full_b{b}": t_full / b * 1e3,
                    f"speedup_b{b}": t_full / t_two,
                    f"speedup_over_flop_ratio_b{b}": t_full / t_two / row["flop_ratio"],
                    f"end_to_end_ms_two_b{b}": (t_two / b + decode) * 1e3,
                    f"end_to_end_ms_full_b{b}": (t_full / b + decode) * 1e3}
        rows.append({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()})
        del full
    return {"rows": rows, "threads": threads, "full_channels": list(FULL_CHANNELS)}


# ---- the photo benchmark --------------------------------------------------------------------------------------
CURRICULUM = ((128, 2), (256, 2))  # (scene size, epochs) before the 512x512 run, with --scenes-curriculum


def part_scenes(runs_dir: Path, *, quick: bool, epochs: int | None, progress: bool, curriculum: bool = False) -> dict:
    """scenes-two against scenes-one: each trained through `train.fit` (validating on the validation scenes),
    then validation accuracy and the test split, read once, by the saved model's own inference path."""
    from ..models import get_preset
    from .common import finished_run, shown_config, train_or_resume, val_and_test

    quick_sets = ["data.train_limit=64", "data.val_limit=32", "data.test_limit=32", "train.workers=0"]
    budget = (quick_sets + ["train.epochs=1"]) if quick else ([f"train.epochs={epochs}"] if epochs else [])
    out, start = {}, None
    for size, stage_epochs in CURRICULUM if curriculum else ():
        # a curriculum, as megapixel MNIST needed: the same model (patches of 64, thumbnail at 1/8, a conv scorer)
        # on small scenes first, where the object is a quarter (128) or a sixteenth (256) of the image
        cfg = apply_overrides(get_preset("scenes-two"), [
            f"data.name=scenes-cifar10-{size}", f"model.image_size={size}", "model.patch_size=64",
            "model.patch_stride=32", f"model.thumb_size={size // 8}", f"train.epochs={stage_epochs}",
            *([f"train.init_from={start}"] if start else []), *(quick_sets if quick else [])])
        stage = runs_dir / f"scenes-two-{size}{'-quick' if quick else ''}"
        if not train_or_resume(cfg, stage, progress):
            raise UserError(f"{stage.name} stopped early; run the same command again to resume it")
        start = stage
    for preset in ("scenes-two", "scenes-one"):
        cfg = get_preset(preset)
        apply_overrides(cfg, budget + ([f"train.init_from={start}"] if start and preset == "scenes-two" else []))
        run_dir = runs_dir / (preset + ("-curriculum" if start and preset == "scenes-two" else "")
                              + ("-quick" if quick else ""))
        _, cfg, n_train, done = finished_run(cfg, run_dir, progress)
        ev = val_and_test(run_dir)
        out[preset] = {k: ev[k] for k in ("val_accuracy_hard", "accuracy_hard", "test_flops_per_image", "params",
                                          "val_images", "test_images", "eval_command", "run_dir")} | {
            "train_images": n_train, "epochs": len(done),
            "train_seconds": round(sum(r["train_seconds"] for r in done), 1), "config": shown_config(cfg)}
        if preset == "scenes-two" and start:  # the curriculum's own epochs are not in train_seconds
            out[preset]["curriculum"] = [f"scenes-cifar10-{size}: {n} epochs" for size, n in CURRICULUM]
    two, one = out["scenes-two"], out["scenes-one"]
    out["gap_points"] = round(100 * (two["accuracy_hard"] - one["accuracy_hard"]), 2)
    out["flop_ratio_one_over_two"] = round(one["test_flops_per_image"] / two["test_flops_per_image"], 3)
    return out


# ---- publishing ---------------------------------------------------------------------------------------------------
def publish(docs: Path, name: str, record: dict, allow_dirty: bool) -> Path:
    """Trained results (scenes: validation-selected accuracy) go to docs/results/, measurements that select nothing
    (speed, memory) to docs/benchmarks/."""
    part = name.removesuffix("-quick")
    record = {"dataset": "large", "part": part, "commit": results.git_commit(),
              **({"selection": "val"} if part == "scenes" else {}),
              "load_average_1min": round(os.getloadavg()[0], 2), "threads": torch.get_num_threads(), **record}
    path = docs / part_folder(part) / f"large-{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"command": results.command_line(), **record}, indent=1) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))
    return path


def bench_large(args) -> None:
    from .common import check_load

    parts = args.parts or list(PARTS)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise UserError(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    if not (args.quick or args.report_only):
        results.require_clean(args.allow_dirty)
    docs, runs_dir = Path(args.docs), Path(args.runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    if not args.report_only:
        if not args.quick:
            check_load(args.max_load)
        for part in parts:
            start = time.perf_counter()
            if part == "memory":
                record = part_memory(runs_dir, quick=args.quick, threads=threads)
            elif part == "speed":
                record = part_speed(quick=args.quick, threads=threads)
            else:
                record = part_scenes(runs_dir, quick=args.quick, epochs=args.epochs, progress=not args.quiet,
                                     curriculum=args.scenes_curriculum)
            path = publish(docs, part + ("-quick" if args.quick else ""), record, args.allow_dirty)
            print(f"{part}: {time.perf_counter() - start:.0f} s -> {path}", flush=True)
    from .large_report import build_section

    results.replace_section(docs / "RESULTS.md", "large", build_section(docs, quick=args.quick))


def register(subparsers) -> None:
    from .common import add_publish_options, bench_subparsers

    p = bench_subparsers(subparsers).add_parser("large", help="large images: memory, data, speed, the photo scenes")
    p.add_argument("--parts", nargs="+", metavar="PART", help=f"some of: {', '.join(PARTS)} (default all)")
    p.add_argument("--quick", action="store_true", help="small images and budgets (CI): proves the pipeline")
    p.add_argument("--epochs", type=int, help="epochs of the scenes runs (default: the presets')")
    p.add_argument("--scenes-curriculum", action="store_true", help="start scenes-two from runs on 128x128 and "
                   "256x256 scenes (CURRICULUM)")
    add_publish_options(p, "runs/large")
    p.set_defaults(func=bench_large)
