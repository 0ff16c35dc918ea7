"""models/fast.py: the traced/frozen test-time path gives the eager model's answers, falls back to eager."""
from __future__ import annotations

import pytest
import torch

from multiglance.models import create_model, get_preset, list_models
from multiglance.models.fast import FastInference


@pytest.fixture(autouse=True)
def seeded() -> None:
    """Every test starts from torch seed 0: its random inputs and weights do not depend on which tests ran first."""
    torch.manual_seed(0)


def _input(name: str, batch: int, channels_last: bool) -> torch.Tensor:
    m = get_preset(name).model
    x = torch.rand(batch, m.in_channels, m.image_size, m.image_size)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@pytest.mark.parametrize("name,batch,channels_last", [("paper-cifar10-two", 1, True), ("paper-cifar10-one-s2", 1, True),
                                                      ("paper-tiny-two-s2", 3, False), ("digits-two", 5, False)])
def test_fast_equals_eager_exactly(name, batch, channels_last):
    model = create_model(name).eval()
    fast = FastInference(model)
    x = _input(name, batch, channels_last)
    modes = [{}] if model.kind == "one" else [{}, {"mode": "soft"}, {"mode": "hard", "k": 2}]
    for kw in modes:
        with torch.no_grad():
            expected = model(x, **kw)
        assert torch.equal(fast(x, **kw), expected), kw  # no BatchNorm to fold: bit for bit
    assert fast.fallback_reason is None and len(fast.graphs) == len(modes)


@pytest.mark.parametrize("name", ["cifar10-two-fuse", "mnist60-two", "cifar10-one"])
def test_fast_with_batchnorm_folded_agrees(name):
    assert name in list_models()
    model = create_model(name).eval()
    fast = FastInference(model)
    x = _input(name, 6, True)
    with torch.no_grad():
        expected = model(x)
    got = fast(x)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)  # freezing folds BN into the convs
    assert torch.equal(got.argmax(-1), expected.argmax(-1))


def test_graph_cache_is_per_shape_and_reused():
    model = create_model("digits-two").eval()
    fast = FastInference(model)
    a, b = _input("digits-two", 2, True), _input("digits-two", 3, True)
    fast(a), fast(b), fast(a)
    assert len(fast.graphs) == 2
    with torch.no_grad():
        assert torch.equal(fast(b), model(b))


def test_failed_trace_falls_back_to_eager():
    class DictOut(torch.nn.Module):  # a dict output: eager is fine, strict tracing refuses it
        def forward(self, x):
            return {"y": x * 2}
    fast = FastInference(DictOut())
    with pytest.warns(UserWarning, match="using eager"):
        out = fast(torch.ones(2))
    assert torch.equal(out["y"], torch.full((2,), 2.0)) and "trace failed" in fast.fallback_reason


def test_eager_backend_is_the_model_itself():
    model = create_model("digits-one").eval()
    x = _input("digits-one", 2, False)
    with torch.no_grad():
        assert torch.equal(FastInference(model, backend="eager")(x), model(x))
    with pytest.raises(ValueError, match="unknown backend"):
        FastInference(model, backend="onnx")


def test_optimize_backend_agrees_closely():
    model = create_model("paper-cifar10-two-s2").eval()
    fast = FastInference(model, backend="optimize")
    x = _input("paper-cifar10-two-s2", 4, True)
    with torch.no_grad():
        expected = model(x)
    got = fast(x)
    assert fast.fallback_reason is None
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4) and torch.equal(got.argmax(-1), expected.argmax(-1))
