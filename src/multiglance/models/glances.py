"""The one-glance baseline and the two-glance model of DEVELOPERS.md.

TwoGlance, stage by stage (B images, P patches of size p, K classes):
    thumbnail(x)          (B, C, H, W) -> (B, C, t, t)      antialiased downsample
    patch_scores(x)       (B, C, H, W) -> (B, P)            glance 1: "where to look" (pre-softmax)
    patch_weights(x)      (B, C, H, W) -> (B, P)            softmax of the scores, w
    patches(x)            (B, C, H, W) -> (B, P, C, p, p)   every patch (a strided view, then one copy)
    select_patches(x, i)  (B, C, H, W), (B, k) -> (B, k, C, p, p)   only the chosen patches are copied
    classify_patches(ps)  (B, n, C, p, p) -> (B, n, K)      glance 2: "what it is", shared weights, logits z
Training combines all patches ("logits", "probs" or "mixture", see `combine`); inference is "hard" (glance 2
on the top patch only, the default), "soft" (all patches, as in training) or top-k. Inputs are floats in [0, 1].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .blocks import ConvStack, Normalize, head

COMBINE_MODES = ("logits", "probs", "mixture")
INFERENCE_MODES = ("hard", "soft")
CHOICE_MODES = ("soft", "gumbel", "reinforce", "oracle")


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bilinear resize of (B, C, H, W) to (B, C, size, size); identity when already that size."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def combine(w: torch.Tensor, z: torch.Tensor, mode: str) -> torch.Tensor:
    """Combine per-patch logits z (B, n, K) with weights w (B, n) into (B, K) logits for cross-entropy.

    logits:  sum_i w_i z_i                      (the report's text; softmax of it is the answer)
    probs:   sum_i w_i softmax(z_i)             (its figure caption; a final softmax is applied on top)
    mixture: log sum_i w_i softmax(z_i)         (a proper mixture: already log-probabilities)
    """
    if mode == "logits":
        return torch.einsum("bn,bnk->bk", w, z)
    if mode == "probs":
        return torch.einsum("bn,bnk->bk", w, z.softmax(-1))
    if mode == "mixture":
        return torch.logsumexp(torch.log(w.clamp_min(1e-12))[..., None] + z.log_softmax(-1), dim=1)
    raise ConfigError(f"unknown combine mode {mode!r}; choose one of {', '.join(COMBINE_MODES)}")


class OneGlance(nn.Module):
    """One CNN on the whole image (optionally resized to `input_size` first): (B, C, H, W) -> (B, K) logits."""

    kind = "one"

    def __init__(self, *, in_channels: int, num_classes: int, image_size: int, channels: tuple[int, ...],
                 pool_stride: int, input_size: int | None = None, hidden: int = 0, batchnorm: bool = False):
        super().__init__()
        self.image_size, self.input_size = image_size, input_size or image_size
        self.normalize = Normalize(in_channels)
        self.features = ConvStack(in_channels=in_channels, channels=channels, size=self.input_size,
                                  pool_stride=pool_stride, batchnorm=batchnorm)
        self.classifier = head(self.features.out_features, num_classes, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = resize(self.normalize(x), self.input_size)  # (B, C, s, s)
        return self.classifier(self.features(x))  # (B, K)

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self(x).softmax(-1), None


class TwoGlance(nn.Module):
    """Glance 1 on a thumbnail chooses a patch; glance 2 classifies patches. See the module docstring."""

    kind = "two"

    def __init__(self, *, in_channels: int, num_classes: int, image_size: int, channels: tuple[int, ...],
                 pool_stride: int, patch_size: int, patch_stride: int, thumb_size: int,
                 glance1_channels: tuple[int, ...] | None = None, combine: str = "logits",
                 inference: str = "hard", top_k: int = 1, choice: str = "soft", tau: float = 1.0,
                 fuse: bool = False, hidden: int = 0, batchnorm: bool = False):
        super().__init__()
        if patch_size > image_size or (image_size - patch_size) % patch_stride:
            raise ConfigError(
                f"a grid of {patch_size}x{patch_size} patches with stride {patch_stride} does not tile a "
                f"{image_size}x{image_size} image; choose patch_size/patch_stride with "
                f"(image_size - patch_size) divisible by patch_stride")
        for name, value, allowed in (("combine", combine, COMBINE_MODES), ("inference", inference,
                                     INFERENCE_MODES), ("choice", choice, CHOICE_MODES)):
            if value not in allowed:
                raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")
        self.image_size, self.patch_size, self.patch_stride = image_size, patch_size, patch_stride
        self.thumb_size = thumb_size
        self.grid = (image_size - patch_size) // patch_stride + 1  # patches per side
        self.num_patches = self.grid ** 2
        if not 1 <= top_k <= self.num_patches:
            raise ConfigError(f"top_k={top_k} must be between 1 and the number of patches ({self.num_patches})")
        self.combine, self.inference, self.top_k = combine, inference, top_k
        self.choice, self.tau, self.fuse = choice, tau, fuse
        self.normalize = Normalize(in_channels)
        self.glance1 = ConvStack(in_channels=in_channels, channels=glance1_channels or channels, size=thumb_size,
                                 pool_stride=pool_stride, batchnorm=batchnorm)
        self.where = nn.Linear(self.glance1.out_features, self.num_patches)
        self.glance2 = ConvStack(in_channels=in_channels, channels=channels, size=patch_size,
                                 pool_stride=pool_stride, batchnorm=batchnorm)
        context = self.glance1.out_features if fuse else 0
        self.what = head(self.glance2.out_features + context, num_classes, hidden)
        self.last_weights: torch.Tensor | None = None  # (B, P) of the last training forward, for loss terms
        self.last_log_prob: torch.Tensor | None = None  # (B,) log w of the sampled patch (choice="reinforce")
        self.last_patch_logits: torch.Tensor | None = None  # (B, P, K) every patch's z (choice="oracle")
        self.last_scores: torch.Tensor | None = None  # (B, P) glance 1's scores (choice="oracle")

    # ---- stages -------------------------------------------------------------------------------------------
    def thumbnail(self, x: torch.Tensor) -> torch.Tensor:
        return resize(x, self.thumb_size)  # (B, C, t, t)

    def glance1_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.glance1(self.thumbnail(self.normalize(x)))  # (B, F1)

    def patch_scores(self, x: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        features = self.glance1_features(x) if features is None else features
        return self.where(features)  # (B, P)

    def patch_weights(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch_scores(x).softmax(-1)  # (B, P)

    def _grid_view(self, x: torch.Tensor) -> torch.Tensor:
        p, s = self.patch_size, self.patch_stride
        return x.unfold(2, p, s).unfold(3, p, s)  # (B, C, g, g, p, p), a view: nothing copied

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        v = self._grid_view(x).permute(0, 2, 3, 1, 4, 5)  # (B, g, g, C, p, p)
        return v.reshape(b, self.num_patches, c, self.patch_size, self.patch_size)  # (B, P, C, p, p)

    def select_patches(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        rows, cols = index // self.grid, index % self.grid  # (B, k) each
        batch = torch.arange(x.shape[0], device=x.device)[:, None]  # (B, 1)
        return self._grid_view(x)[batch, :, rows, cols]  # (B, k, C, p, p): only these are copied

    def classify_patches(self, patches: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, n = patches.shape[:2]
        flat = patches.reshape(b * n, *patches.shape[2:])  # (B*n, C, p, p)
        if flat.is_contiguous() and patches.device.type == "cpu":
            flat = flat.contiguous(memory_format=torch.channels_last)
        f = self.glance2(flat).view(b, n, -1)  # (B, n, F2)
        if self.fuse:
            f = torch.cat([f, context[:, None, :].expand(b, n, context.shape[-1])], dim=-1)  # (B, n, F2+F1)
        return self.what(f)  # (B, n, K)

    # ---- whole model --------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, mode: str | None = None, k: int | None = None) -> torch.Tensor:
        """Training: the combination over all patches. Eval: `mode` ("hard"/"soft", default self.inference)."""
        x = self.normalize(x)
        if not self.training:
            return self.infer(x, mode, k, normalized=True)[0]
        g = self.glance1(self.thumbnail(x))  # (B, F1)
        scores = self.where(g)  # (B, P)
        context = g if self.fuse else None
        self.last_weights = w = scores.softmax(-1)
        self.last_log_prob = None
        if self.choice == "reinforce":  # sample one patch from w; only it is classified, as at test time
            index = torch.multinomial(w.detach(), 1)  # (B, 1)
            self.last_log_prob = w.gather(1, index)[:, 0].clamp_min(1e-12).log()  # (B,), the loss adds REINFORCE
            return self.classify_patches(self.select_patches(x, index), context)[:, 0]  # (B, K)
        z = self.classify_patches(self.patches(x), context)  # (B, P, K)
        self.last_patch_logits = self.last_scores = None
        if self.choice == "oracle":  # glance 2 learns on every patch, glance 1 learns which patch it gets right:
            self.last_patch_logits, self.last_scores = z, scores  # the loss is `train.oracle_loss`
        if self.choice == "gumbel":  # straight-through Gumbel-softmax: one patch forward, soft gradient back
            w = F.gumbel_softmax(scores, tau=self.tau, hard=True)  # (B, P) one-hot, gradient of the soft sample
            if self.combine == "mixture":  # log of a one-hot w passes no gradient to the unchosen patches:
                return combine(w, z, "probs").clamp_min(1e-12).log()  # log sum_i w_i p_i has the same value, and does
        return combine(w, z, self.combine)  # (B, K)

    def infer(self, x: torch.Tensor, mode: str | None = None, k: int | None = None,
              normalized: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Test-time answer: (B, K) logits and the (B, k) indices of the patches glance 2 looked at."""
        x = x if normalized else self.normalize(x)
        g = self.glance1(self.thumbnail(x))  # (B, F1)
        scores = self.where(g)  # (B, P)
        context = g if self.fuse else None
        if (mode or self.inference) == "soft":
            z = self.classify_patches(self.patches(x), context)  # (B, P, K)
            return combine(scores.softmax(-1), z, self.combine), scores.argsort(-1, descending=True)
        k = k or self.top_k
        top = scores.topk(k, dim=-1)  # (B, k)
        z = self.classify_patches(self.select_patches(x, top.indices), context)  # (B, k, K)
        if k == 1:
            return z[:, 0], top.indices  # (B, K): glance 2's answer on the top patch
        w = top.values.softmax(-1)  # the top-k weights, renormalised: (B, k)
        return combine(w, z, self.combine), top.indices

    @torch.no_grad()
    def classify(self, x: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Hard (top-k) inference: class probabilities (B, K) and the index of the top patch (B,)."""
        logits, index = self.infer(x, "hard", k)
        probs = logits if self.combine == "probs" and index.shape[1] > 1 else logits.softmax(-1)
        return probs, index[:, 0]

    def patch_boxes(self) -> torch.Tensor:
        """(P, 4) boxes (x0, y0, x1, y1) of the patches in row-major order, in input pixels."""
        i = torch.arange(self.num_patches)
        y0, x0 = (i // self.grid) * self.patch_stride, (i % self.grid) * self.patch_stride
        return torch.stack([x0, y0, x0 + self.patch_size, y0 + self.patch_size], dim=1)
