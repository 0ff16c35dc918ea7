"""The one-glance baseline and the two-glance model of DEVELOPERS.md: one `TwoGlance` whose parts are options.

TwoGlance, stage by stage (B images of C x H x W, as floats in [0, 1] or uint8 in [0, 255]; a th x tw
thumbnail, th = thumb_size, tw = round(th * W / H); a gh x gw grid of P = gh * gw patches of side p; K classes;
F1, F2 the flat feature sizes of glance 1 on the thumbnail and glance 2 on a patch; n patches chosen):
    thumbnail(x)             (B, C, H, W) -> (B, C, th, tw)         antialiased downsample, floats in [0, 1]
    glance1_features(x)      (B, C, H, W) -> (B, F1)                glance 1 on the normalised thumbnail
    patch_scores(x)          (B, C, H, W) -> (B, P)                 "where to look" (pre-softmax), see `scorer`
    patch_weights(x)         (B, C, H, W) -> (B, P)                 softmax of the scores, w
    top_patches(s, k)        (B, P) -> (B, k)                       the k best, see `selection` (models/select.py)
    patches(x)               (B, C, H, W) -> (B, P, C, p, p)        every patch, as x is (a strided view, one copy)
    select_patches(x, i)     (B, C, H, W), (B, k) -> (B, k, C, p, p)  only the chosen patches are copied
    normalize_patches(ps)    (B, n, C, p, p) -> (B, n, C, p, p)     floats, normalised as glance 2 expects
    classify_patches(ps)     (B, n, C, p, p) -> (B, n, K)           glance 2: "what it is", shared weights, logits z
    output(x, mode, k)       (B, C, H, W) -> (B, K), (B, k)         test-time GlanceOutput: answer, patches looked at
    infer(x, mode, k)        (B, C, H, W) -> (B, K), (B, k)         the same two tensors, as a tuple
    classify(x, k)           (B, C, H, W) -> (B, K), (B,)           probabilities, the top patch
    patch_boxes()            () -> (P, 4)                           (x0, y0, x1, y1) in input pixels
Only what is used is normalised: the thumbnail, and the patches cut from the raw input, so a uint8 megapixel
canvas becomes floats only for the moment it takes to resize it.

Options (keywords of the constructor): `scorer` "dense" (the report's affine layer on glance 1's flat features,
P x F1 weights) or "conv" (`ScoreMap`: a conv head on glance 1's feature map, sampled at the patch centres, ~10k
weights for any P); `selection` "topk" or "nms" (top-k with non-maximum suppression within `nms_radius` grid
steps); `topk_combine` "weights" (glance 1's scores softmaxed over the k chosen, then `combine`) or "equal" (the
mean of the k patches' probabilities, as its log); `choice` how training chooses (see `forward`).
Training combines patches ("logits", "probs", "mixture" or "presence", models/combine.py); inference is "hard"
(glance 2 on the top-k patches, the default k = 1) or "soft" (all patches, as in soft training).
A training forward returns a `GlanceOutput` (models/output.py): the answer, its kind (logits, probabilities or
log-probabilities) and what the objective of `choice` needs (train/objectives.py); an eval forward returns the
answer tensor of `output`, whose `kind` says what it is.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .backbones import create_backbone, head_of, load_weights
from .blocks import Normalize, head
from .combine import COMBINE_MODES, combine
from .output import COMBINE_KINDS, GlanceOutput
from .scoremap import ScoreMap
from .select import gumbel_perturb, select_topk

INFERENCE_MODES = ("hard", "soft")
CHOICE_MODES = ("soft", "gumbel", "reinforce", "oracle", "topk")
SCORERS = ("dense", "conv")
SELECTIONS = ("topk", "nms")
TOPK_COMBINES = ("weights", "equal")
EXPLORE_BY = ("sample", "ink")


def read_features(fmap: torch.Tensor, how: str) -> torch.Tensor:
    """(B, C, h, w) feature map -> (B, F): "flat" (the report's: every position, F = C*h*w) or "pool" (global
    average, F = C: any input size, a few weights, and a stable first step for a from-scratch net)."""
    return fmap.flatten(1) if how == "flat" else fmap.mean((2, 3))


def build_glance(backbone: str, *, pretrained: bool, weights: str | None, what: str, **house) -> tuple[nn.Module, str]:
    """A glance's backbone (models/backbones.py), with local weights loaded if given; (module, weights SHA-256 or
    "")."""
    net = create_backbone(backbone, pretrained=pretrained, **house)
    return net, (load_weights(net, weights, what) if weights else "")


def input_norm(net: nn.Module, channels: int) -> Normalize:
    """The normalisation a backbone's weights expect: fixed (pretrained), or the data's statistics (house)."""
    norm = Normalize(channels)
    if net.input_norm is not None:
        norm.fix(*(torch.tensor(v) for v in net.input_norm))
    return norm


def resize(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear resize of (B, C, H, W) to (B, C, h, w), `size` = h = w or (h, w); identity when
    already that size."""
    h, w = (size, size) if isinstance(size, int) else size
    if x.shape[-2] == h and x.shape[-1] == w:
        return x
    return F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 in [0, 255] -> a new float tensor in [0, 1]; floats are returned as they are (no copy)."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x


