"""The two-glance model for megapixel canvases, and the full-resolution CNN it is measured against.

`MegaTwoGlance` is a `TwoGlance` (same stages: thumbnail, patch_scores, patches, select_patches,
classify_patches, infer) whose glance 1 is fully convolutional: a `ConvStack` on the thumbnail gives a
feature map, a small conv head turns it into a score map, and each patch's score is that map sampled at
the patch's centre. `TwoGlance`'s dense `where` layer would map ~60k features to ~3500 patches (200M
weights at 1500x1500); the conv head has 10k and is the same detector everywhere on the canvas.

Shapes (B images, P = g*g patches of side p, K classes, t = thumbnail side, f = t / 4):
    thumbnail(x)        (B, 1, S, S) -> (B, 1, t, t)
    glance1(thumb)      (B, 1, t, t) -> (B, C1*f*f)        the house ConvStack, pool stride 2
    where(features)     (B, C1*f*f)  -> (B, P)              conv head + sampling at the patch centres
    select_topk(s, k)   (B, P)       -> (B, k)              top-k with non-maximum suppression
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .blocks import ConvStack, Normalize, head, pooled_size
from .glances import COMBINE_MODES, OneGlance, TwoGlance, combine, resize


class ScoreMap(nn.Module):
    """(B, C*f*f) flat glance-1 features -> (B, P) patch scores: conv 3x3 + ReLU + conv 1x1 on the (C, f, f)
    map, sampled bilinearly at the P patch centres (normalised coordinates, fixed buffer)."""

    def __init__(self, *, channels: int, fmap: int, centres: torch.Tensor, width: int = 32):
        super().__init__()
        self.channels, self.fmap = channels, fmap
        self.body = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(width, 1, 1))
        self.register_buffer("centres", centres[None, None], persistent=False)  # (1, 1, P, 2) as (x, y)

    def score_map(self, features: torch.Tensor) -> torch.Tensor:
        f = features.view(-1, self.channels, self.fmap, self.fmap)  # (B, C, f, f)
        return self.body(f)  # (B, 1, f, f)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        m = self.score_map(features)  # (B, 1, f, f)
        grid = self.centres.expand(m.shape[0], -1, -1, -1)  # (B, 1, P, 2)
        return F.grid_sample(m, grid, mode="bilinear", align_corners=False)[:, 0, 0]  # (B, P)


def select_topk(scores: torch.Tensor, k: int, grid: int, radius: int) -> torch.Tensor:
    """(B, P) scores -> (B, k) indices of the k best patches, each at least `radius + 1` grid steps away (in
    rows or columns) from those chosen before it: with stride p/2, radius 1 forbids overlapping patches.
    Falls back to plain top-k order when suppression leaves fewer than k patches."""
    if radius <= 0:
        return scores.topk(k, dim=-1).indices
    b, p = scores.shape
    rows = torch.arange(p, device=scores.device) // grid  # (P,)
    cols = torch.arange(p, device=scores.device) % grid
    live = scores.detach().clone()  # (B, P)
    chosen = []
    for _ in range(k):
        i = live.argmax(-1)  # (B,)
        chosen.append(i)
        near = ((rows[None] - rows[i][:, None]).abs() <= radius) & ((cols[None] - cols[i][:, None]).abs() <= radius)
        live = live.masked_fill(near, float("-inf"))  # (B, P)
        live[torch.arange(b), i] = float("-inf")
    return torch.stack(chosen, dim=1)  # (B, k)


class MegaTwoGlance(TwoGlance):
    """A `TwoGlance` for one-channel canvases of `image_size`, with a convolutional glance 1 and NMS top-k."""

    def __init__(self, *, num_classes: int = 10, image_size: int, thumb_size: int, patch_size: int = 50,
                 patch_stride: int = 25, channels: tuple[int, ...] = (8, 16, 32),
                 glance1_channels: tuple[int, ...] = (16, 32), combine: str = "mixture", top_k: int = 5,
                 nms_radius: int = 1):
        nn.Module.__init__(self)  # TwoGlance.__init__ would build the dense `where`; the stages are reused
        if (image_size - patch_size) % patch_stride or thumb_size % 4:
            raise ConfigError(f"patches {patch_size}/{patch_stride} must tile {image_size} and the thumbnail "
                              f"({thumb_size}) must be a multiple of 4")
        if combine not in COMBINE_MODES:
            raise ConfigError(f"unknown combine {combine!r}; choose one of {', '.join(COMBINE_MODES)}")
        self.image_size, self.patch_size, self.patch_stride = image_size, patch_size, patch_stride
        self.thumb_size, self.nms_radius = thumb_size, nms_radius
        self.grid = (image_size - patch_size) // patch_stride + 1
        self.num_patches = self.grid ** 2
        self.combine, self.inference, self.top_k = combine, "hard", top_k
        self.choice, self.tau, self.fuse = "soft", 1.0, False
        self.normalize = Normalize(1)
        self.glance1 = ConvStack(in_channels=1, channels=glance1_channels, size=thumb_size, pool_stride=2)
        fmap = thumb_size
        for _ in glance1_channels:
            fmap = pooled_size(fmap, 2)
        centre = (torch.arange(self.grid) * patch_stride + patch_size / 2) / image_size * 2 - 1  # (g,)
        cy, cx = torch.meshgrid(centre, centre, indexing="ij")
        self.where = ScoreMap(channels=glance1_channels[-1], fmap=fmap,
                              centres=torch.stack([cx.flatten(), cy.flatten()], dim=-1))  # (P, 2)
        self.glance2 = ConvStack(in_channels=1, channels=channels, size=patch_size, pool_stride=2)
        self.what = head(self.glance2.out_features, num_classes)
        self.last_weights = None

    # ---- uint8 canvases: the float canvas is never kept; patches are cut from the uint8 one -------------------
    def canvas_scores(self, canvas: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) uint8 -> (B, P) glance-1 scores (normalising commutes with the resize)."""
        thumb = resize(canvas.float().div_(255), self.thumb_size)  # (B, 1, t, t)
        return self.where(self.glance1(self.normalize(thumb)))  # (B, P)

    def canvas_patches(self, canvas: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) uint8, (B, k) -> (B, k, 1, p, p) normalised float patches."""
        ps = self.select_patches(canvas, index).float().div_(255)  # (B, k, 1, p, p)
        return (ps - self.normalize.mean) / self.normalize.std

    @torch.no_grad()
    def infer_canvas(self, canvas: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Hard top-k inference on uint8 canvases: (B, K) combined output and (B, k) patch indices."""
        scores = self.canvas_scores(canvas)  # (B, P)
        index = select_topk(scores, k or self.top_k, self.grid, self.nms_radius)  # (B, k)
        z = self.classify_patches(self.canvas_patches(canvas, index))  # (B, k, K)
        return combine(scores.gather(1, index).softmax(-1), z, self.combine), index

    def forward(self, x: torch.Tensor, mode: str | None = None, k: int | None = None) -> torch.Tensor:
        """Always the test-time path here (training is `megapixel.train_step`): (B, K) logits."""
        return self.infer(x, mode, k)[0]

    def infer(self, x: torch.Tensor, mode: str | None = None, k: int | None = None,
              normalized: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Hard inference: glance 2 on the k best non-overlapping patches only; their per-patch evidence combined
        with glance 1's weights renormalised over them. (B, K) log-probabilities or logits, (B, k) indices."""
        x = x if normalized else self.normalize(x)
        scores = self.where(self.glance1(self.thumbnail(x)))  # (B, P)
        if (mode or "hard") == "soft":
            z = self.classify_patches(self.patches(x))  # (B, P, K)
            return combine(scores.softmax(-1), z, self.combine), scores.argsort(-1, descending=True)
        index = select_topk(scores, k or self.top_k, self.grid, self.nms_radius)  # (B, k)
        z = self.classify_patches(self.select_patches(x, index))  # (B, k, K)
        w = scores.gather(1, index).softmax(-1)  # (B, k)
        return combine(w, z, self.combine), index


def full_resolution_cnn(*, image_size: int, channels: tuple[int, ...] = (32, 64, 128, 128, 128),
                        num_classes: int = 10) -> OneGlance:
    """The one-glance baseline on the whole canvas: the house CNN (conv 3x3 + ReLU + max-pool 3x3/2 blocks,
    twice glance 2's filters, two more blocks so its affine layer stays at ~3M weights at 1500x1500)."""
    return OneGlance(in_channels=1, num_classes=num_classes, image_size=image_size, channels=channels,
                     pool_stride=2)


def low_resolution_cnn(*, image_size: int, input_size: int, channels: tuple[int, ...] = (16, 32, 64),
                       num_classes: int = 10) -> OneGlance:
    """The one-glance baseline on the low-resolution view glance 1 sees (the canvas resized to input_size);
    twice glance 2's filters, as the house one-glance nets have."""
    return OneGlance(in_channels=1, num_classes=num_classes, image_size=image_size, channels=channels,
                     pool_stride=2, input_size=input_size)
