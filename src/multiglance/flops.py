"""Test-time FLOPs of one eval forward (multiply and add counted separately), two counts kept apart (`flop_counts`);
`multiglance eval` reports both (evaluate.py), `multiglance compare` shows both (compare.py).

- `conv_matmul`: convolutions and matrix products, PyTorch's counter (`torch.utils.flop_counter`) as it is; the
  key `test_flops_per_image` (and `soft_flops_per_image`, `count_flops`, `flops_per_image`) is this count, as in
  every published JSON and report, so every FLOP ratio in the docs is a ratio of these unless it says otherwise.
- `other`: every other op that computes, at a fixed cost per element (`OTHER_COSTS`, n = elements of the output):
    antialiased bilinear resize (`_upsample_bilinear2d_aa`, align_corners=False): separable, width first, then
        height, a pass only where the size changes; 2 (multiply, add) per input sample in each output's filter
        window, summed over each pass's outputs (`filter_taps`: the window PyTorch's kernel computes, the samples
        within support max(in/out, 1) of the output's centre, clipped at the edges: about 2 * in/out samples when
        downsampling). 1500x1500 -> 240x240: 12.5 samples per output, 4.6 FLOPs per input pixel. The thumbnail of a
        uint8 image costs the same (the same op, fixed-point weights).
    bilinear resize without antialiasing, bilinear `grid_sample`: 8 n (4 samples); bicubic 32 n; nearest 0
    max-pool: (kh * kw - 1) n comparisons; average pool: kh * kw n; mean, sum, adaptive average pool: 1 per
        input element
    batch norm (inference: one multiply-add per element with the statistics folded): 2 n
    elementwise arithmetic with a floating-point result (add, sub, mul, div, relu, relu6 = hardtanh, clamp, exp,
        log, ...): 1 n, transcendental functions included; integer and boolean results (the index bookkeeping of
        the patch selection) are not counted
    softmax, log-softmax: 5 per input element (max, subtract, exp, sum, divide or log); logsumexp: 4
  Not counted: data movement (dtype conversion, copies, indexing, padding, `cat`, `unfold`), sorting and top-k
  selection (comparisons over the P patch scores), and the bias additions inside convolutions and affine layers
  (left out by PyTorch's counter too).

The docs' headline ratios with both counts (docs/PERFORMANCE.md, "FLOPs beyond convolutions and matrix products"):
    python -c "from multiglance.flops import flop_share_table; print(flop_share_table())"
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .train.evaluation import takes_uint8

aten = torch.ops.aten


# ---- costs per element of the ops PyTorch's counter leaves out (see the module docstring) ------------------
def _raw(fn):
    fn._get_raw = True  # FlopCounterMode passes the op's arguments and output as they are, not their shapes
    return fn


def _first(out) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out  # (output, indices) of max-pool, (y, mean, var) of BN


def _per_output(cost: int):
    """`cost` FLOPs per element of a floating-point output (integer and boolean results: 0)."""
    @_raw
    def count(*args, out_val=None, **kwargs) -> int:
        out = _first(out_val)
        return cost * out.numel() if out.is_floating_point() else 0
    return count


def _per_input(cost: int):
    @_raw
    def count(x, *args, out_val=None, **kwargs) -> int:
        return cost * x.numel()
    return count


def _window(cost_of_area):
    """Pooling: cost_of_area(kh * kw) FLOPs per output element."""
    @_raw
    def count(x, kernel_size, *args, out_val=None, **kwargs) -> int:
        kh, kw = kernel_size if len(kernel_size) == 2 else (kernel_size[0], kernel_size[0])
        return cost_of_area(kh * kw) * _first(out_val).numel()
    return count


def filter_taps(n_in: int, n_out: int, scale: float | None = None, base: float = 1.0) -> int:
    """Input samples in the filter windows of an antialiased resize, summed over the n_out outputs of one dimension
    (xsize of PyTorch's `_compute_index_ranges_weights`, align_corners=False: scale = n_in / n_out, support =
    base * scale each side when downsampling, else base; base 1 bilinear, 2 bicubic). At an integer scale a
    window's last sample lies on the support's edge (weight 0); it is counted, as the kernel loops over it."""
    scale = n_in / n_out if scale is None else scale
    support = base * scale if scale >= 1 else base
    centres = (scale * (i + 0.5) for i in range(n_out))
    return sum(min(int(c + support + 0.5), n_in) - max(int(c - support + 0.5), 0) for c in centres)


def _resize_aa(base: float):
    @_raw
    def count(x, output_size, align_corners, scales_h=None, scales_w=None, *, out_val=None) -> int:
        n, c, h, w = x.shape
        oh, ow = output_size
        flops = 0
        if ow != w:  # width first: (N, C, h, w) -> (N, C, h, ow)
            flops += 2 * n * c * h * filter_taps(w, ow, 1 / scales_w if scales_w else None, base)
        if oh != h:  # then height: -> (N, C, oh, ow)
            flops += 2 * n * c * ow * filter_taps(h, oh, 1 / scales_h if scales_h else None, base)
        return flops
    return count


@_raw
def _grid_sample(x, grid, interpolation_mode, *args, out_val=None, **kwargs) -> int:
    return (8, 0, 32)[interpolation_mode] * out_val.numel()  # bilinear, nearest, bicubic: 2 per sample


OTHER_COSTS = {
    aten._upsample_bilinear2d_aa: _resize_aa(1.0), aten._upsample_bicubic2d_aa: _resize_aa(2.0),
    aten.upsample_bilinear2d: _per_output(8), aten.upsample_bicubic2d: _per_output(32),
    aten.grid_sampler_2d: _grid_sample,
    aten.max_pool2d_with_indices: _window(lambda a: a - 1), aten.max_pool2d: _window(lambda a: a - 1),
    aten.avg_pool2d: _window(lambda a: a),
    aten.mean: _per_input(1), aten.sum: _per_input(1), aten._adaptive_avg_pool2d: _per_input(1),
    aten.native_batch_norm: _per_output(2), aten._native_batch_norm_legit_no_training: _per_output(2),
    aten._native_batch_norm_legit: _per_output(2),
    aten._softmax: _per_input(5), aten._log_softmax: _per_input(5), aten.logsumexp: _per_input(4),
    **{getattr(aten, name): _per_output(1) for name in (
        "add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "neg", "relu", "relu_", "hardtanh",
        "hardtanh_", "clamp", "clamp_", "clamp_min", "clamp_min_", "clamp_max", "clamp_max_", "exp", "log",
        "sigmoid", "sigmoid_", "tanh", "silu", "silu_", "gelu", "hardswish", "hardswish_", "hardsigmoid", "abs",
        "sqrt", "rsqrt", "pow", "reciprocal", "maximum", "minimum")},
}


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one eval forward, multiply and add counted separately (see the module docstring)."""
    conv_matmul: int  # convolutions and matrix products: PyTorch's counter, what `test_flops_per_image` is
    other: int  # every other op at the per-element costs of OTHER_COSTS
    other_by_op: dict[str, int] = field(default_factory=dict)  # `other` by aten op, e.g. "_upsample_bilinear2d_aa"