class OneGlance(nn.Module):
    """One CNN on the whole image (optionally resized to `input_size` rows first, the width following the aspect):
    (B, C, H, W) -> (B, K) logits. `backbone`: see models/backbones.py; `head` "flat" (the report's) or "pool"."""

    kind = "one"

    def __init__(self, *, in_channels: int, num_classes: int, image_size: int, channels: tuple[int, ...],
                 pool_stride: int, input_size: int | None = None, hidden: int = 0, batchnorm: bool = False,
                 image_width: int | None = None, backbone: str = "house", pretrained: bool = False,
                 head_type: str = "flat", weights: str | None = None, freeze: int = 0):
        super().__init__()
        h, w = image_size, image_width or image_size
        self.image_size, self.image_width, self.input_size = h, w, input_size or h
        self.input_shape = (self.input_size, max(1, round(self.input_size * w / h)))
        self.head_type = head_of(backbone, head_type)
        self.features, sha = build_glance(backbone, pretrained=pretrained, weights=weights,
                                                          what="the one-glance CNN", in_channels=in_channels,
                                                          channels=channels, pool_stride=pool_stride,
                                                          batchnorm=batchnorm, freeze=freeze)
        self.weights_sha256 = {"glance2": sha} if sha else {}  # of model.glance2_weights, for the run's record
        self.normalize = input_norm(self.features, in_channels)
        fh, fw = self.features.out_size(*self.input_shape)
        flat = self.features.out_channels * (fh * fw if self.head_type == "flat" else 1)
        self.classifier = head(flat, num_classes, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = resize(self.normalize(to_unit(x)), self.input_shape)  # (B, C, s, s')
        return self.classifier(read_features(self.features(x), self.head_type))  # (B, K)

    def output(self, x: torch.Tensor) -> GlanceOutput:
        """The answer as a GlanceOutput: (B, K) logits."""
        return GlanceOutput(self(x), "logits")

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.output(x).probs(), None


class TwoGlance(nn.Module):
    """Glance 1 on a thumbnail chooses patches; glance 2 classifies them. See the module docstring."""

    kind = "two"
    accepts_uint8 = True  # batches may stay uint8: only the thumbnail and the chosen patches become float

    def __init__(self, *, in_channels: int, num_classes: int, image_size: int, channels: tuple[int, ...],
                 pool_stride: int, patch_size: int, patch_stride: int, thumb_size: int,
                 image_width: int | None = None, glance1_channels: tuple[int, ...] | None = None,
                 combine: str = "logits", inference: str = "hard", top_k: int = 1, choice: str = "soft",
                 tau: float = 1.0, fuse: bool = False, hidden: int = 0, batchnorm: bool = False,
                 scorer: str = "dense", score_width: int = 32, selection: str = "topk", nms_radius: int = 1,
                 topk_combine: str = "weights", explore: int = 0, explore_by: str = "sample",
                 backbone: str = "house", glance1_backbone: str | None = None, pretrained: bool = False,
                 head_type: str = "flat", glance1_weights: str | None = None, glance2_weights: str | None = None,
                 glance1_aux: bool = False, freeze: int = 0, background: int | None = None):
        super().__init__()
        h, w = image_size, image_width or image_size
        if (patch_stride < 1 or patch_size > min(h, w) or (h - patch_size) % patch_stride
                or (w - patch_size) % patch_stride):
            raise ConfigError(
                f"a grid of {patch_size}x{patch_size} patches with stride {patch_stride} does not tile a "
                f"{h}x{w} image; choose patch_size/patch_stride with (image_size - patch_size) and "
                f"(image_width - patch_size) divisible by patch_stride")
        for name, value, allowed in (("combine", combine, COMBINE_MODES), ("inference", inference, INFERENCE_MODES),
                                     ("choice", choice, CHOICE_MODES), ("scorer", scorer, SCORERS),
                                     ("selection", selection, SELECTIONS),
                                     ("topk_combine", topk_combine, TOPK_COMBINES),
                                     ("explore_by", explore_by, EXPLORE_BY)):
            if value not in allowed:
                raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")
        for name, value, low in (("thumb_size", thumb_size, 1), ("score_width", score_width, 1),
                                 ("nms_radius", nms_radius, 0), ("explore", explore, 0)):
            if value < low:
                raise ConfigError(f"{name}={value} must be at least {low}")
        self.image_size, self.image_width, self.image_shape = h, w, (h, w)
        self.patch_size, self.patch_stride = patch_size, patch_stride
        self.thumb_size, self.thumb_shape = thumb_size, (thumb_size, max(1, round(thumb_size * w / h)))
        self.grid = ((h - patch_size) // patch_stride + 1, (w - patch_size) // patch_stride + 1)  # (gh, gw)
        self.num_patches = self.grid[0] * self.grid[1]
        if not 1 <= top_k <= self.num_patches:
            raise ConfigError(f"top_k={top_k} must be between 1 and the number of patches ({self.num_patches})")
        if choice == "topk" and top_k + explore > self.num_patches:
            raise ConfigError(f"top_k + explore = {top_k + explore} training patches, but there are only "
                              f"{self.num_patches}; lower top_k or explore")
        if combine == "presence" and (background is None or not 0 <= background < num_classes):
            raise ConfigError(f"combine=presence needs a background class index in [0, {num_classes}), got "
                              f"{background}: set model.background to the data's 'no object' class")
        self.combine, self.inference, self.top_k, self.background = combine, inference, top_k, background
        self.choice, self.tau, self.fuse = choice, tau, fuse
        self.scorer, self.selection, self.nms_radius = scorer, selection, nms_radius
        self.topk_combine, self.explore, self.explore_by = topk_combine, explore, explore_by
        self.generator: torch.Generator | None = None  # exploration noise (choice="topk"); None: the global RNG
        house = dict(in_channels=in_channels, pool_stride=pool_stride, batchnorm=batchnorm)
        self.glance1, sha1 = build_glance(glance1_backbone or backbone, pretrained=pretrained, what="glance 1",
                                          weights=glance1_weights, channels=glance1_channels or channels, **house)
        self.glance2, sha2 = build_glance(backbone, pretrained=pretrained, weights=glance2_weights, what="glance 2",
                                          channels=channels, freeze=freeze, **house)
        self.weights_sha256 = {k: v for k, v in (("glance1", sha1), ("glance2", sha2)) if v}
        self.normalize = input_norm(self.glance2, in_channels)  # glance 2's (and glance 1's, when it is the same)
        if self.glance1.input_norm != self.glance2.input_norm:
            self.normalize1 = input_norm(self.glance1, in_channels)
        self.head1 = head_of(glance1_backbone or backbone, head_type)
        self.head2 = head_of(backbone, head_type)
        fh, fw = self.glance1.out_size(*self.thumb_shape)
        c1 = self.glance1.out_channels
        self.glance1_fmap = (c1, fh, fw)
        f1 = c1 * fh * fw if self.head1 == "flat" or scorer == "conv" else c1  # glance 1's flat feature size F1
        self.glance1_aux = glance1_aux
        if glance1_aux and scorer != "conv":
            raise ConfigError("glance1_aux needs scorer=conv (glance 1's answer pools its score map)")
        if scorer == "dense":
            self.where = nn.Linear(f1, self.num_patches)
        else:
            self.where = ScoreMap(channels=c1, fmap=(fh, fw), centres=self._patch_centres(), width=score_width,
                                  classes=num_classes if glance1_aux else 0)
        gh, gw = self.glance2.out_size(patch_size, patch_size)
        f2 = self.glance2.out_channels * (gh * gw if self.head2 == "flat" else 1)
        self.feature_sizes = (f1, f2)  # (F1, F2)
        self.what = head(f2 + (f1 if fuse else 0), num_classes, hidden)

    @property
    def radius(self) -> int:
        """Suppression radius of `top_patches` in grid steps (0: plain top-k)."""
        return self.nms_radius if self.selection == "nms" else 0

    def _patch_centres(self) -> torch.Tensor:
        """(P, 2) patch centres as (x, y) in grid_sample's coordinates: -1 and 1 are the image's outer edges."""
        (gh, gw), (h, w), p, s = self.grid, self.image_shape, self.patch_size, self.patch_stride
        cy = (torch.arange(gh) * s + p / 2) / h * 2 - 1  # (gh,)
        cx = (torch.arange(gw) * s + p / 2) / w * 2 - 1  # (gw,)
        yy, xx = torch.meshgrid(cy, cx, indexing="ij")  # (gh, gw) each
        return torch.stack([xx.flatten(), yy.flatten()], dim=-1)  # (P, 2)

    # ---- stages -------------------------------------------------------------------------------------------
    def thumbnail(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, th, tw) floats in [0, 1]. A uint8 image is resized by torch's uint8 antialiased
        kernel (4-8x faster than converting the whole image to float first: at 1024x1024 the float copy and
        resize took most of the model's time; fixed-point weights, rounded to uint8 levels), so it agrees with the
        float path to within one level (1/255); training and `eval` feed uint8, so both see the same thumbnails."""
        if x.dtype == torch.uint8 and x.device.type == "cpu":
            return to_unit(resize(x, self.thumb_shape))  # (B, C, th, tw)
        return resize(to_unit(x), self.thumb_shape)  # (B, C, th, tw)

    def glance1_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, F1): glance 1 on the thumbnail; with scorer=conv its map, flattened (F1 = C1*f*g)."""
        norm = getattr(self, "normalize1", self.normalize)
        fmap = self.glance1(norm(self.thumbnail(x)))  # (B, C1, f, g)
        return fmap.flatten(1) if self.scorer == "conv" else read_features(fmap, self.head1)  # (B, F1)

    def patch_scores(self, x: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        features = self.glance1_features(x) if features is None else features
        return self.where(features)  # (B, P)

    def patch_weights(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch_scores(x).softmax(-1)  # (B, P)

    def top_patches(self, scores: torch.Tensor, k: int, exclude: torch.Tensor | None = None) -> torch.Tensor:
        return select_topk(scores, k, self.grid, self.radius, exclude=exclude)  # (B, k), distinct

    def _grid_view(self, x: torch.Tensor) -> torch.Tensor:
        p, s = self.patch_size, self.patch_stride
        return x.unfold(2, p, s).unfold(3, p, s)  # (B, C, gh, gw, p, p), a view: nothing copied

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        v = self._grid_view(x).permute(0, 2, 3, 1, 4, 5)  # (B, gh, gw, C, p, p)
        return v.reshape(b, self.num_patches, c, self.patch_size, self.patch_size)  # (B, P, C, p, p)

    def select_patches(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        rows, cols = index // self.grid[1], index % self.grid[1]  # (B, k) each
        batch = torch.arange(x.shape[0], device=x.device)[:, None]  # (B, 1)
        return self._grid_view(x)[batch, :, rows, cols]  # (B, k, C, p, p): only these are copied

    def normalize_patches(self, patches: torch.Tensor) -> torch.Tensor:
        return self.normalize(to_unit(patches))  # (B, n, C, p, p) floats

    def classify_patches(self, patches: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, n = patches.shape[:2]
        flat = patches.reshape(b * n, *patches.shape[2:])  # (B*n, C, p, p)
        if flat.is_contiguous() and patches.device.type == "cpu":
            flat = flat.contiguous(memory_format=torch.channels_last)
        f = read_features(self.glance2(flat), self.head2).view(b, n, -1)  # (B, n, F2)
        if self.fuse:
            f = torch.cat([f, context[:, None, :].expand(b, n, context.shape[-1])], dim=-1)  # (B, n, F2+F1)
        return self.what(f)  # (B, n, K)

    def _classify_chosen(self, x: torch.Tensor, index: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        return self.classify_patches(self.normalize_patches(self.select_patches(x, index)), context)  # (B, n, K)

    def ink_scores(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, P): each patch's mean intensity in [0, 1] over pixels and channels (average pools)."""
        p, s = self.patch_size, self.patch_stride
        u = x.float()  # (B, C, H, W)
        if p % s == 0:  # means of s x s cells, then of (p/s)^2 cells: about H * W + P * (p/s)^2 additions
            means = F.avg_pool2d(F.avg_pool2d(u, s), p // s, stride=1)  # (B, C, gh, gw)
        else:
            means = F.avg_pool2d(u, p, stride=s)  # (B, C, gh, gw)
        return means.mean(1).flatten(1) / (255 if x.dtype == torch.uint8 else 1)  # (B, P)

    def choose_patches(self, scores: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """choice="topk" training: (B, P) scores -> (B, n) indices, n = top_k + explore, no gradient: the top_k
        best (as `selection` says), then `explore` others sampled without replacement (Gumbel top-k, noise from
        `self.generator`) from glance 1's weights ("sample") or by log mean ink ("ink"), never one chosen."""
        s = scores.detach()
        index = self.top_patches(s, self.top_k)  # (B, k)
        if self.explore:
            by = s if self.explore_by == "sample" else (self.ink_scores(x) + 1e-3 / 255).log()  # (B, P)
            extra = self.top_patches(gumbel_perturb(by, self.generator), self.explore, exclude=index)  # (B, e)
            index = torch.cat([index, extra], dim=1)  # (B, n)
        return index

    def combine_topk(self, scores: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Hard inference on k > 1 patches: their (B, k) scores and (B, k, K) logits -> (B, K), by `topk_combine`,
        of kind `topk_kind`."""
        if self.topk_combine == "equal" and self.combine == "presence":  # presence with equal weights
            return self.mix(torch.full_like(scores, 1.0 / scores.shape[1]), z)  # (B, K)
        if self.topk_combine == "equal":  # log of the mean of the k probabilities
            return torch.logsumexp(z.log_softmax(-1), dim=1) - math.log(z.shape[1])  # (B, K)
        return self.mix(scores.softmax(-1), z)  # (B, K): weights renormalised over the k

    def mix(self, w: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """`combine` by this model's rule: (B, n) weights, (B, n, K) logits -> (B, K) answer of COMBINE_KINDS."""
        return combine(w, z, self.combine, self.background)

    @property
    def topk_kind(self) -> str:
        """What `combine_topk` returns: log-probabilities ("equal"), else what `combine` does."""
        return "log_probs" if self.topk_combine == "equal" else COMBINE_KINDS[self.combine]

    # ---- whole model --------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, mode: str | None = None, k: int | None = None) -> GlanceOutput | torch.Tensor:
        """Training: a GlanceOutput of the combination `choice` says (soft: all patches; topk: glance 2 on top_k +
        explore patches only), with what its objective needs. Eval: the (B, K) answer of `output(x, mode, k)`."""
        if not self.training:
            return self.output(x, mode, k).answer
        g = self.glance1_features(x)  # (B, F1)
        glance1 = None
        if self.glance1_aux:
            scores, glance1 = self.where.attend(g)  # (B, P), (B, K) glance 1's own answer
        else:
            scores = self.where(g)  # (B, P)
        context = g if self.fuse else None
        w = scores.softmax(-1)  # (B, P)
        seen = dict(scores=scores, weights=w, glance1_logits=glance1)
        if self.choice == "reinforce":  # sample one patch from w; only it is classified, as at test time
            index = torch.multinomial(w.detach(), 1)  # (B, 1)
            log_prob = w.gather(1, index)[:, 0].clamp_min(1e-12).log()  # (B,), the loss adds REINFORCE
            return GlanceOutput(self._classify_chosen(x, index, context)[:, 0], "logits", selected_index=index,
                                log_prob=log_prob, **seen)  # (B, K)
        kind = COMBINE_KINDS[self.combine]
        if self.choice == "topk":  # glance 2 with grad on n chosen patches; weights renormalised over them reach
            index = self.choose_patches(scores, x)  # (B, n)                    glance 1 through the softmax
            z = self._classify_chosen(x, index, context)  # (B, n, K)
            chosen = scores.gather(1, index)  # (B, n)
            return GlanceOutput(self.mix(chosen.softmax(-1), z), kind, selected_index=index,
                                selected_logits=z, selected_scores=chosen, **seen)  # (B, K)
        z = self.classify_patches(self.normalize_patches(self.patches(x)), context)  # (B, P, K)
        # choice="oracle": glance 2 learns on every patch, glance 1 which patch it gets right (`oracle_loss`)
        if self.choice == "gumbel":  # straight-through Gumbel-softmax: one patch forward, soft gradient back
            w = F.gumbel_softmax(scores, tau=self.tau, hard=True)  # (B, P) one-hot, gradient of the soft sample
            if self.combine == "mixture":  # log of a one-hot w passes no gradient to the unchosen patches;
                answer = combine(w, z, "probs").clamp_min(1e-12).log()  # log sum_i w_i p_i: same value, and it does
                return GlanceOutput(answer, kind, patch_logits=z, **seen)  # (B, K)
        return GlanceOutput(self.mix(w, z), kind, patch_logits=z, **seen)  # (B, K)

    def output(self, x: torch.Tensor, mode: str | None = None, k: int | None = None) -> GlanceOutput:
        """Test-time answer (B, K), its kind, and the (B, k) indices of the patches glance 2 looked at (soft: all
        P, best first). Hard with k = 1 is glance 2's logits on the top patch."""
        g = self.glance1_features(x)  # (B, F1)
        scores = self.where(g)  # (B, P)
        context = g if self.fuse else None
        if (mode or self.inference) == "soft":
            w = scores.softmax(-1)  # (B, P)
            z = self.classify_patches(self.normalize_patches(self.patches(x)), context)  # (B, P, K)
            return GlanceOutput(self.mix(w, z), COMBINE_KINDS[self.combine], scores=scores, weights=w,
                                patch_logits=z, selected_index=scores.argsort(-1, descending=True))
        k = k or self.top_k
        index = self.top_patches(scores, k)  # (B, k)
        z = self._classify_chosen(x, index, context)  # (B, k, K)
        seen = dict(scores=scores, selected_index=index, selected_logits=z)
        if k == 1:
            return GlanceOutput(z[:, 0], "logits", **seen)  # (B, K): glance 2's answer on the top patch
        return GlanceOutput(self.combine_topk(scores.gather(1, index), z), self.topk_kind, **seen)

    def infer(self, x: torch.Tensor, mode: str | None = None,
              k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`output`'s (B, K) answer and (B, k) patch indices, as a tuple."""
        out = self.output(x, mode, k)
        return out.answer, out.selected_index

    @torch.no_grad()
    def classify(self, x: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Hard (top-k) inference: class probabilities (B, K) and the index of the top patch (B,)."""
        out = self.output(x, "hard", k)
        return out.probs(), out.selected_index[:, 0]

    def patch_boxes(self) -> torch.Tensor:
        """(P, 4) boxes (x0, y0, x1, y1) of the patches in row-major order, in input pixels."""
        i = torch.arange(self.num_patches)
        y0, x0 = (i // self.grid[1]) * self.patch_stride, (i % self.grid[1]) * self.patch_stride
        return torch.stack([x0, y0, x0 + self.patch_size, y0 + self.patch_size], dim=1)
