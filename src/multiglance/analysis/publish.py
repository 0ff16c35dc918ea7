"""The analysis section of docs/RESULTS.md, regenerated from data: `multiglance analyze RUN --publish NAME`
stores the summary as docs/results/analysis/NAME.json (with the command, commit, config and how the run was
trained: its train / validation split sizes and `selection`), copies the figure-3 grid to
docs/analysis-NAME-grid.png, and rewrites the section from every JSON in that folder. Like every publishing
command it refuses a tree with uncommitted code unless told `--allow-dirty` (the JSON then says `-dirty`).
"""
from __future__ import annotations

import json
from pathlib import Path

from ..config import to_dict
from ..results import command_line, git_commit, read_results, replace_section, shown_path
from ..files import atomic_write
from ..runs import load_config, read_metrics
from .analyze import FIGURES

SECTION = "analysis"

CLAIM = ("The report judged its two-glance model mostly by looking at where glance 1 looks: its figure 2 marks "
         "one image's patches by rank, its figure 3 groups validation images by their top patch, and it read them "
         "as glance 1 looking at the object. It also found glance 1's raw weights nearly constant across images, "
         "so it showed them normalised per position (minus the position's mean, over its standard deviation). "
         "Below the same views are measured.")


def training_record(run_dir: Path, data: str | None = None) -> dict:
    """How the analysed run was trained: its training split's size (read as training reads it, `data` the
    root override), the validation images of its last epoch, and `selection` ("val" when every epoch was
    validated on the held-out split; None for runs from before there was one)."""
    from ..train import load_data

    cfg = load_config(run_dir)
    if data is not None:
        cfg.data.root = data
    (train,) = load_data(cfg, ("train",))
    epochs = [r for r in read_metrics(run_dir) if r.get("kind") == "epoch"]
    val = [r.get("val_images") for r in epochs]
    return {"selection": "val" if val and all(val) else None, "train_images": len(train),
            "val_images": val[-1] if val else None}


def weights_record(name: str) -> tuple[dict, dict]:
    """Shipped weights' config and how they were trained, from the result JSON they were exported with."""
    from ..weights import SHIPPED, load_weights

    _, cfg, record = load_weights(name)
    published = json.loads((SHIPPED.parent / "results" / record["published"]["result"]).read_text())
    return to_dict(cfg), {k: published.get(k) for k in ("selection", "train_images", "val_images")}


def publish(summary: dict, figure_dir: Path, run_dir: Path | None, name: str, docs: Path = Path("docs"),
            data: str | None = None, weights: str | None = None) -> Path:
    """Store one analysis of a run folder (or of shipped `weights`) as data, copy its grid figure into docs/,
    and regenerate the section."""
    if weights is not None:
        config, trained = weights_record(weights)
        record = {"command": command_line(), "commit": git_commit(), "config": config, **summary, **trained}
    else:
        record = {"command": command_line(), "commit": git_commit(), "config": to_dict(load_config(run_dir)),
                  **summary, "run": shown_path(str(run_dir)), **training_record(run_dir, data)}
    folder = docs / "results" / "analysis"
    folder.mkdir(parents=True, exist_ok=True)
    text = (json.dumps(record, indent=1) + "\n").encode()
    atomic_write(folder / f"{name}.json", lambda f: f.write(text))
    small_png(Path(figure_dir) / FIGURES["grid"], docs / f"analysis-{name}-grid.png")
    replace_section(docs / "RESULTS.md", SECTION, render(read_results(folder), docs))
    return folder / f"{name}.json"


def small_png(src: Path, dst: Path, max_width: int = 1400) -> None:
    """A copy of a figure small enough to commit: at most `max_width` wide, a 256-colour palette."""
    from PIL import Image

    with Image.open(src) as img:
        img = img.convert("RGB")
        if img.width > max_width:
            img = img.resize((max_width, round(img.height * max_width / img.width)), Image.LANCZOS)
        img.quantize(256, method=Image.Quantize.MEDIANCUT).save(dst, optimize=True)


def _f(v: float | None, pct: bool = True) -> str:
    return "-" if v is None else f"{v:.1%}" if pct else f"{v:.3f}"


