"""`multiglance bench beyond --quick`: trains tiny runs end to end, selecting on validation and reading the test
split only after training, and writes JSONs, plot and RESULTS section."""
import json
import shutil
from pathlib import Path

import pytest

from multiglance.cli import main
from multiglance.bench.beyond import above_front, front
from multiglance.results import REQUIRED_KEYS

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def test_front_and_above_front():
    pts = [(1.0, 0.5), (2.0, 0.4), (3.0, 0.7), (3.0, 0.6), (5.0, 0.65)]
    assert front(pts) == [(1.0, 0.5), (3.0, 0.7)]
    f = front(pts)
    assert not above_front((0.5, 0.9), f)  # cheaper than every one-glance model: not compared
    assert above_front((2.0, 0.6), f) and not above_front((2.0, 0.5), f) and not above_front((4.0, 0.69), f)


@pytest.mark.skipif(not MNIST.exists(), reason=f"MNIST files not found at {MNIST}")
def test_quick_bench_writes_results(tmp_path, monkeypatch):
    import multiglance.train
    import multiglance.train.inputs as inputs

    events = []  # split names as loaded, and "fit" / "fit done" around every training
    real_load, real_fit = inputs.load_split, multiglance.train.fit

    def spy_load(name, root, split, **kw):
        events.append(split)
        return real_load(name, root, split, **kw)

    def spy_fit(*a, **k):
        events.append("fit")
        out = real_fit(*a, **k)
        events.append("fit done")
        return out

    monkeypatch.setattr(inputs, "load_split", spy_load)  # every split train.load_data reads (fit, eval, bench)
    monkeypatch.setattr(multiglance.train, "fit", spy_fit)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "RESULTS.md").write_text("# Results\n\n<!-- BEGIN beyond -->\nPLACEHOLDER-TEXT\n<!-- END beyond -->\n")
    rc = main(["bench", "beyond", "--quick", "--docs", str(docs), "--runs-dir", str(tmp_path / "runs"),
               "--data", str(MNIST)])
    assert rc in (0, None)
    # four trainings; the test split is never read before a training is over, nor while one runs
    assert events.count("fit") == 4 and events.count("fit done") == 4
    assert "test" not in events[:events.index("fit done")]
    inside = False
    for e in events:
        inside = True if e == "fit" else False if e == "fit done" else inside
        assert not (inside and e == "test"), events
    assert {"train", "val", "test"} <= set(events)
    files = sorted((docs / "results").glob("beyond-mnist-cluttered-60-*.json"))
    assert len(files) == 4
    for f in files:
        r = json.loads(f.read_text())
        assert all(k in r for k in REQUIRED_KEYS) and r["dataset"] == "mnist-cluttered-60"
        assert r["selection"] == "val" and r["val_images"] == 32 and r["train_images"] == 128
        assert r["test_images"] == 64 and 0 <= r["val_accuracy_hard"] <= 1 and r["commit"]
        assert r["eval_command"] == f"multiglance eval {r['run_dir']} --split test"
        assert r["run_dir"] == f"mnist-cluttered-60-{r['label']}"
        assert str(tmp_path) not in f.read_text()  # no absolute path of this machine in the JSON
        # the published number is what `multiglance eval RUN` computes
        from multiglance.evaluate import evaluate_run
        assert evaluate_run(tmp_path / "runs" / r["run_dir"], timing=False)["accuracy_hard"] == r["accuracy_hard"]
        if r["model"] == "two":
            assert all(0 <= t["val_accuracy"] <= 1 for t in r["top_k"])
            assert r["top_k"][0]["accuracy"] == r["accuracy_hard"]
            ks = [t["k"] for t in r["top_k"]]
            assert ks[0] == 1 and ks[-1] == 16 and r["top_k"][0]["test_flops_per_image"] == r["test_flops_per_image"]
            assert r["top_k"][-1]["test_flops_per_image"] > r["top_k"][0]["test_flops_per_image"]
            assert 0 <= r["glance1"]["top_patch_holds_object"] <= 1
    text = (docs / "RESULTS.md").read_text()
    assert "PLACEHOLDER-TEXT" not in text and "mnist-cluttered-60" in text and "Front (validation):" in text
    assert (docs / "front_mnist-cluttered-60.png").stat().st_size > 1000

    # a run stopped early (by a signal: fit returns with fewer epochs than planned) is never published
    from multiglance.errors import UserError
    from multiglance.bench.beyond import Budget, load_data, plans, run_one

    label, preset, overrides = plans(quick=True)["mnist-cluttered-60"].runs[0]
    before = (docs / "results" / f"beyond-mnist-cluttered-60-{label}.json").read_text()
    monkeypatch.setattr(multiglance.train, "fit", lambda *a, **k: None)
    budget = Budget(train=128, test=64, epochs=2, val=32)
    with pytest.raises(UserError, match="stopped after 1 of 2 epochs; nothing was published"):
        run_one("mnist-cluttered-60", label, preset, overrides, budget, load_data("mnist-cluttered-60", budget,
                str(MNIST)), tmp_path / "runs", docs / "results", timing=False)
    assert (docs / "results" / f"beyond-mnist-cluttered-60-{label}.json").read_text() == before
    shutil.rmtree(tmp_path / "runs")


def test_front_and_target_use_validation(tmp_path):
    """The front and the target line are drawn on validation accuracy; old test-selected records are listed only."""
    from multiglance.bench.beyond import dataset_section

    def rec(label, model, flops, val, test, **kw):
        return {"label": label, "preset": label, "model": model, "selection": "val", "test_flops_per_image": flops,
                "val_accuracy_hard": val, "accuracy_hard": test, "accuracy_soft": None, "epochs": 1,
                "train_seconds": 1.0, "train_images": 10, "val_images": 5, "test_images": 5, **kw}

    records = [rec("one", "one", 10e6, 0.90, 0.99), rec("two", "two", 1e6, 0.80, 0.70, top_k=[
                   {"k": 1, "val_accuracy": 0.80, "accuracy": 0.70, "test_flops_per_image": 1e6},
                   {"k": 2, "val_accuracy": 0.99, "accuracy": 0.60, "test_flops_per_image": 1.9e6}]),
               rec("small-one", "one", 1e6, 0.50, 0.95),
               {**rec("old-two", "two", 1.5e6, 0.0, 0.999), "selection": None}]
    text = dataset_section("mnist-cluttered-60", records, tmp_path)
    assert "two top-2 (val 0.9900, test 0.6000" in text  # above the front on validation, its test beside
    assert "old-two hard" not in text and "(test-selected, old)" in text
    assert "met on validation; best on validation is two top-2, val 0.9900, test 0.6000" in text


def test_publishing_refuses_a_dirty_tree_unless_allowed(tmp_path, monkeypatch, capsys):
    import multiglance.results

    monkeypatch.setattr(multiglance.results, "git_commit", lambda: "0123abcd-dirty")
    args = ["bench", "beyond", "--docs", str(tmp_path), "--runs-dir", str(tmp_path / "runs"), "--datasets", "nope"]
    assert main(args) == 2
    assert "uncommitted changes" in capsys.readouterr().err
    assert main([*args, "--allow-dirty"]) == 2  # past the check: the plan is looked up (and unknown)
    assert "no beyond plan for nope" in capsys.readouterr().err
