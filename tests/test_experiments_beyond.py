"""`multiglance bench beyond --quick`: trains tiny runs end to end and writes JSONs, plot and RESULTS section."""
import json
import shutil
from pathlib import Path

import pytest

from multiglance.cli import main
from multiglance.experiments_beyond import above_front, front
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
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "RESULTS.md").write_text("# Results\n\n<!-- BEGIN beyond -->\nPLACEHOLDER-TEXT\n<!-- END beyond -->\n")
    rc = main(["bench", "beyond", "--quick", "--docs", str(docs), "--runs-dir", str(tmp_path / "runs"),
               "--data", str(MNIST)])
    assert rc in (0, None)
    files = sorted((docs / "results").glob("beyond-mnist-cluttered-60-*.json"))
    assert len(files) == 4
    for f in files:
        r = json.loads(f.read_text())
        assert all(k in r for k in REQUIRED_KEYS) and r["dataset"] == "mnist-cluttered-60"
        if r["model"] == "two":
            ks = [t["k"] for t in r["top_k"]]
            assert ks[0] == 1 and ks[-1] == 16 and r["top_k"][0]["test_flops_per_image"] == r["test_flops_per_image"]
            assert r["top_k"][-1]["test_flops_per_image"] > r["top_k"][0]["test_flops_per_image"]
            assert 0 <= r["glance1"]["top_patch_holds_object"] <= 1
    text = (docs / "RESULTS.md").read_text()
    assert "PLACEHOLDER-TEXT" not in text and "mnist-cluttered-60" in text and "Front:" in text
    assert (docs / "front_mnist-cluttered-60.png").stat().st_size > 1000

    # a run stopped early (by a signal: fit returns with fewer epochs than planned) is never published
    import multiglance.train
    from multiglance.errors import UserError
    from multiglance.experiments_beyond import Budget, load_data, plans, run_one

    label, preset, overrides = plans(quick=True)["mnist-cluttered-60"].runs[0]
    before = (docs / "results" / f"beyond-mnist-cluttered-60-{label}.json").read_text()
    monkeypatch.setattr(multiglance.train, "fit", lambda *a, **k: None)
    budget = Budget(train=128, test=64, epochs=2, val=32)
    with pytest.raises(UserError, match="stopped after 1 of 2 epochs; nothing was published"):
        run_one("mnist-cluttered-60", label, preset, overrides, budget, load_data("mnist-cluttered-60", budget,
                str(MNIST)), tmp_path / "runs", docs / "results", timing=False)
    assert (docs / "results" / f"beyond-mnist-cluttered-60-{label}.json").read_text() == before
    shutil.rmtree(tmp_path / "runs")
