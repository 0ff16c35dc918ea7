"""Shipped weights: export a run, check its SHA-256, re-derive its number with `eval --weights`."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from multiglance import weights
from multiglance.cli import main
from multiglance.errors import CheckpointError, UserError
from multiglance.evaluate import evaluate_run
from multiglance.runs import load_run

from conftest import SHARED_DATA


def _published(tmp_path, run, **fields):
    """A result JSON for `run` as a benchmark writes it (clean commit, selected on validation)."""
    acc = evaluate_run(run, timing=False)["accuracy_hard"]
    path = tmp_path / "tiny__two__seed0.json"
    path.write_text(json.dumps({"commit": "abcdef123456", "selection": "val", "accuracy_hard": acc,
                                "test_images": 128} | fields))
    return path, acc


def test_export_then_eval_weights_re_derives_the_published_number(tiny_run, tmp_path, capsys):
    result, acc = _published(tmp_path, tiny_run)
    folder = tmp_path / "weights"
    path = weights.export(tiny_run, result, folder=folder)
    assert path.name == "tiny__two__seed0.pt"
    assert weights.read_sums(folder) == {path.name: weights.sha256(path)}
    record = torch.load(path, weights_only=True)
    assert record["published"]["accuracy_hard"] == acc and record["config"]["data"]["root"] is None

    model, cfg, _ = weights.load_weights(str(path), folder)
    run_model, _ = load_run(tiny_run)
    for (k, a), b in zip(model.state_dict().items(), run_model.state_dict().values()):
        assert torch.equal(a, b.float() if b.is_floating_point() else b), k

    assert main(["eval", "--weights", str(path), "--no-timing", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["accuracy_hard"] == acc and out["published"]["result"] == result.name
    assert main(["eval", "--weights", str(path), "--no-timing"]) == 0
    assert f"{acc:.4f}; now {acc:.4f} (the same)" in capsys.readouterr().out


def test_export_keeps_the_published_inference_options(tiny_run, tmp_path):
    result, _ = _published(tmp_path, tiny_run)
    path = weights.export(tiny_run, result, folder=tmp_path / "w", overrides=["model.top_k=2"])
    model, cfg, record = weights.load_weights(str(path), tmp_path / "w")
    assert cfg.model.top_k == 2 and model.top_k == 2 and record["published"]["overrides"] == ["model.top_k=2"]
    with pytest.raises(UserError, match="only inference-time options"):
        weights.export(tiny_run, result, folder=tmp_path / "w", overrides=["model.patch_size=4"])


@pytest.mark.parametrize("fields", [{"commit": "abcdef-dirty"}, {"selection": None}])
def test_export_refuses_unpublishable_results(tiny_run, tmp_path, fields):
    result, _ = _published(tmp_path, tiny_run, **fields)
    with pytest.raises(UserError, match="not a publishable result"):
        weights.export(tiny_run, result, folder=tmp_path / "w")


def test_a_changed_or_unlisted_file_is_refused_in_one_line(tiny_run, tmp_path, capsys):
    result, _ = _published(tmp_path, tiny_run)
    folder = tmp_path / "w"
    path = weights.export(tiny_run, result, folder=folder)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match its SHA-256"):
        weights.load_weights(str(path), folder)
    assert main(["eval", "--weights", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "SHA-256" in err

    stray = folder / "other.pt"
    shutil.copy(path, stray)
    with pytest.raises(CheckpointError, match="not listed"):
        weights.load_weights(str(stray), folder)
    with pytest.raises(UserError, match="no weights named 'nothing'"):
        weights.load_weights("nothing", folder)


def test_eval_needs_a_run_or_weights_not_both(tiny_run, capsys):
    assert main(["eval", "--no-timing"]) == 2
    assert main(["eval", str(tiny_run), "--weights", "x", "--no-timing"]) == 2
    assert "one of them" in capsys.readouterr().err


# ---- the files in docs/weights ---------------------------------------------------------------------------------
SHIPPED = sorted(weights.SHIPPED.glob("*.pt"))


def test_shipped_weights_are_listed_small_and_clean():
    if not SHIPPED:
        pytest.skip("no shipped weights in docs/weights")
    sums = weights.read_sums(weights.SHIPPED)
    assert sorted(sums) == [p.name for p in SHIPPED]
    assert all(sums[p.name] == weights.sha256(p) for p in SHIPPED)
    assert sum(p.stat().st_size for p in SHIPPED) < 10 * 2**20
    for p in SHIPPED:
        pub = torch.load(p, weights_only=True)["published"]
        record = json.loads((weights.SHIPPED.parent / "results" / pub["result"]).read_text())
        assert record["accuracy_hard"] == pub["accuracy_hard"] and record["commit"] == pub["commit"]
        assert "-dirty" not in record["commit"] and record["selection"] == "val"


def test_the_smallest_shipped_weights_re_derive_their_published_number():
    if not SHIPPED:
        pytest.skip("no shipped weights in docs/weights")
    smallest = min(SHIPPED, key=lambda p: p.stat().st_size)
    _, cfg, record = weights.load_weights(smallest.stem)
    if cfg.data.name not in ("cluttered-digits", "mnist-cluttered") and not SHARED_DATA.is_dir():
        pytest.skip(f"{smallest.stem} needs ../shared/data")
    out = evaluate_run(weights=smallest.stem, timing=False)
    assert out["test_images"] == record["published"]["test_images"]
    assert out["accuracy_hard"] == pytest.approx(record["published"]["accuracy_hard"], abs=5e-5)
