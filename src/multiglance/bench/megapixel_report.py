"""The megapixel section of docs/RESULTS.md, rebuilt from docs/results/megapixel-mnist*.json alone
(`multiglance bench megapixel --report-only`), its accuracy-FLOPs plot, and the figure of where glance 1 looks.

The published methods' training recipes (RECIPES) are quoted beside ours, with their source.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .. import results

# The published methods' training recipes, from their public code's defaults (not their papers' tables: the
# search tools of the sessions that wrote this returned the papers' abstracts only, and numbers from memory are
# not quoted). They put our CPU budgets in context.
RECIPES: list[dict] = [
    {"method": "ATS (Katharopoulos & Fleuret 2019)", "source": "github.com/idiap/attention-sampling, "
     "scripts/mnist.py and docs/examples.md",
     "recipe": "attention on a 0.12-scale view (0.2 for the 500x500 variant), 10 sampled 50x50 patches, "
               "Adam lr 1e-3, batch 128, 500 epochs, entropy regulariser 1e-4"},
    {"method": "IPS (Bergner et al. 2023)", "source": "github.com/benbergner/ips, config/mnist_config.yml",
     "recipe": "all 900 patches of 50x50 (stride 50) scored by the full-resolution ResNet-18 encoder without "
               "gradient, the best M=5 kept, AdamW lr 1e-3 with 10 warm-up epochs, batch 16, 150 epochs"},
]
TARGETS = {500: 0.99, 1500: 0.98}  # issue 13: test accuracy with the model's own inference rule
RULES = {"weights": "glance-1 weights", "equal": "equal votes"}


def glance_figure(model, split, k: int, path: Path, n: int = 4) -> None:
    """Glance 1's weights over the first `n` canvases of `split`, the digit boxes (green: the label's class, red:
    the others) and the top-k patches glance 2 reads (yellow, dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    n = min(n, len(split))
    canvas = split.render(torch.arange(n))  # (n, 1, S, S) uint8
    with torch.no_grad():
        weights = model.patch_weights(canvas)  # (n, P)
        _, index = model.infer(canvas, "hard", k)  # (n, k)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False)
    boxes, pb = split.boxes(torch.arange(n)), model.patch_boxes()
    for i, ax in enumerate(axes[0]):
        ax.imshow(canvas[i, 0].numpy(), cmap="gray", vmin=0, vmax=255)
        ax.imshow(weights[i].view(*model.grid).numpy(), cmap="magma", alpha=0.45, interpolation="nearest",
                  extent=(0, split.size, split.size, 0))
        for j, (x0, y0, x1, y1) in enumerate(boxes[i].tolist()):
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.2, ec="lime" if j < 3 else "red"))
        for p in index[i].tolist():
            x0, y0, x1, y1 = pb[p].tolist()
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1, ec="yellow", ls="--"))
        ax.set_title(f"label {split.labels[i].item()}", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def accuracy_plot(recs: list[dict], path: Path) -> None:
    """Test accuracy against test-time FLOPs per image (one point per k, both rules), the (k, rule) chosen on
    validation as a star, the low-resolution CNN as a cross, the full-resolution CNN's FLOPs as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for r, colour in zip(recs, ("tab:blue", "tab:orange", "tab:green")):
        ks = [k for k in r["test_accuracy_by_k"]["weights"] if k in r["flops_by_k"]]
        x = [r["flops_by_k"][k] / 1e6 for k in ks]
        for rule, style in (("weights", "o-"), ("equal", "s:")):
            ax.plot(x, [100 * r["test_accuracy_by_k"][rule][k] for k in ks], style, ms=3, color=colour,
                    label=f"{r['dataset']}: two glances, {RULES[rule]}")
        ax.plot([r["flops_by_k"][str(r["top_k"])] / 1e6], [100 * r["accuracy_hard"]], "*", ms=11, color=colour,
                label=f"{r['dataset']}: chosen on validation (k={r['top_k']}, {r['combination']})")
        low = r.get("low_resolution_cnn")
        if low:
            ax.plot([low["flops"] / 1e6], [100 * low["accuracy"]], "x", ms=8, color=colour,
                    label=f"{r['dataset']}: low-res CNN")
        ax.axvline(r["full_flops"] / 1e6, color=colour, ls="--", lw=1, label=f"{r['dataset']}: full-res CNN FLOPs")
    ax.set_xscale("log")
    ax.set_xlabel("test MFLOPs per image (log)")
    ax.set_ylabel("test accuracy %")
    ax.legend(fontsize=5.5, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _row(r: dict) -> str:
    low = r.get("low_resolution_cnn") or {}
    full_ms = r.get("full_cpu_ms_per_image")
    return (f"| {r['dataset']} | {r['epochs']} | {r['train_seconds'] / 60:.1f} | {_pct(r['accuracy_hard'])} "
            f"({r['top_k']}, {r['combination']}) | {_pct(r['val_accuracy'])} | {_pct(low.get('accuracy'))} | "
            f"{_pct(r.get('digit_recall'))} | {r['test_flops_per_image'] / 1e6:.0f} | {r['full_flops'] / 1e9:.1f} | "
            f"1/{r['full_flops'] / r['test_flops_per_image']:.0f} | {r['peak_memory_mb']:.1f} | "
            f"{r['full_peak_memory_mb']:.0f} | 1/{r['full_peak_memory_mb'] / r['peak_memory_mb']:.0f} | "
            f"{r['cpu_ms_per_image']:.0f} | {'-' if full_ms is None else f'{full_ms:.0f}'} | "
            f"{r['train_step_peak_memory_mb']:.0f} ({r['train_step_batch']}) |")


def _k_table(r: dict) -> list[str]:
    ks = list(r["val_accuracy_by_k"]["weights"])
    rows = [f"| val %, {RULES[rule]} | " + " | ".join(_pct(r["val_accuracy_by_k"][rule][k]) for k in ks) + " |"
            for rule in RULES]
    rows += [f"| test %, {RULES[rule]} | " + " | ".join(_pct(r["test_accuracy_by_k"][rule].get(k)) for k in ks)
             + " |" for rule in RULES]
    flops = " | ".join(f"{r['flops_by_k'][k] / 1e6:.0f}" if k in r["flops_by_k"] else "-" for k in ks)
    return [f"{r['dataset']}:", "", "| k | " + " | ".join(ks) + " |", "|---|" + "---|" * len(ks), *rows,
            f"| MFLOPs | {flops} |", "", f"![where glance 1 looks]({r['dataset']}-glance1.png)", ""]


def _notes(r: dict) -> str:
    m, t = r["config"]["model"], r["config"]["train"]
    low = r.get("low_resolution_cnn")
    text = (f"- {r['dataset']} (`{r['preset']}`): training choice `{m['choice']}` with k={m['top_k']} + "
            f"{m['explore']} patches explored by `{m['explore_by']}`, equal-weight term x{t['uniform_weight']}, "
            f"batch {t['batch_size']}, {t['optimizer']} lr {t['lr']}, {r['epochs']} epoch(s), thumbnail "
            f"{m['thumb_size']}, glance 2 filters {m['channels']}, glance 1 filters {m['glance1_channels']}; "
            f"{r['params']:,} weights (full-resolution CNN {r['full_params']:,}); train-step activations kept for "
            f"backward {r['train_saved_activations_mb_per_step']:.0f} MB per batch vs "
            f"{r['full_train_saved_activations_mb_per_image']:.0f} MB per image for the full CNN.")
    if low:
        text += (f" Low-resolution CNN (`{low['preset']}`): filters {low['channels']} on a {low['input_size']}x"
                 f"{low['input_size']} view, {low['epochs']} epoch(s), validation {_pct(low['val_accuracy'])}%, "
                 f"test `{low['eval_command']}`.")
    if t.get("init_from"):
        text += (f" Curriculum: started from the weights of the run `{t['init_from']}` (the easy variant, same "
                 "MNIST training digits), whose training time is not counted here.")
    return text


def _target(r: dict) -> str | None:
    want = TARGETS.get(r["config"]["model"]["image_size"])
    if want is None:
        return None
    gap = 100 * (r["accuracy_hard"] - want)
    verdict = "met" if gap >= 0 else f"missed by {-gap:.1f} points"
    return f"{r['dataset']}: {_pct(r['accuracy_hard'])}% against >= {100 * want:.0f}%, {verdict}"


INTRO = ("Two glances on 1500x1500 (and 500x500, no noise) canvases of 5 MNIST digits, the label the class of 3 "
         "of them (ATS's benchmark), trained with `train.fit` (run folders that `multiglance eval` opens). Glance 1 "
         "scores 50x50 patches (stride 25) from a thumbnail of 0.16 of the canvas; glance 2 classifies only the k "
         "best non-overlapping patches; their answers are combined with glance 1's weights renormalised over them "
         "or with equal votes. The rule and k (1 to 10) are chosen on the validation canvases (MNIST training "
         "digits that no training canvas uses); the test canvases (MNIST's test digits) are read once per run, "
         "after training and that choice, by the saved model's own inference: the `multiglance eval` command "
         "under the table re-derives each test number. Costs are per test image on the CPU, both models in the "
         "same process (CPU time with the threads of the JSON's `threads`); memory is the peak resident memory a "
         "call adds, in a fresh single-thread process, input canvas included. FLOPs and their ratio: convolution "
         "and matrix-product FLOPs (PyTorch's counter); the resize, pooling, ReLU and normalisation are counted "
         "apart in docs/PERFORMANCE.md.")


def build_section(docs: Path) -> str:
    found = [r for r in results.read_results(Path(docs) / "results", "megapixel-mnist*.json")]
    current = [r for r in found if r.get("selection") == "val"]
    recs = [r for r in current if "quick" not in r["dataset"]] or current  # a --quick docs folder shows its own
    lines = ["## Megapixel MNIST (`make megapixel`; from the JSONs: `multiglance bench megapixel --report-only`)",
             "", INTRO, ""]
    old = sorted(r["file"] for r in found if r.get("selection") != "val")
    if old:
        lines += [f"(Not shown: {', '.join(old)}, written before validation selection; rerun them.)", ""]
    if not recs:
        return "\n".join(lines + ["(no results yet)"])
    head = ("| data set | epochs | train min | test acc % (k, rule) | val acc % | low-res CNN test acc % "
            "| glance-1 digit recall % (test) | MFLOPs/img ours | GFLOPs/img full CNN | FLOPs ratio "
            "| peak MB/img ours | peak MB/img full | memory ratio | CPU ms/img ours | CPU ms/img full "
            "| train-step peak MB (batch) |")
    lines += [head, "|" + "---|" * head.count(" |"), *map(_row, recs), ""]
    for r in recs:
        lines.append(f"- {r['dataset']}: {r['train_images']} training / {r['val_images']} validation / "
                     f"{r['test_images']} test canvases; chosen on validation: k={r['top_k']}, `{r['combination']}` "
                     f"({_pct(r['val_accuracy'])}%); test, read once: `{r['eval_command']}` (commit {r['commit']}).")
    lines += ["", "Data: canvases are rendered per batch (in `train.workers` DataLoader workers) from the sparse "
              "split ("
              + "; ".join(f"{r['dataset']} {r['train_split_mb']:.0f} MB for {r['train_images']} training canvases "
                          f"instead of {r['dense_train_split_mb']:,.0f} MB dense" for r in recs)
              + "); time spent waiting for data during training: "
              + "; ".join(f"{r['dataset']} {r['data_seconds']:.0f} s of {r['train_seconds']:.0f} s" for r in recs)
              + ".", ""]
    accuracy_plot(recs, Path(docs) / "megapixel-accuracy-flops.png")
    lines += ["![test accuracy against test-time FLOPs](megapixel-accuracy-flops.png)", "",
              "Accuracy (%) against k, hard top-k inference by the model's own `infer`, and the test-time MFLOPs of "
              "each k. The choice uses the validation rows only; the test rows are shown beside them.", ""]
    for r in recs:
        lines += _k_table(r)
    lines += [_notes(r) for r in recs]
    targets = [t for t in map(_target, recs) if t]
    if targets:
        lines += ["", "Targets (issue 13), test accuracy with the model's own inference rule: " + "; ".join(targets)
                  + ". The full-resolution CNN (conv blocks 32-64-128-128-128, max-pool stride 2) is measured, not "
                  "trained (hours per epoch on this CPU)."]
    lines += ["", "Published methods, for context (their recipes from their public code; their accuracy tables "
              "could not be retrieved with this project's tools, and numbers from memory are not quoted):", ""]
    lines += [f"- {r['method']}: {r['recipe']} ({r['source']})." for r in RECIPES]
    return "\n".join(lines)


def publish_section(docs: Path) -> None:
    """Rewrite the megapixel section of DOCS/RESULTS.md from DOCS/results/megapixel-mnist*.json."""
    results.replace_section(Path(docs) / "RESULTS.md", "megapixel", build_section(Path(docs)))
    print(f"updated the megapixel section of {Path(docs) / 'RESULTS.md'}")