def flop_counts(model: nn.Module, x: torch.Tensor, **kwargs) -> FlopCount:
    """Both FLOP counts of one eval forward of x (kwargs go to the model), in one pass (meta tensors work too)."""
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=OTHER_COSTS) as counter:
        model(x, **kwargs)
    counts = counter.get_flop_counts().get("Global", {})
    other = {str(op).removeprefix("aten."): n for op, n in counts.items() if op in OTHER_COSTS and n}
    return FlopCount(conv_matmul=sum(n for op, n in counts.items() if op not in OTHER_COSTS),
                     other=sum(other.values()), other_by_op=other)


def count_flops(model: nn.Module, x: torch.Tensor, **kwargs) -> int:
    """Convolution and matrix-product FLOPs (PyTorch's counter) of one eval forward of x: `flop_counts`'s
    conv_matmul."""
    return flop_counts(model, x, **kwargs).conv_matmul


def example_input(model: nn.Module, image_shape: tuple[int, ...]) -> torch.Tensor:
    """One image as the model reads it in `evaluate`: uint8 for a model that takes uint8, else floats in [0, 1]."""
    if takes_uint8(model):
        return torch.randint(0, 256, (1, *image_shape), dtype=torch.uint8)
    return torch.rand(1, *image_shape)


def flop_counts_per_image(model: nn.Module, image_shape: tuple[int, ...], **kwargs) -> FlopCount:
    return flop_counts(model, example_input(model, image_shape), **kwargs)


