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
def test_quick_bench_writes_results(tmp_path):
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
    shutil.rmtree(tmp_path / "runs")
