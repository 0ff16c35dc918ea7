"""`multiglance report RUN_DIR`: one self-contained HTML page (every image embedded as a base64 PNG) with
the run's config, its metrics table, training curves, the analysis figures and the localisation scores.

    multiglance report runs/digits-two --out digits-two.html

The page needs nothing else: no network, no scripts from elsewhere. A small inline script marks `<body>`
with `data-images` / `data-images-loaded` once every image has decoded and `data-errors` with the number of
page errors, which the browser test reads back from a headless Chromium.
"""
from __future__ import annotations

import base64
import html
import json
import tempfile
from pathlib import Path

from .. import runs
from ..compare import plot_curves
from ..config import to_dict
from ..files import atomic_write
from .analyze import FIGURES, analyze_run

CAPTIONS = {
    "ranks": "The report's figure 2: one image, its patch centres numbered by glance 1's rank, the top patch "
             "outlined.",
    "heatmap": "Glance 1's weights spread over the pixels (each pixel: the total weight of the patches holding "
               "it), and the same for the normalised weights.",
    "grid": "The report's figure 3: cells laid out like the patch grid; each holds images whose top patch (the "
            "one hard inference classifies) is that cell.",
    "grid_normalized": "Figure 3 again, with the top patch taken from the normalised weights (the report's view).",
    "stats": "Per patch position: the mean of glance 1's weight over images, its standard deviation, and the "
             "share of images for which it is the top patch.",
}

# Records page errors before anything else runs, then marks <body> when every image has decoded.
_HEAD_SCRIPT = """<script>
window.__errors = 0;
window.addEventListener('error', function () { window.__errors += 1; }, true);
</script>"""
_TAIL_SCRIPT = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images', imgs.length);
  document.body.setAttribute('data-images-loaded', ok);
  document.body.setAttribute('data-errors', window.__errors);
});
</script>"""
_STYLE = """<style>
body { font-family: sans-serif; max-width: 1100px; margin: 1.5em auto; color: #222; }
table { border-collapse: collapse; font-size: 13px; margin: 0.5em 0 1em; }
td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 13px; color: #555; } pre { background: #f6f6f6; padding: 0.6em; font-size: 12px; }
</style>"""


def img_tag(png: Path, alt: str) -> str:
    data = base64.b64encode(Path(png).read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def table(rows: list[dict], columns: list[str], fmt: str = "{:.4f}") -> str:
    def cell(v):
        return "-" if v is None else fmt.format(v) if isinstance(v, float) else html.escape(str(v))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def localisation_table(loc: dict) -> str:
    names = ["model", "normalized", "random", "centre", "best"]
    rows = [{"measure": m, **{n: loc[m][n] for n in names}} for m in ("overlap", "contains_centre", "coverage")]
    return table(rows, ["measure", *names])


def build_html(run_dir: Path, summary: dict, figure_dir: Path, curves: Path | None) -> str:
    cfg = runs.load_config(run_dir)
    epochs = [r for r in runs.read_metrics(run_dir) if r.get("kind") == "epoch"]
    w = summary["weights"]
    gh, gw = summary["grid"]
    skipped = summary.get("skipped_images", 0)
    columns = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc_hard", "val_acc_soft", "lr", "train_seconds"]
    columns += ["skipped_images"] if any(r.get("skipped_images") for r in epochs) else []
    parts = [f"<h1>multiglance run: {html.escape(cfg.preset)}</h1>",
             f"<p>Run folder <code>{html.escape(str(run_dir))}</code>; analysed on {summary['images']} images of "
             f"{html.escape(summary['dataset'])} {html.escape(summary['split'])}"
             + (f" ({skipped} files skipped: they do not decode)" if skipped else "")
             + f"; hard-inference accuracy {summary['accuracy_hard']:.4f} (glance 2 on the top "
             f"{summary.get('top_k', 1)} patches).</p>",
             "<h2>Metrics</h2>",
             table(epochs, columns) if epochs else "<p>No epoch records.</p>"]
    if curves is not None:
        parts += ["<h2>Training curves</h2>", f"<figure>{img_tag(curves, 'training curves')}</figure>"]
    parts += ["<h2>Where glance 1 looks</h2>",
              f"<p>{gh}x{gw} patches of {summary['patch_size']} pixels, stride "
              f"{summary['patch_stride']}. Mean entropy of glance 1's weights {w['entropy_mean']:.3f} nats of at "
              f"most {w['entropy_max']:.3f} ({w['entropy_ratio']:.1%}); mean largest weight "
              f"{w['max_weight_mean']:.3f}; spread over images relative to the mean (std / mean, averaged over "
              f"positions) {w['relative_std_mean']:.3f}; {w['top_positions_used']} of {w['positions']} positions "
              f"are ever the top patch. The normalised weights' top agrees with the raw top on "
              f"{summary['normalized_top_agrees']:.1%} of images.</p>"]
    for key in ("stats", "ranks", "heatmap", "grid", "grid_normalized"):
        caption = CAPTIONS[key]
        if key.startswith("grid") and summary.get("grid_figure") == "most_used":
            caption += (f" The grid has {gh * gw} positions, too many cells to show: each row is one of the "
                        "positions most often on top, labelled (row, column): images.")
        parts.append(f"<figure>{img_tag(figure_dir / FIGURES[key], key)}<figcaption>{caption}"
                     "</figcaption></figure>")
    parts.append("<h2>Localisation</h2>")
    loc = summary.get("localisation")
    if loc:
        parts += ["<p>Share of images whose chosen patch overlaps the object box / contains its centre, and the "
                  "mean share of the box inside the patch; for glance 1's top patch (model), the normalised "
                  "weights' top, a random patch, the centre patch and the best patch per image.</p>",
                  localisation_table(loc),
                  f"<p>Accuracy when the top patch overlaps the object: {_pct(loc['accuracy_when_overlap'])}; "
                  f"when it does not: {_pct(loc['accuracy_when_no_overlap'])}.</p>"]
    else:
        why = summary.get("localisation_skipped") or "the data set has no object boxes, so it is not measured"
        parts.append(f"<p>Localisation skipped: {html.escape(why)}.</p>")
    parts += ["<h2>Config</h2>", f"<pre>{html.escape(json.dumps(to_dict(cfg), indent=1))}</pre>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>multiglance report: {html.escape(cfg.preset)}</title>{_STYLE}{_HEAD_SCRIPT}</head>\n<body>\n"
            + "\n".join(parts) + f"\n{_TAIL_SCRIPT}\n</body></html>\n")


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def write_report(run_dir: str | Path, out: str | Path | None = None, *, data: str | None = None,
                 split: str = "test", limit: int | None = None, k: int = 6) -> Path:
    """Analyse the run and write its HTML page to `out` (default RUN_DIR/report.html)."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "report.html"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        summary = analyze_run(run_dir, data=data, out=tmp, split=split, limit=limit, k=k)
        curves = None
        if any(r.get("kind") == "epoch" for r in runs.read_metrics(run_dir)):
            curves = tmp / "curves.png"
            plot_curves([run_dir], curves)
        text = build_html(run_dir, summary, tmp, curves).encode()
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda f: f.write(text))
    out.chmod(0o644)  # a page to share: readable by others (temporary files are created 0600)
    return out
