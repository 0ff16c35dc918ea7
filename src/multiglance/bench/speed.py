"""Speed benchmark: does the two-glance FLOP saving show on the clock, and does training use the machine?

    multiglance bench speed                          # the paper presets and the best beyond-the-report nets
    multiglance bench speed --quick --json runs/speed.json  # CI: the digits pair, a few repetitions, seconds
    multiglance bench speed --presets paper-cifar10-two --parts train infer

Everything is measured in one process and as ratios of timings taken side by side, interleaved repetition by
repetition, because the machine is shared and noisy: (1) a float32 matrix product's GFLOP/s, the machine's
measured peak; (2) a training step (training's own `train.train_step`, with the model, optimiser and schedule
of `train.loop.new_trainer`, fed uint8 batches to a model that reads uint8, as an epoch feeds them), its
images/s and GFLOP/s (PyTorch's FLOP counter, forward + backward), and its ratio to the peak measured just
before it; (3) eval forwards at batch 1 and 256 of the one-glance net and the two-glance net (hard), eager and
through `models.fast.FastInference`; the speed-up, the FLOP ratio, and speed-up / FLOP ratio; (4) the second
load of CIFAR-10 and Tiny ImageNet from the shared zips (the decoded-image cache). Medians after warm-up.
The JSON (`--json`, default docs/performance.json) has one row per preset; docs/PERFORMANCE.md cites it.
A contended machine measures the scheduler, not the nets: the run refuses to start, and refuses to write its JSON,
when the 1-minute load average is above `--max-load` (default: the number of cores; none for --quick).

"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..errors import UserError

# (one-glance, two-glance) pairs: the paper presets, then the best nets of the beyond-the-report issue
PAIRS = [("paper-cifar10-one", "paper-cifar10-two"), ("paper-cifar10-one-s2", "paper-cifar10-two-s2"),
         ("paper-tiny-one", "paper-tiny-two"), ("paper-tiny-one-s2", "paper-tiny-two-s2"),
         ("cifar10-one", "cifar10-two-fuse"), ("mnist60-one", "mnist60-two"), ("mnist100-one", "mnist100-two")]
QUICK_PAIRS = [("digits-one", "digits-two")]
DATASETS = ("cifar10", "tiny-imagenet")
PARTS = ("train", "infer", "data")


# ---- timing ---------------------------------------------------------------------------------------------------
# "cpu": this thread's CPU time (with one torch thread all the work runs in it), which leaves out the time the
# OS gives the core to other processes: on this shared machine the load average is often 8 times the cores.
# "wall": time.perf_counter, the only honest clock with several threads.
CLOCKS = {"cpu": time.thread_time, "wall": time.perf_counter}
_clock = time.perf_counter


def set_clock(name: str) -> str:
    """Use clock `name` ("cpu" needs one torch thread, else "wall" is used); returns the clock in use."""
    global _clock
    name = name if name == "wall" or torch.get_num_threads() == 1 else "wall"
    _clock = CLOCKS[name]
    return name


def _seconds(fn, n: int = 1) -> float:
    """Seconds per call of fn over n calls in a row, on the benchmark's clock."""
    start = _clock()
    for _ in range(n):
        fn()
    return (_clock() - start) / n