def flops_per_image(model: nn.Module, image_shape: tuple[int, ...], **kwargs) -> int:
    """Convolution and matrix-product FLOPs per image (`test_flops_per_image`)."""
    return flop_counts_per_image(model, image_shape, **kwargs).conv_matmul


def flop_keys(prefix: str, flops: FlopCount) -> dict:
    """PREFIX_flops_per_image: convolutions and matrix products only (PyTorch's counter, the published key);
    PREFIX_other_flops_per_image: every other op, at the costs of OTHER_COSTS."""
    return {f"{prefix}_flops_per_image": flops.conv_matmul, f"{prefix}_other_flops_per_image": flops.other}


# the docs' headline FLOP ratios: (data set, two-glance preset, test k, reference: a preset or the full-resolution
# CNN of that size, image shape); k as published (docs/results/megapixel-mnist*.json), None: the preset's
HEADLINE_RATIOS = (
    ("digits 48x48 (`make demo`)", "digits-two", None, "digits-one", (1, 48, 48)),
    ("cluttered MNIST 60x60", "mnist60-two-oracle", None, "mnist60-one", (1, 60, 60)),
    ("cluttered MNIST 100x100", "mnist100-two-oracle", None, "mnist100-one", (1, 100, 100)),
    ("megapixel MNIST 500x500", "megapixel-easy-two", 6, "full-resolution CNN", (1, 500, 500)),
    ("megapixel MNIST 1500x1500", "megapixel-two", 5, "full-resolution CNN", (1, 1500, 1500)),
    ("CIFAR-10 32x32", "paper-cifar10-two-s2", None, "paper-cifar10-one-s2", (3, 32, 32)),
)


def flop_shares(rows=HEADLINE_RATIOS) -> list[dict]:
    """Both FLOP counts of each headline pair, fresh weights (counts do not depend on them): the two-glance model
    at test k, its reference (the full-resolution CNN counted on meta tensors, nothing computed)."""
    from .models import create_model
    from .models.megapixel import full_resolution_cnn

    out = []
    for data, two_name, k, ref_name, shape in rows:
        torch.manual_seed(0)
        two = flop_counts_per_image(create_model(two_name), shape, **({"k": k} if k else {}))
        if ref_name == "full-resolution CNN":
            with torch.device("meta"):
                ref = flop_counts(full_resolution_cnn(image_size=shape[1], in_channels=shape[0]),
                                  torch.empty(1, *shape))
        else:
            ref = flop_counts_per_image(create_model(ref_name), shape)
        out.append({"data": data, "two": two_name + (f" (k={k})" if k else ""), "reference": ref_name,
                    "two_flops": two, "reference_flops": ref})
    return out


def _ratio(reference: int, two: int) -> str:
    r = reference / two
    return f"1/{r:.0f}" if r >= 20 else f"1/{r:.1f}"


def flop_share_table(rows=HEADLINE_RATIOS) -> str:
    """`flop_shares` as the Markdown table of docs/PERFORMANCE.md:
    python -c "from multiglance.flops import flop_share_table; print(flop_share_table())" """
    lines = ["| data set | two glances | reference | conv+matmul MFLOPs, two / reference (ratio) | other MFLOPs, "
             "two (of which the thumbnail resize) / reference | other share of two's total | ratio of totals |",
             "|---|---|---|---|---|---|---|"]
    for r in flop_shares(rows):
        t, f = r["two_flops"], r["reference_flops"]
        resize = t.other_by_op.get("_upsample_bilinear2d_aa", 0)
        lines.append(f"| {r['data']} | {r['two']} | {r['reference']} | {t.conv_matmul / 1e6:,.2f} / "
                     f"{f.conv_matmul / 1e6:,.2f} ({_ratio(f.conv_matmul, t.conv_matmul)}) | {t.other / 1e6:,.2f} "
                     f"({resize / 1e6:,.2f}) / {f.other / 1e6:,.2f} | {t.other / (t.conv_matmul + t.other):.1%} | "
                     f"{_ratio(f.conv_matmul + f.other, t.conv_matmul + t.other)} |")
    return "\n".join(lines)