def render(records: list[dict], docs: Path = Path("docs")) -> str:
    lines = ["## Where glance 1 looks", "", CLAIM, ""]
    lines += ["Localisation on each data set's labelled split (object boxes: the digit's exact box for cluttered "
              "digits, `val_annotations.txt` for Tiny ImageNet). *overlap*: the chosen patch meets the box; "
              "*contains centre*: it holds the box's centre; *coverage*: mean share of the box inside the patch. "
              "*model*: glance 1's top patch (what hard inference classifies); *normalised*: the top of the "
              "report's normalised weights; *random*: a uniformly random patch (exact expectation); *centre*: "
              "the patch nearest the image centre; *best*: the best patch for each image (the ceiling).", ""]
    lines += ["| run | data | images | acc (hard) | measure | model | normalised | random | centre | best |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        loc = r.get("localisation")
        if not loc:
            continue
        for i, m in enumerate(("overlap", "contains_centre", "coverage")):
            head = [r["preset"], r["dataset"], str(r["images"]), _f(r["accuracy_hard"])] if i == 0 else [""] * 4
            lines.append("| " + " | ".join(head + [m.replace("_", " ")] + [_f(loc[m][n]) for n in
                         ("model", "normalized", "random", "centre", "best")]) + " |")
    lines += ["", "Glance 1's weights (the report's \"nearly constant\" claim): mean entropy against its maximum "
              "log P, the mean largest weight, the spread of each position's weight over images relative to its "
              "mean (std / mean, averaged over positions), how many positions are ever the top patch, and how "
              "often the normalised weights' top agrees with the raw top.", "",
              "| run | entropy (nats) | of max | top weight | std / mean | positions on top | normalised top = raw top |",
              "|---|---|---|---|---|---|---|"]
    for r in records:
        w = r["weights"]
        lines.append(f"| {r['preset']} | {w['entropy_mean']:.3f} | {w['entropy_max']:.3f} | "
                     f"{w['max_weight_mean']:.3f} | {w['relative_std_mean']:.3f} | {w['top_positions_used']} of "
                     f"{w['positions']} | {_f(r['normalized_top_agrees'])} |")
    lines += [""]
    for r in records:
        name = Path(r["file"]).stem
        share = "; ".join(" ".join(f"{v:.2f}" for v in row) for row in r["weights"]["top_share"])
        verdict = ""
        loc = r.get("localisation")
        if loc:
            c = loc["coverage"]
            than = [n for n in ("random", "centre") if c["model"] > c[n]]
            compared = ("better than both baselines" if len(than) == 2 else f"better than the {than[0]} patch but "
                        f"not the {({'random', 'centre'} - set(than)).pop()} one" if than else "no better than either")
            n_miss = loc.get("images_without_overlap")
            verdict = (f"Its top patch holds {_f(c['model'])} of the object's box on average, against "
                       f"{_f(c['random'])} for a random patch and {_f(c['centre'])} for the centre one "
                       f"({compared}; the best patch would hold {_f(c['best'])}); it contains the box's centre in "
                       f"{_f(loc['contains_centre']['model'])} of images (random {_f(loc['contains_centre']['random'])}"
                       f", centre {_f(loc['contains_centre']['centre'])}). Accuracy is "
                       f"{_f(loc['accuracy_when_overlap'])} when the top patch overlaps the object and "
                       f"{_f(loc['accuracy_when_no_overlap'])} when it does not "
                       f"({n_miss} image{'' if n_miss == 1 else 's'}). ")
        w = r["weights"]
        verdict += (f"Are the raw weights nearly constant? Their entropy is {w['entropy_ratio']:.0%} of the maximum, "
                    f"the largest weight averages {w['max_weight_mean']:.3f} (uniform: {1 / w['positions']:.3f}), "
                    f"a position's weight varies over images by {w['relative_std_mean']:.2f} of its mean, and the "
                    f"normalised weights' top patch is the raw top in {_f(r['normalized_top_agrees'])} of images. ")
        lines += [f"**{r['preset']}** ({r['dataset']}, {r['images']} images): {verdict}Share of images per top "
                  f"patch, row by row: {share}. Trained with `multiglance train --preset {r['preset']} --epochs "
                  f"{r['config']['train']['epochs']} --out RUN`; analysed with `{r['command']}` (commit {r['commit']}).",
                  ""]
        if (docs / f"analysis-{name}-grid.png").exists():
            lines += [f"![figure 3 for {r['preset']}](analysis-{name}-grid.png)", ""]
    return "\n".join(lines)
