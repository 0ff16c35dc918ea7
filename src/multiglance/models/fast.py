"""Fast test-time forward: a traced and frozen TorchScript graph per input shape, with the eager path kept.

For these small nets at batch 1 the time goes to Python and operator dispatch, not arithmetic: tracing removes
the Python (the stage methods, shape checks, `nn.Sequential` loops) and freezing inlines the weights. On CPU
this cut two-glance batch-1 latency by about a third (docs/PERFORMANCE.md); torch.compile was no faster here
and took about a minute per model to compile, so it is not the default (`backend="compile"` asks for it).

    fast = FastInference(model)              # model in eval mode: OneGlance or TwoGlance
    logits = fast(x)                         # same values as model(x) (tests/test_models_fast.py)
    logits = fast(x, mode="soft")            # two-glance: any mode / k, one graph per (shape, mode, k)
    fast.fallback_reason                     # None, or why the eager path is used

`backend="optimize"` adds `torch.jit.optimize_for_inference` (oneDNN convolutions with prepacked weights,
conv + ReLU fused): up to 1.9x faster at batch 256 here, but its convolutions round differently (outputs agree
to about 1e-5, not bit for bit), so it is opt-in. Anything that fails to trace or compile falls back to the eager
model, once per key, with the reason kept.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

BACKENDS = ("trace", "optimize", "compile", "eager")


class _Call(nn.Module):
    """model(x, **kwargs) with the keyword arguments fixed, so the tracer sees a one-input module."""

    def __init__(self, model: nn.Module, kwargs: dict):
        super().__init__()
        self.model, self.kwargs = model, kwargs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, **self.kwargs)


class FastInference:
    """Eval-mode forward of `model` through a per-shape traced, frozen graph (or torch.compile, or eager)."""

    def __init__(self, model: nn.Module, *, backend: str = "trace"):
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.model, self.backend = model.eval(), backend
        self.graphs: dict[tuple, object] = {}
        self.fallback_reason: str | None = None

    def _key(self, x: torch.Tensor, kwargs: dict) -> tuple:
        return (tuple(x.shape), x.dtype, x.device, tuple(x.stride()), tuple(sorted(kwargs.items())))

    def _build(self, x: torch.Tensor, kwargs: dict):
        call = _Call(self.model, kwargs).eval()
        if self.backend == "eager":
            return call
        try:
            if self.backend == "compile":
                graph = torch.compile(call, dynamic=False)
                graph(x)  # compile now, so a failure falls back here and not in the caller's timing loop
                return graph
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarning: shape checks become constants of this graph
                graph = torch.jit.freeze(torch.jit.trace(call, x, check_trace=False))
                if self.backend == "optimize":
                    graph = torch.jit.optimize_for_inference(graph)
                    graph(x)
                return graph
        except Exception as e:  # noqa: BLE001 - any failure: keep the eager path, say why
            self.fallback_reason = f"{self.backend} failed ({type(e).__name__}: {str(e)[:200]}); using eager"
            warnings.warn(f"multiglance.models.fast: {self.fallback_reason}")
            return call

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        key = self._key(x, kwargs)
        graph = self.graphs.get(key)
        if graph is None:
            graph = self.graphs[key] = self._build(x, kwargs)
        return graph(x)
