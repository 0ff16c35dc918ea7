"""Side-by-side comparison of run folders: one table of each run's last-epoch validation accuracy (from its
`metrics.jsonl`; the test split is read only by `multiglance eval RUN`), and a PNG of training loss and validation
accuracy against iterations for all runs (the report's figures 4 to 7).
"""
from __future__ import annotations

from pathlib import Path

from . import runs


def summary(run_dir: Path) -> dict:
    """What a run's metrics say: its last epoch's validation accuracy (hard, soft) and the training time."""
    cfg = runs.load_config(run_dir)
    epochs = [r for r in runs.read_metrics(run_dir) if r.get("kind") == "epoch"]
    last = epochs[-1] if epochs else {}
    return {"run": str(run_dir), "preset": cfg.preset, "model": cfg.model.kind, "epochs": len(epochs),
            "val_acc_hard": last.get("val_acc_hard"), "val_acc_soft": last.get("val_acc_soft"),
            "train_seconds": sum(r.get("train_seconds", 0.0) for r in epochs)}


def input_shape(cfg) -> tuple[int, int, int]:
    """(C, H, W) of the images a run's model reads: W is model.image_width when set (non-square images)."""
    m = cfg.model
    return m.in_channels, m.image_size, m.image_width or m.image_size


def compare_row(run_dir: Path) -> dict:
    """One row of `multiglance compare`: `summary`, with the saved model's FLOPs per image (convolutions and matrix
    products, and apart every other op: `flops.flop_counts`) and parameters."""
    from .flops import flop_counts_per_image

    model, cfg = runs.load_run(run_dir)
    flops = flop_counts_per_image(model, input_shape(cfg))
    return summary(Path(run_dir)) | {"flops_per_image": flops.conv_matmul, "other_flops_per_image": flops.other,
                                     "params": sum(p.numel() for p in model.parameters())}


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A Markdown table; columns are (key, header, format)."""
    def cell(v, fmt):
        return "-" if v is None else format(v, fmt) if fmt else str(v)
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(k), f) for k, _, f in columns) + " |" for r in rows]
    return "\n".join(lines)


COLUMNS = [("run", "run", ""), ("preset", "preset", ""), ("model", "model", ""), ("epochs", "epochs", "d"),
           ("acc_hard", "acc (hard)", ".4f"), ("acc_soft", "acc (soft)", ".4f"),
           ("test_flops_per_image", "MFLOPs/img (conv+matmul)", ""),
           ("test_other_flops_per_image", "other MFLOPs/img", ""), ("params", "params", ","),
           ("latency_ms_batch1", "ms/img (b=1)", ".3f"), ("images_per_s_batch256", "img/s (b=256)", ".0f"),
           ("train_seconds", "train s", ".0f")]  # `multiglance eval`'s table (test or val, as --split says)

COMPARE_HEADER = ("validation accuracy of each run's last epoch (its metrics.jsonl); the test split is read only "
                  "by `multiglance eval RUN`. MFLOPs: convolutions and matrix products (PyTorch's counter); other: "
                  "resize, pooling, ReLU, normalisation, grid_sample, ... at the per-element costs of flops.py")
COMPARE_COLUMNS = [("run", "run", ""), ("preset", "preset", ""), ("model", "model", ""), ("epochs", "epochs", "d"),
                   ("val_acc_hard", "val acc (hard, last epoch)", ".4f"),
                   ("val_acc_soft", "val acc (soft, last epoch)", ".4f"),
                   ("mflops_per_image", "MFLOPs/img (conv+matmul)", ".2f"),
                   ("other_mflops_per_image", "other MFLOPs/img", ".2f"), ("params", "params", ","),
                   ("train_seconds", "train s", ".0f")]


def compare_table(run_dirs: list[Path]) -> str:
    """`multiglance compare`'s output: the header line, then one row per run."""
    rows = [r | {"mflops_per_image": r["flops_per_image"] / 1e6, "other_mflops_per_image": r["other_flops_per_image"]
                 / 1e6} for r in map(compare_row, run_dirs)]
    return COMPARE_HEADER + "\n\n" + table(rows, COMPARE_COLUMNS)


def plot_curves(run_dirs: list[Path], out_png: Path, title: str = "") -> None:
    """Training loss and validation accuracy against iterations, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for run_dir in run_dirs:
        records = runs.read_metrics(run_dir)
        label = runs.load_config(run_dir).preset + f" ({Path(run_dir).name})"
        train = [r for r in records if r.get("kind") == "train"]
        epochs = [r for r in records if r.get("kind") == "epoch"]
        line, = ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], lw=0.8, label=label)
        ax_acc.plot([r["step"] for r in epochs], [r["val_acc_hard"] for r in epochs], "o-", color=line.get_color(),
                    label=label + (" hard" if any("val_acc_soft" in r for r in epochs) else ""))
        if any("val_acc_soft" in r for r in epochs):
            ax_acc.plot([r["step"] for r in epochs], [r["val_acc_soft"] for r in epochs], "x--",
                        color=line.get_color(), label=label + " soft")
    ax_loss.set(xlabel="iteration", ylabel="training loss", title="training loss")
    ax_acc.set(xlabel="iteration", ylabel="validation accuracy", title="validation accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