def matmul_peak(size: int = 1024, calls: int = 4) -> tuple[float, object]:
    """(GFLOP/s of `calls` float32 (size x size) products, the function that measures it again)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    flops = 2 * size ** 3

    def measure() -> float:
        return flops / _seconds(lambda: torch.mm(a, b), calls) / 1e9
    measure()  # warm-up
    return measure(), measure


# ---- training -------------------------------------------------------------------------------------------------
def train_speed(cfg, *, reps: int, warmup: int = 2, peak=None) -> dict:
    """Images/s and GFLOP/s of training's own step for `cfg` (`train.train_step`, with the model, optimiser and
    schedule of `train.loop.new_trainer`, fed by `epoch_batches` as an epoch is: uint8 to a model that reads
    uint8), each repetition after a peak measurement."""
    from ..data import Split
    from ..train import epoch as train_epoch
    from ..train.loop import new_trainer

    torch.manual_seed(0)
    m, b = cfg.model, cfg.train.batch_size
    n = b * (reps + warmup + 1)
    images = torch.randint(0, 256, (n, m.in_channels, m.image_size, m.image_size), dtype=torch.uint8)
    labels = torch.randint(0, m.num_classes, (n,))
    split = Split(images, labels, [str(i) for i in range(m.num_classes)])
    trainer = new_trainer(cfg, split)
    trainer.model.train()
    batches = train_epoch.epoch_batches(trainer, split, 0)

    def step(x, y):
        train_epoch.train_step(trainer, x, y)

    x, y = next(batches)
    with FlopCounterMode(display=False) as counter:
        step(x, y)
    flops = counter.get_total_flops()  # one step, forward + backward
    peak = peak or matmul_peak()[1]
    for _ in range(warmup):
        step(*next(batches))
    peaks, times = [], []
    for _ in range(reps):
        peaks.append(peak())
        start = _clock()
        step(*next(batches))  # the batch is drawn (augmented) inside the timing, as in train_one_epoch
        times.append(_clock() - start)
    ratios = [flops / t / 1e9 / p for t, p in zip(times, peaks)]
    t = statistics.median(times)
    return {"peak_gflops": statistics.median(peaks), "train_images_per_s": b / t, "train_gflops": flops / t / 1e9,
            "train_peak_ratio": statistics.median(ratios), "train_flops_per_image": flops / b, "batch_size": b}


# ---- inference ------------------------------------------------------------------------------------------------
def _eval_models(one_cfg, two_cfg):
    from ..models import build_model

    torch.manual_seed(0)
    one = build_model(one_cfg.model).eval().to(memory_format=torch.channels_last)
    two = build_model(two_cfg.model).eval().to(memory_format=torch.channels_last)
    two.inference, two.top_k = "hard", 1
    return one, two


@torch.no_grad()
def infer_speed(one, two, shape: tuple[int, ...], *, reps: int, calls1: int = 50, batch: int = 256,
                backend: str = "trace") -> dict:
    """Batch-1 latency and batch-`batch` throughput of one- and two-glance (hard), eager and fast, interleaved."""
    from ..models.fast import FastInference

    fast = {"one": FastInference(one, backend=backend), "two": FastInference(two, backend=backend)}
    paths = {"eager": {"one": one, "two": two}, "fast": fast}
    out: dict = {"fast_fallback": {k: f.fallback_reason for k, f in fast.items()}}
    for b, calls in ((1, calls1), (batch, 1)):
        x = torch.rand(b, *shape).contiguous(memory_format=torch.channels_last)
        for path, fns in paths.items():
            for fn in fns.values():  # warm-up (and trace) both before timing either
                for _ in range(3):
                    fn(x)
            t = {"one": [], "two": []}
            for _ in range(reps):
                for k in ("one", "two"):
                    t[k].append(_seconds(lambda f=fns[k]: f(x), calls))
            ratio = statistics.median([a / c for a, c in zip(t["one"], t["two"])])
            for k in ("one", "two"):
                out[f"{k}_{path}_seconds_batch{1 if b == 1 else batch}"] = statistics.median(t[k])
            out[f"speedup_{path}_batch{1 if b == 1 else batch}"] = ratio
    out["fast_fallback"] = {k: f.fallback_reason for k, f in fast.items()}
    return out


# ---- data -----------------------------------------------------------------------------------------------------
def data_speed(names=DATASETS) -> list[dict]:
    """Seconds (wall and CPU) to load train + test of each data set a second time (the first fills the cache)."""
    from ..data import load_split
    from ..errors import DataError

    rows = []
    for name in names:
        try:
            start = time.perf_counter()
            n = sum(len(load_split(name, None, s)) for s in ("train", "test"))
            first = time.perf_counter() - start
            start, cpu = time.perf_counter(), time.process_time()
            for s in ("train", "test"):
                load_split(name, None, s)
            rows.append({"dataset": name, "images": n, "first_load_s": first,
                         "second_load_s": time.perf_counter() - start, "second_load_cpu_s": time.process_time() - cpu})
        except DataError as e:
            rows.append({"dataset": name, "error": str(e)})
    return rows


# ---- the benchmark --------------------------------------------------------------------------------------------
def run_speed(pairs, *, reps: int, parts=PARTS, quick: bool = False, clock: str = "cpu", backend: str = "trace",
              log=print) -> dict:
    from ..allocator import tune_allocator
    from ..evaluate import flops_per_image
    from ..models import get_preset

    allocator = tune_allocator()
    record = {"benchmark": "speed", "clock": set_clock(clock), "quick": quick, "fast_backend": backend,
              "command": " ".join(["multiglance", *sys.argv[1:]]),
              "device": "cpu", "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
              "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "python": platform.python_version(), "allocator": allocator, "reps": reps,
              "loadavg_start": list(os.getloadavg()), "rows": [], "data": []}
    peak_now, peak = matmul_peak(512 if quick else 1024)
    record["peak_gflops"] = peak_now
    for one_name, two_name in pairs:
        one_cfg, two_cfg = get_preset(one_name), get_preset(two_name)
        shape = (two_cfg.model.in_channels, two_cfg.model.image_size, two_cfg.model.image_size)
        rows = {"one": {"preset": one_name, "kind": "one", "family": one_name},
                "two": {"preset": two_name, "kind": "two", "family": one_name}}
        for kind, cfg in (("one", one_cfg), ("two", two_cfg)):
            if quick:
                cfg.train.batch_size = min(cfg.train.batch_size, 32)
            if "train" in parts:
                rows[kind] |= train_speed(cfg, reps=reps, warmup=1 if quick else 2, peak=peak)
            rows[kind]["peak_gflops"] = rows[kind].get("peak_gflops", peak_now)
        if "infer" in parts:
            one, two = _eval_models(one_cfg, two_cfg)
            f1, f2 = flops_per_image(one, shape), flops_per_image(two, shape)
            s = infer_speed(one, two, shape, reps=reps, calls1=10 if quick else 50, batch=32 if quick else 256,
                            backend=backend)
            nb = 32 if quick else 256
            for kind, fl in (("one", f1), ("two", f2)):
                rows[kind] |= {"test_flops_per_image": fl,
                               "latency_ms_batch1": s[f"{kind}_fast_seconds_batch1"] * 1e3,
                               "latency_ms_batch1_eager": s[f"{kind}_eager_seconds_batch1"] * 1e3,
                               f"images_per_s_batch{nb}": nb / s[f"{kind}_fast_seconds_batch{nb}"],
                               f"images_per_s_batch{nb}_eager": nb / s[f"{kind}_eager_seconds_batch{nb}"],
                               "fast_fallback": s["fast_fallback"][kind]}
            ratio = f1 / f2
            rows["two"] |= {"flop_ratio": ratio,
                            "speedup_batch1": s["speedup_fast_batch1"],
                            "speedup_batch256": s[f"speedup_fast_batch{nb}"],
                            "speedup_over_flop_ratio_batch1": s["speedup_fast_batch1"] / ratio,
                            "speedup_over_flop_ratio_batch256": s[f"speedup_fast_batch{nb}"] / ratio,
                            "speedup_batch1_eager": s["speedup_eager_batch1"],
                            "speedup_batch256_eager": s[f"speedup_eager_batch{nb}"],
                            "throughput_batch": nb}
        record["rows"] += [rows["one"], rows["two"]]
        log(format_rows([rows["one"], rows["two"]], header=not record["rows"][:-2]))
    if "data" in parts:
        record["data"] = data_speed()
        for d in record["data"]:
            log(f"data {d['dataset']}: " + (d["error"] if "error" in d else
                f"{d['images']} images, first load {d['first_load_s']:.2f} s, second {d['second_load_s']:.2f} s"))
    record["loadavg_end"] = list(os.getloadavg())
    return record


COLUMNS = [("preset", "{}"), ("peak_gflops", "{:.1f}"), ("train_images_per_s", "{:.0f}"),
           ("train_gflops", "{:.1f}"), ("train_peak_ratio", "{:.2f}"), ("latency_ms_batch1", "{:.3f}"),
           ("latency_ms_batch1_eager", "{:.3f}"), ("images_per_s_batch256", "{:.0f}"), ("flop_ratio", "{:.2f}"),
           ("speedup_batch1", "{:.2f}"), ("speedup_batch256", "{:.2f}"), ("speedup_over_flop_ratio_batch1", "{:.2f}"),
           ("speedup_over_flop_ratio_batch256", "{:.2f}")]
SHORT = {"peak_gflops": "peak GF/s", "train_images_per_s": "train img/s", "train_gflops": "train GF/s",
         "train_peak_ratio": "train/peak", "latency_ms_batch1": "ms b1 fast", "latency_ms_batch1_eager": "ms b1 eager",
         "images_per_s_batch256": "img/s b256", "flop_ratio": "FLOP ratio", "speedup_batch1": "speed-up b1",
         "speedup_batch256": "speed-up b256", "speedup_over_flop_ratio_batch1": "/FLOPs b1",
         "speedup_over_flop_ratio_batch256": "/FLOPs b256"}


def format_rows(rows: list[dict], header: bool = True, markdown: bool = False) -> str:
    cells = [[fmt.format(r[k]) if r.get(k) is not None else "" for k, fmt in COLUMNS] for r in rows]
    names = [SHORT.get(k, k) for k, _ in COLUMNS]
    if markdown:
        lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)] if header else []
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells])
    widths = [max(len(n), *(len(c[i]) for c in cells)) for i, n in enumerate(names)]
    lines = ["  ".join(n.rjust(w) for n, w in zip(names, widths))] if header else []
    return "\n".join(lines + ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells])


def markdown(record: dict) -> str:
    """The JSON record as Markdown: the measurement conditions, the table, the data-load times."""
    load = f"{record['loadavg_start'][0]:.1f} at the start, {record['loadavg_end'][0]:.1f} at the end"
    lines = [f"`{record['command']}`: {record['cpu_count']} CPU cores, {record['threads']} torch thread(s), "
             f"{record['clock']} clock, {record['reps']} repetitions (medians), torch {record['torch']}, allocator "
             f"{record['allocator']}, fast path `{record.get('fast_backend', 'trace')}`, GPU: "
             f"{record['gpu'] or 'none'}; load average {load}.", "", format_rows(record["rows"], markdown=True)]
    if record["data"]:
        lines += ["", "| data set | images (train + test) | first load s | second load s (wall) "
                  "| second load s (CPU) |",
                  "|---|---|---|---|---|"]
        lines += [f"| {d['dataset']} | {d.get('images', '')} | {d.get('first_load_s', 0):.2f} | "
                  f"{d.get('second_load_s', 0):.2f} | {d.get('second_load_cpu_s', 0):.2f} |" if "error" not in d
                  else f"| {d['dataset']} | {d['error']} | | | |" for d in record["data"]]
    return "\n".join(lines)


def _pairs_for(names: list[str]) -> list[tuple[str, str]]:
    from ..models import get_preset, list_models

    known = {two: one for one, two in PAIRS + QUICK_PAIRS} | {one: one for one, _ in PAIRS + QUICK_PAIRS}
    pairs = []
    for name in names:
        if name not in list_models():
            raise UserError(f"unknown preset {name!r}; `multiglance presets` lists them")
        one = known.get(name) or name.replace("-two", "-one", 1)
        if one not in list_models() or get_preset(one).model.kind != "one":
            raise UserError(f"no one-glance partner for {name!r} (tried {one!r}); name a two-glance preset of "
                            f"{', '.join(t for _, t in PAIRS)}")
        two = next((t for o, t in PAIRS + QUICK_PAIRS if o == name), name)
        if (one, two) not in pairs:
            pairs.append((one, two))
    return pairs


def cmd_speed(args) -> None:
    from .common import check_load

    if args.threads:
        torch.set_num_threads(args.threads)
    # --quick proves the pipeline (CI) and publishes nothing: no load limit unless one is given
    default = float("inf") if args.quick else float(os.cpu_count() or 1)
    max_load = args.max_load if args.max_load is not None else default
    pairs = _pairs_for(args.presets) if args.presets else (QUICK_PAIRS if args.quick else PAIRS)
    check_load(max_load, "before the run")
    parts = args.parts or (("train", "infer") if args.quick else PARTS)
    reps = args.reps or (3 if args.quick else 7)
    record = run_speed(pairs, reps=reps, parts=parts, quick=args.quick, clock=args.clock, backend=args.backend)
    check_load(max_load, "at the end of the run (nothing written)")
    record["max_load"] = max_load if max_load != float("inf") else None
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"load average {record['loadavg_start'][0]:.1f} at the start, {record['loadavg_end'][0]:.1f} at the end "
          f"({record['cpu_count']} CPUs, {record['threads']} threads, {record['clock']} clock); JSON in {path}")


def register(subparsers) -> None:
    from .common import bench_subparsers

    p = bench_subparsers(subparsers).add_parser(
        "speed", help="training GFLOP/s against the machine's peak; two- vs one-glance test-time speed-up")
    p.add_argument("--quick", action="store_true", help="the digits pair, small batches, 3 repetitions (CI)")
    p.add_argument("--json", default="docs/performance.json", help="where to write the JSON record")
    p.add_argument("--presets", nargs="+", help="presets to measure, each with its one-glance partner "
                   "(default: the paper presets and the best beyond-the-report nets)")
    p.add_argument("--parts", nargs="+", choices=PARTS, help="what to measure (default: all; --quick: train infer)")
    p.add_argument("--reps", type=int, help="timed repetitions per measurement (default 7; --quick 3)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    p.add_argument("--clock", choices=tuple(CLOCKS), default="cpu", help="cpu: this thread's CPU time, robust "
                   "to other processes' load (needs --threads 1); wall: elapsed time")
    p.add_argument("--backend", choices=("trace", "optimize", "compile"), default="trace",
                   help="the fast test-time path (models/fast.py) measured beside eager (default trace)")
    p.add_argument("--max-load", type=float, help="refuse to measure or publish above this 1-minute load "
                   "average (default: the number of cores; --quick: no limit)")
    p.set_defaults(func=cmd_speed)
