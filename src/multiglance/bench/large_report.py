"""The `large` section of docs/RESULTS.md, rebuilt from JSON alone (`bench large`): docs/results/large-scenes.json
(trained, validation-selected) and docs/benchmarks/large-{speed,memory}.json (measurements that select nothing)."""
from __future__ import annotations

import json
from pathlib import Path

TARGETS = {  # issue 13's targets, checked against the numbers
    "memory_mb": 3 * 1024, "memory_ratio": 1.10, "data_wait": 0.10, "speed_over_flops": 0.5, "scenes_gap": 5.0,
}


def part_folder(part: str) -> str:
    """Where a part's JSON lives under docs/: trained results in results/, pure measurements in benchmarks/."""
    return "results" if part == "scenes" else "benchmarks"


def _load(docs: Path, part: str, quick: bool) -> dict | None:
    path = docs / part_folder(part) / f"large-{part}{'-quick' if quick else ''}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _verdict(ok: bool, detail: str) -> str:
    return f"**met** ({detail})" if ok else f"**missed** ({detail})"


def memory_lines(m: dict) -> list[str]:
    small, large = m["runs"]
    lines = [f"### Training on a folder of {m['size']}x{m['size']} JPEGs (`large-two`, batch {m['batch']}, "
             f"{m['patches']} patches, glance 2 on top {m['config']['model']['top_k']} + "
             f"{m['config']['model']['explore']} explored)", "",
             "| training JPEGs | steps | peak memory (PSS, process + workers) | data wait / step time | images/s |",
             "|---|---|---|---|---|"]
    for r in m["runs"]:
        lines.append(f"| {r['images']:,} | {r['steps']} | {r['peak_mb']:,.0f} MB | {100 * r['data_wait_share']:.1f}% "
                     f"| {r['images_per_s']:.1f} |")
    worst_wait = max(r["data_wait_share"] for r in m["runs"])
    ratio = m["peak_ratio_large_to_small"]
    peak = _verdict(large["peak_mb"] < TARGETS["memory_mb"], f"{large['peak_mb']:,.0f} MB")
    same = _verdict(abs(ratio - 1) <= TARGETS["memory_ratio"] - 1, f"{ratio:.3f}x")
    wait = _verdict(worst_wait < TARGETS["data_wait"], f"{100 * worst_wait:.1f}%")
    lines += ["", f"- Peak under 3 GB: {peak}; the two peaks within 10%: {same}; data wait under 10% of step time: "
              f"{wait}.",
              f"- One training step's own memory, measured at batch 1 and 2 and extrapolated to {m['batch']}: "
              f"{m['train_step_mb_topk_extrapolated']:,.0f} MB with top-k training, "
              f"{m['train_step_mb_soft_extrapolated']:,.0f} MB with the report's soft training (glance 2 with "
              f"gradients on all {m['patches']} patches), which this machine cannot run at batch {m['batch']}."]
    return lines


