"""`multiglance bench paper --quick` end to end on the embedded cluttered digits (no shared data needed):
runs are trained and evaluated, one JSON per run with the required keys, the tables and curves in the docs
folder, and a second call trains nothing."""
import json
from pathlib import Path

import pytest

from multiglance import cli, results
from multiglance.bench.paper import EXPERIMENTS, Experiment, _mean_std, select
from multiglance.results import shown_path


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    (root / "RESULTS.md").write_text("# Results\n\n<!-- BEGIN paper -->\nold\n<!-- END paper -->\n\n"
                                     "<!-- BEGIN beyond -->\nkept\n<!-- END beyond -->\n")
    argv = ["bench", "paper", "--quick", "--datasets", "cluttered-digits", "--docs", str(root),
            "--runs-dir", str(root / "runs"), "--threads", "1", "--quiet"]
    assert cli.main(argv) == 0
    return root, argv


def test_quick_writes_one_json_per_run(quick):
    root, _ = quick
    files = sorted(p.name for p in (root / "results").glob("*.json"))
    assert files == ["cluttered-digits__one-s2__seed0.json", "cluttered-digits__two-logits-s2__seed0.json"]
    for name in files:
        record = json.loads((root / "results" / name).read_text())
        assert all(k in record for k in results.REQUIRED_KEYS)
        assert record["dataset"] == "cluttered-digits" and record["seed"] == 0 and record["epochs"] == 1
        assert 0.0 <= record["accuracy_hard"] <= 1.0 and record["params"] > 0 and record["test_flops_per_image"] > 0
        assert record["latency_ms_batch1"] > 0 and record["images_per_s_batch256"] > 0
        assert record["config"]["train"]["epochs"] == 1 and record["config"]["data"]["train_limit"] == 1024
        assert record["selection"] == "val" and record["val_images"] > 0 and record["train_images"] == 1024
        assert not Path(record["run_dir"]).is_absolute()  # JSON paths are relative to the runs folder
        metrics = [json.loads(line) for line in (root / "runs" / record["run_dir"] / "metrics.jsonl").read_text()
                   .splitlines()]
        epochs = [m for m in metrics if m["kind"] == "epoch"]
        assert record["train_seconds"] == round(sum(m["train_seconds"] for m in epochs), 1)
    one = json.loads((root / "results" / files[0]).read_text())
    two = json.loads((root / "results" / files[1]).read_text())
    assert one["model"] == "one" and one["accuracy_soft"] is None
    assert two["model"] == "two" and 0.0 <= two["accuracy_soft"] <= 1.0
    assert two["test_flops_per_image"] < one["test_flops_per_image"]  # the point of the second glance


def test_quick_writes_tables_and_curves(quick):
    root, _ = quick
    doc = (root / "RESULTS.md").read_text()
    section = doc.split("<!-- BEGIN paper -->")[1].split("<!-- END paper -->")[0]
    assert "old" not in section and "<!-- BEGIN beyond -->\nkept" in doc
    assert "| one-s2 | one | 2 |" in section and "| two-logits-s2 | two | 2 | logits |" in section
    assert (root / "paper-cluttered-digits-curves-s2.png").stat().st_size > 1000


def test_second_call_trains_nothing(quick):
    root, argv = quick
    before = {p: p.stat().st_mtime_ns for p in (root / "results").glob("*.json")}
    ckpt = {p: p.stat().st_mtime_ns for p in (root / "runs").glob("*/checkpoint.pt")}
    assert cli.main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in (root / "results").glob("*.json")} == before
    assert {p: p.stat().st_mtime_ns for p in (root / "runs").glob("*/checkpoint.pt")} == ckpt


def test_reuse_copies_a_finished_run_and_no_train_skips_the_rest(quick, tmp_path):
    root, _ = quick
    argv = ["bench", "paper", "--quick", "--datasets", "cluttered-digits", "--docs", str(tmp_path),
            "--runs-dir", str(tmp_path / "runs"), "--threads", "1", "--quiet", "--reuse", str(root / "runs"),
            "--no-train", "--only", "two-logits-s2"]
    assert cli.main(argv) == 0
    name = "cluttered-digits__two-logits-s2__seed0"
    assert (tmp_path / "runs" / name / "metrics.jsonl").read_text() == \
        (root / "runs" / name / "metrics.jsonl").read_text()
    ours, theirs = (json.loads((d / "results" / f"{name}.json").read_text()) for d in (tmp_path, root))
    assert ours["accuracy_hard"] == theirs["accuracy_hard"] and ours["train_seconds"] == theirs["train_seconds"]
    argv[argv.index("two-logits-s2")] = "one-s2"
    argv.remove("--reuse"), argv.remove(str(root / "runs"))
    assert cli.main(argv) == 0  # nothing to reuse and --no-train: nothing is trained
    assert not (tmp_path / "runs" / "cluttered-digits__one-s2__seed0").exists()


def test_select_orders_and_limits():
    todo = select(["cifar10"], ["two-logits-s2", "one-s2"], quick=False, seeds=2)
    assert [(e.name, s) for e, s in todo] == [("two-logits-s2", 1), ("two-logits-s2", 0), ("one-s2", 1),
                                              ("one-s2", 0)]
    quick = select(["cifar10", "tiny-imagenet"], None, quick=True, seeds=None)
    assert {(e.dataset, e.name, e.epochs) for e, _ in quick} == {
        (d, n, 1) for d in ("cifar10", "tiny-imagenet") for n in ("one-s2", "two-logits-s2")}


def test_every_paper_experiment_builds_its_config():
    for exp in EXPERIMENTS:
        cfg = exp.config(seed=1)
        assert cfg.train.epochs == exp.epochs and cfg.train.seed == 1 and cfg.data.name == exp.dataset
        assert (cfg.model.kind == "one") == exp.name.startswith("one")
    combos = {(e.dataset, e.name) for e in EXPERIMENTS}
    for d in ("cifar10", "tiny-imagenet"):
        assert {"one-s1", "two-logits-s1", "one-s2", "two-logits-s2", "two-probs-s2", "two-mixture-s2"} <= \
            {n for dd, n in combos if dd == d}


def test_unknown_names_are_one_line_errors(capsys):
    assert cli.main(["bench", "paper", "--datasets", "imagenet", "--report-only"]) == 2
    assert cli.main(["bench", "paper", "--only", "three-s9", "--report-only"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("multiglance: error:") for line in err)


def test_mean_std():
    assert _mean_std([]) == "-"
    assert _mean_std([0.5]) == "50.0"
    assert _mean_std([0.5, 0.7]) == "60.0 ± 14.1"
    assert isinstance(Experiment("x", "cifar10", "paper-cifar10-one"), Experiment)


def test_published_accuracy_is_what_eval_of_the_run_computes(quick):
    """The JSON's numbers are the saved model's own inference path: `multiglance eval RUN` gives them again."""
    from multiglance.evaluate import evaluate_run

    root, _ = quick
    for path in sorted((root / "results").glob("*.json")):
        record = json.loads(path.read_text())
        run = shown_path(root / "runs" / record["run_dir"])
        assert record["eval_command"] == f"multiglance eval {run} --split test"
        again = evaluate_run(root / "runs" / record["run_dir"], timing=False)
        assert again["accuracy_hard"] == record["accuracy_hard"] and again["test_images"] == record["test_images"]
        val = evaluate_run(root / "runs" / record["run_dir"], timing=False, split="val")
        assert val["accuracy_hard"] == record["val_accuracy_hard"]
