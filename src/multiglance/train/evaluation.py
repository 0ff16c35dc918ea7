"""Evaluation during and after training: accuracy and loss of a model on any split, by its own inference path.

    evaluate(model, split, mode="hard")     # {"accuracy", "loss", "predictions", "labels", "images", "skipped"}
    validate(model, val, cfg, device)       # the per-epoch validation record (never the test split)

The loss is the negative log-likelihood of the labels under the model's answer, whatever form the answer takes:
the model's `output` says its kind (models/output.py), and `GlanceOutput.log_probs` reads it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import RunConfig
from ..data.batches import eval_batches
from ..models.output import GlanceOutput


def takes_uint8(model: nn.Module) -> bool:
    """The two-glance model reads uint8 batches itself (it converts only the thumbnail and the chosen patches)."""
    return getattr(model, "kind", None) == "two" and getattr(model, "accepts_uint8", False)


def answer_nll(out: GlanceOutput, y: torch.Tensor) -> torch.Tensor:
    """Summed negative log-likelihood of labels y (B,) under the answer of `out`, whatever its kind."""
    return F.nll_loss(out.log_probs(), y, reduction="sum")


@torch.no_grad()
def evaluate(model: nn.Module, split, *, mode: str | None = None, batch_size: int = 500, device: str = "cpu",
             channels_last: bool = True, k: int | None = None, workers: int = 0) -> dict:
    """Accuracy and loss of `model` on `split`, by the model's own inference path (two-glance: `mode` "hard",
    the default, or "soft"; hard top-k with the model's selection and combination rule). Images that do not
    decode are skipped (counted in `skipped`) and count as neither right nor wrong."""
    model.eval()
    correct, loss, preds, labels, n = 0, 0.0, [], [], 0
    skipped_before = getattr(split, "skipped", 0)
    for x, y in eval_batches(split, batch_size=batch_size, channels_last=channels_last, device=device,
                             workers=workers, as_float=not takes_uint8(model)):
        out = model.output(x) if model.kind == "one" else model.output(x, mode, k)
        loss += answer_nll(out, y).item()
        pred = out.answer.argmax(-1)
        correct += (pred == y).sum().item()
        preds.append(pred.cpu())
        labels.append(y.cpu())
        n += y.shape[0]
    n = max(n, 1)
    return {"accuracy": correct / n, "loss": loss / n, "predictions": torch.cat(preds) if preds else None,
            "labels": torch.cat(labels) if labels else None, "images": n,
            "skipped": getattr(split, "skipped", 0) - skipped_before}


SOFT_MAX_PATCHES = 64  # validation also runs soft (all-patch) inference only for grids up to this size


def validate(model: nn.Module, val, cfg: RunConfig, device: str) -> dict:
    """The per-epoch validation record: hard accuracy and loss on the validation split (never the test split),
    and soft accuracy for small grids."""
    kw = dict(batch_size=cfg.train.eval_batch_size, device=device, channels_last=cfg.train.channels_last,
              workers=cfg.train.workers)
    hard = evaluate(model, val, mode="hard", **kw)
    record = {"val_loss": hard["loss"], "val_acc_hard": hard["accuracy"], "val_images": hard["images"]}
    if model.kind == "two" and model.num_patches <= SOFT_MAX_PATCHES:
        record["val_acc_soft"] = evaluate(model, val, mode="soft", **kw)["accuracy"]
    return record