def speed_lines(s: dict) -> list[str]:
    lines = [f"### Inference against the full-resolution CNN (one process, side by side, {s['threads']} threads)", "",
             "| image | patches (k) | MFLOPs two / full | FLOP ratio | batch | ms/image two | ms/image full | speed-up "
             "| speed-up / FLOP ratio | end to end with JPEG decode, two / full |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    misses, total = [], 0
    for r in s["rows"]:
        for b in sorted(int(k.split("_b")[1]) for k in r if k.startswith("speedup_b")):
            ratio = r[f"speedup_over_flop_ratio_b{b}"]
            total += 1
            if ratio < TARGETS["speed_over_flops"]:
                misses.append(f"{r['size']} at batch {b}: {ratio:.3f}")
            lines.append(f"| {r['size']}x{r['size']} | {r['patches']} ({r['top_k']}) | {r['mflops_two']:,.0f} / "
                         f"{r['mflops_full']:,.0f} | {r['flop_ratio']:.0f} | {b} | {r[f'ms_per_image_two_b{b}']:.1f} | "
                         f"{r[f'ms_per_image_full_b{b}']:.0f} | {r[f'speedup_b{b}']:.0f}x | {ratio:.3f} | "
                         f"{r[f'end_to_end_ms_two_b{b}']:.1f} / {r[f'end_to_end_ms_full_b{b}']:.0f} ms |")
    detail = (f"{total - len(misses)} of {total} rows; below 0.5: {', '.join(misses)}" if misses
              else f"all {total} rows")
    lines += ["", f"- Two-glance inference at least 0.5 x the FLOP ratio faster: {_verdict(not misses, detail)}. "
              "The JPEG decode (one image of that size, Pillow) is included in the end-to-end times. FLOPs and their "
              "ratio: convolutions and matrix products (PyTorch's counter)."]
    return lines


CHANCE = 0.10  # the scenes' 10 CIFAR-10 classes
USEFUL = 0.30  # below this test accuracy for both models, the section says neither is useful yet


def _from_chance(acc: float) -> str:
    points = 100 * (acc - CHANCE)
    if abs(points) < 1:
        return "within a point of chance"
    return f"{abs(points):.2f} points {'above' if points > 0 else 'below'} chance"


def below_useful_text(two: dict, one: dict) -> str:
    """The sentence for scenes where both models are below `USEFUL`: each one's test accuracy against chance,
    and which is ahead and by how much, as the numbers say."""
    a2, a1 = two["accuracy_hard"], one["accuracy_hard"]
    gap = 100 * (a2 - a1)
    if abs(gap) < 0.005:
        lead = "the two are level"
    else:
        lead = f"the {'two-glance model' if gap > 0 else 'one-glance net'} is {abs(gap):.2f} points ahead"
    return (f"Chance is {100 * CHANCE:.0f}%. At this budget ({two['epochs']} epochs) neither model is useful yet: "
            f"the two-glance model is at {100 * a2:.2f}% on test ({_from_chance(a2)}), the one-glance net, which "
            f"sees the object as an 8x8 blob, at {100 * a1:.2f}% ({_from_chance(a1)}); {lead}. Longer training is "
            "the next step.")


def scenes_lines(c: dict) -> list[str]:
    two, one = c["scenes-two"], c["scenes-one"]
    lines = ["### Photo scenes (`scenes-cifar10-512`: a 64x64 CIFAR-10 object in a 512x512 scene of Tiny ImageNet "
             "photographs)", "",
             f"Split sizes: {two['train_images']:,} train / {two['val_images']:,} validation / {two['test_images']:,} "
             "test scenes; test read once per run, after training, by `multiglance eval RUN`.", "",
             "| model | epochs | val % | test % | MFLOPs per test image | params | train min |", "|---|---|---|---|---|---|---|"]
    for name, r in (("two glances, top 3 patches (`scenes-two`)", two), ("one glance on the 64x64 view (`scenes-one`)", one)):
        lines.append(f"| {name} | {r['epochs']} | {100 * r['val_accuracy_hard']:.1f} | {100 * r['accuracy_hard']:.1f} | "
                     f"{r['test_flops_per_image'] / 1e6:.1f} | {r['params']:,} | {r['train_seconds'] / 60:.1f} |")
    if two.get("curriculum"):
        lines += ["", f"`scenes-two` started from a curriculum of the same model on smaller scenes ("
                  f"{'; '.join(two['curriculum'])}), as megapixel MNIST needed; without it, it stayed at chance (10% "
                  "validation, loss 2 ln 10) for the 2 epochs it was given."]
    gap = c["gap_points"]
    detail = f"{gap:+.1f} points; convolution and matrix-product FLOPs one / two = {c['flop_ratio_one_over_two']:.2f}"
    if max(two["accuracy_hard"], one["accuracy_hard"]) < USEFUL:
        lines += ["", below_useful_text(two, one)]
    lines += ["", "- `large-two` beats `large-one` of equal test-time FLOPs by at least 5 points: "
              f"{_verdict(gap >= TARGETS['scenes_gap'], detail)}."]
    return lines


def build_section(docs: Path, quick: bool = False) -> str:
    parts = ["## Your own large images (`multiglance bench large`)", "",
             "Regenerate: `multiglance bench large` (one job at a time; it refuses to time anything above a load "
             "average of 2.5). Every number below comes from `docs/results/large-scenes.json` and "
             "`docs/benchmarks/large-{speed,memory}.json`."]
    if quick:
        parts += ["", "**Quick mode**: tiny budgets that only prove the pipeline works; these numbers mean nothing."]
    for part, render in (("memory", memory_lines), ("speed", speed_lines), ("scenes", scenes_lines)):
        record = _load(docs, part, quick)
        if record is not None:
            parts += ["", *render(record), "", f"(commit `{record['commit']}`, load average "
                      f"{record['load_average_1min']} when measured)"]
    return "\n".join(parts)
