"""Tests for bench/megapixel.py and models/megapixel.py: accuracy against k is the model's own `infer`, the
choice of (rule, k), digit recall, init_from across canvas sizes, costs beside the full-resolution CNN, and the
quick bench end to end on the shared MNIST (JSON, section, `evaluate_run` agreement, test read last)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from multiglance import runs
from multiglance.bench import megapixel as mp
from multiglance.data.megapixel import make_megapixel
from multiglance.errors import UserError
from multiglance.models import build_model, create_model, get_preset
from multiglance.models.megapixel import full_resolution_cnn, full_resolution_config, low_resolution_cnn

from conftest import SHARED_DATA

MNIST = SHARED_DATA / "mnist"
needs_mnist = pytest.mark.skipif(not MNIST.exists(), reason=f"the shared MNIST files are not at {MNIST}")


def tiny_model(**kw):
    torch.manual_seed(0)
    return create_model("megapixel-easy-two", **({"image_size": 200, "thumb_size": 40, "channels": (4, 8),
                                                  "glance1_channels": (4, 8), "top_k": 3} | kw)).eval()


def tiny_split(n: int = 12, size: int = 200):
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, (100, 28, 28), dtype=np.uint8)
    return make_megapixel("train", images=images, labels=np.arange(100) % 10, n=n, size=size, n_noise=3)


def shapes(model) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_accuracy_by_k_is_what_infer_answers_for_each_rule_and_k() -> None:
    model, split = tiny_model(), tiny_split()
    x = split.render(torch.arange(len(split)))
    with torch.no_grad():
        model.topk_combine = "weights"
        target, top = model.infer(x, "hard", 3)
        preds = {}
        for rule in ("weights", "equal"):
            model.topk_combine = rule
            preds[rule] = {k: model.infer(x, "hard", k)[0].argmax(-1) for k in (1, 2, 3, 5)}
    model.topk_combine = "equal"
    split.labels = target.argmax(-1)  # labels = the answer of (weights, k=3): that pair must score 1.0
    ev = mp.accuracy_by_k(model, split, ks=(1, 2, 3, 5), recall_k=3, batch_size=5)
    assert model.topk_combine == "equal"  # restored
    assert ev["accuracy_by_k"]["weights"]["3"] == 1.0 and ev["images"] == len(split)
    for rule in ("weights", "equal"):
        for k, p in preds[rule].items():
            assert ev["accuracy_by_k"][rule][str(k)] == pytest.approx((p == split.labels).float().mean().item())
    hits = mp.digit_hits(model, top, split.boxes(torch.arange(len(split))))  # from infer's own indices
    assert ev["digit_recall"] == pytest.approx(hits.float().mean().item())


def test_digit_hits_counts_a_patch_holding_the_digit_centre() -> None:
    model, split = tiny_model(), tiny_split(1)
    boxes = split.boxes(torch.arange(1))  # (1, 5, 4)
    cx, cy = (boxes[0, 0, 0] + 14).item(), (boxes[0, 0, 1] + 14).item()
    pb = model.patch_boxes()
    inside = ((pb[:, 0] <= cx) & (cx < pb[:, 2]) & (pb[:, 1] <= cy) & (cy < pb[:, 3])).nonzero()[0]
    outside = ((pb[:, 2] <= cx - 30) | (pb[:, 0] > cx + 30)).nonzero()[0]
    assert mp.digit_hits(model, inside[None], boxes)[0, 0]
    assert not mp.digit_hits(model, outside[None], boxes)[0, 0]


def test_choose_takes_the_best_then_fewer_patches_then_the_models_rule() -> None:
    acc = {"weights": {"1": 0.5, "3": 0.9, "5": 0.95}, "equal": {"1": 0.5, "3": 0.95, "5": 0.95}}
    assert mp.choose(acc, "weights") == ("equal", 3)
    tie = {"weights": {"1": 0.5, "4": 0.9}, "equal": {"1": 0.5, "4": 0.9}}
    assert mp.choose(tie, "weights") == ("weights", 4) and mp.choose(tie, "equal") == ("equal", 4)


def test_init_from_loads_an_easy_run_into_the_1500_model_and_refuses_other_shapes(tmp_path: Path) -> None:
    """The curriculum: both glances are convolutional, so a 500x500 run with the 1500 model's filters starts
    it; a run of other filters is one clear error."""
    from multiglance.train.checkpoint import init_weights

    torch.manual_seed(0)
    easy = build_model(replace(get_preset("megapixel-easy-two").model, channels=(8, 16, 32)))
    (tmp_path / "easy").mkdir()
    runs.save_checkpoint(tmp_path / "easy", {"model": easy.state_dict()})
    big = build_model(get_preset("megapixel-two").model)
    assert (big.num_patches, easy.num_patches) == (59 * 59, 19 * 19)
    init_weights(big, tmp_path / "easy")
    for name, value in easy.state_dict().items():
        if not name.startswith("normalize."):
            assert torch.equal(big.state_dict()[name], value), name
    (tmp_path / "wide").mkdir()
    runs.save_checkpoint(tmp_path / "wide", {"model": build_model(get_preset("megapixel-easy-two").model).state_dict()})
    with pytest.raises(UserError, match="do not fit"):
        init_weights(big, tmp_path / "wide")


def test_baseline_configs_build_the_cnns_of_models_megapixel() -> None:
    full = full_resolution_config(image_size=500).model
    assert shapes(build_model(full)) == shapes(full_resolution_cnn(image_size=500))
    two = get_preset("megapixel-two")
    low = mp.low_res_config(two, epochs=2)
    assert (low.model.kind, low.model.input_size, low.train.epochs, low.train.init_from) == ("one", 240, 2, None)
    assert low.data == two.data and low.train.optimizer == "adamw"
    assert shapes(build_model(low.model)) == shapes(low_resolution_cnn(image_size=1500, input_size=240,
                                                                       channels=(8, 16, 32)))


@pytest.mark.parametrize("size, channels, params, flops", [
    (500, 1, 715_530, 6_225_150_976),  # docs/results/megapixel-mnist-easy.json: full_params, full_flops
    (1500, 1, 3_215_370, 55_802_867_200),  # docs/results/megapixel-mnist.json
    (1024, 3, None, 27_181.7114e6),  # docs/benchmarks/large-speed.json: mflops_full (bench large, RGB)
])
def test_the_one_full_resolution_cnn_is_the_published_one(size, channels, params, flops) -> None:
    """bench megapixel and bench large measure the same model (models/megapixel.py), as published."""
    from multiglance.evaluate import count_flops

    with torch.device("meta"):
        full = full_resolution_cnn(image_size=size, in_channels=channels)
        assert count_flops(full, torch.empty(1, channels, size, size)) == pytest.approx(flops, abs=100)
    assert params is None or sum(p.numel() for p in full.parameters()) == params


def test_two_glance_flops_far_below_full_resolution() -> None:
    from multiglance.evaluate import count_flops

    torch.manual_seed(0)
    model = build_model(get_preset("megapixel-two").model)
    ours = count_flops(model, torch.zeros(1, 1, 1500, 1500, dtype=torch.uint8), mode="hard", k=5)
    with torch.device("meta"):  # count without computing: 56 GFLOPs would take seconds
        full = count_flops(full_resolution_cnn(image_size=1500), torch.empty(1, 1, 1500, 1500))
    assert ours > 0 and full > 200 * ours


def test_inference_memory_stays_bounded_for_one_image() -> None:
    from multiglance.config import apply_overrides
    from multiglance.evaluate import peak_memory_mb

    peak = peak_memory_mb(get_preset("megapixel-two"), (1, 1500, 1500))
    canvas_float_mb = 1500 * 1500 * 4 / 2 ** 20  # 8.6 MB
    first_full_layer_mb = 32 * canvas_float_mb  # the full-resolution CNN's first activation alone
    assert 0 < peak < 6 * canvas_float_mb and peak < first_full_layer_mb / 5
    more = peak_memory_mb(apply_overrides(get_preset("megapixel-two"), ["model.top_k=20"]), (1, 1500, 1500))
    assert more < peak + 8  # four times the patches adds at most a few MB


# ---- the quick bench, end to end on the shared MNIST --------------------------------------------------------
@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """`bench megapixel --easy --quick` once, with a spy recording the splits loaded, the training epochs and
    the choice of (rule, k), in order."""
    import multiglance.train.inputs as inputs
    import multiglance.train.loop as loop
    from multiglance.cli import main

    if not MNIST.exists():
        pytest.skip(f"the shared MNIST files are not at {MNIST}")
    base = tmp_path_factory.mktemp("megapixel")
    events: list[str] = []
    load_split, epoch, choose = inputs.load_split, loop.train_one_epoch, mp.choose
    with pytest.MonkeyPatch.context() as m:
        m.setattr(inputs, "load_split", lambda name, root, split, **kw: events.append(split) or
                  load_split(name, root, split, **kw))
        m.setattr(loop, "train_one_epoch", lambda *a, **kw: events.append("epoch") or epoch(*a, **kw))
        m.setattr(mp, "choose", lambda *a: events.append("choose") or choose(*a))
        code = main(["bench", "megapixel", "--easy", "--quick", "--runs-dir", str(base / "runs"),
                     "--docs", str(base / "docs")])
    assert code == 0
    text = (base / "docs" / "results" / "megapixel-mnist-easy-quick.json").read_text()
    return {"base": base, "events": events, "text": text, "record": json.loads(text)}


@needs_mnist
def test_quick_bench_writes_the_json_and_the_section(quick) -> None:
    r, base = quick["record"], quick["base"]
    assert (r["selection"], r["train_images"], r["val_images"], r["test_images"]) == ("val", 64, 32, 32)
    assert r["commit"] and r["epochs"] == 1 and r["low_resolution_cnn"]["epochs"] == 1
    assert set(r["val_accuracy_by_k"]) == {"weights", "equal"} and list(r["val_accuracy_by_k"]["equal"]) == \
        [str(k) for k in range(1, 11)]
    assert r["val_accuracy"] == r["val_accuracy_by_k"][r["combination"]][str(r["top_k"])]
    assert r["val_accuracy"] == max(max(v.values()) for v in r["val_accuracy_by_k"].values())
    assert r["eval_command"] == (f"multiglance eval megapixel-mnist-easy-quick --split test --set "
                                 f"model.topk_combine={r['combination']} --set model.top_k={r['top_k']}")
    assert str(base) not in quick["text"] and "/tmp" not in quick["text"]  # no machine paths in the JSON
    assert r["full_flops"] > 20 * r["flops_by_k"]["5"] and r["peak_memory_mb"] < r["full_peak_memory_mb"] / 10
    section = (base / "docs" / "RESULTS.md").read_text()
    assert "## Megapixel MNIST" in section and r["eval_command"] in section
    assert (base / "docs" / "megapixel-accuracy-flops.png").is_file()
    for name in ("megapixel-mnist-easy-quick", "megapixel-mnist-easy-quick-low-one"):  # ordinary run folders
        assert {"config.yaml", "checkpoint.pt", "metrics.jsonl"} <= {p.name for p in (base / "runs" / name).iterdir()}


@needs_mnist
def test_published_accuracy_is_evaluate_run_with_the_chosen_rule_and_k(quick) -> None:
    from multiglance.evaluate import evaluate_run

    r = quick["record"]
    overrides = [f"model.topk_combine={r['combination']}", f"model.top_k={r['top_k']}"]
    ev = evaluate_run(quick["base"] / "runs" / r["run_dir"], split="test", overrides=overrides, timing=False)
    assert ev["accuracy_hard"] == r["accuracy_hard"] and ev["test_images"] == r["test_images"]
    low = evaluate_run(quick["base"] / "runs" / r["low_resolution_cnn"]["run_dir"], split="test", timing=False)
    assert low["accuracy_hard"] == r["low_resolution_cnn"]["accuracy"]


@needs_mnist
def test_test_split_is_read_only_after_training_and_the_choice(quick) -> None:
    events = quick["events"]
    assert "test" in events and events.count("epoch") == 2 and events.count("choose") == 1
    first_test = events.index("test")
    assert all(e == "test" for e in events[first_test:])  # nothing trains, validates or chooses after it
    assert events.index("choose") < first_test and events[:2] == ["train", "val"]


@needs_mnist
def test_a_run_of_another_config_is_refused(quick, capsys) -> None:
    from multiglance.cli import main

    base = quick["base"]
    assert main(["bench", "megapixel", "--easy", "--quick", "--set", "model.explore=2", "--runs-dir",
                 str(base / "runs"), "--docs", str(base / "docs")]) == 2
    assert "holds a run of another config" in capsys.readouterr().err
