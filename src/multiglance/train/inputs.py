"""What a run reads: the splits of its data set (limits applied), each epoch's training split, and the check
that the data fits the model. Training, evaluation, analysis and the benchmarks all load data through here.
"""
from __future__ import annotations

from ..config import RunConfig, tiled_size
from ..data import load_split
from ..data.images import set_max_pixels
from ..data.split import limit
from ..errors import UserError


def load_data(cfg: RunConfig, splits: tuple[str, ...] = ("train", "val")) -> tuple:
    """The splits a run reads, limits applied: (train, val) by default; "test" only when asked for."""
    set_max_pixels(cfg.data.max_pixels)  # the decompression-bomb guard, for this process and its workers
    name, options = source_options(cfg)
    out = []
    for split in splits:
        s = load_split(name, cfg.data.root, split, val_fraction=cfg.data.val_fraction, **options)
        n = {"train": cfg.data.train_limit, "val": cfg.data.val_limit, "test": cfg.data.test_limit}[split]
        out.append(limit(s, n))
    return tuple(out)


def source_options(cfg: RunConfig) -> tuple[str, dict]:
    """The data set name and loader options a config reads. A class-folder tree is read at the model's size (left
    to the data: `size_from_folder`), every file brought to it by the resize rule of data/stream.py; it is
    streamed (decoded per batch) when `data.stream` says so, or, left unset, when it would not fit comfortably
    in memory."""
    name = cfg.data.name
    if name in ("folder", "folder-stream") and cfg.data.root is not None:
        size_from_folder(cfg)
        m = cfg.model
        options = {"size": m.image_size, "width": m.image_width, "channels": m.in_channels}
        stream = cfg.data.stream
        if name == "folder" and stream is None:
            from ..data.stream import should_stream

            stream = should_stream(cfg.data.root, m.image_size, width=m.image_width)
        return ("folder-stream" if name == "folder-stream" or stream else "folder"), options
    return name, {}


def size_from_folder(cfg: RunConfig) -> None:
    """model.image_size (and image_width) left unset: the median size of the folder's training photographs,
    rounded to the nearest size the patch grid tiles (`config.tiled_size`)."""
    m = cfg.model
    if m.image_size is not None:
        return
    from ..data.stream import median_size

    h, w = tiled_size(cfg, *median_size(cfg.data.root))
    m.image_size, m.image_width = h, (w if w != h else None)


def epoch_split(cfg: RunConfig, train, epoch: int):
    """The training split of `epoch`: `train` itself, or with data.fresh_canvases, as many newly drawn canvases
    (the generator's seed is the epoch: epoch 0 is `train`, every later one is new and reproducible)."""
    if not cfg.data.fresh_canvases or epoch == 0:
        return train
    return load_split(cfg.data.name, cfg.data.root, "train", n=len(train), seed=epoch)


def check_fit(cfg: RunConfig, train) -> None:
    """The data must fit the model: channels, size, classes. Otherwise one clear line."""
    c, h, w = train.shape
    m = cfg.model
    width = getattr(m, "image_width", None) or m.image_size
    if (c, h, w) != (m.in_channels, m.image_size, width):
        raise UserError(f"the data has images of {c}x{h}x{w} but the model expects {m.in_channels}x{m.image_size}"
                        f"x{width}; set model.in_channels / model.image_size (and the patch grid) to fit, or "
                        "leave model.in_channels unset to read it from the data")
    if len(train.classes) != m.num_classes:
        raise UserError(f"the data has {len(train.classes)} classes but the model has {m.num_classes}; "
                        f"--set model.num_classes={len(train.classes)}, or leave it unset to read it from the data")


def check_fresh_canvases(cfg: RunConfig) -> None:
    """data.fresh_canvases needs a data set that draws its canvases (`epoch_split`)."""
    if cfg.data.fresh_canvases:
        from ..data.registry import is_generated_canvases

        if not is_generated_canvases(cfg.data.name):
            raise UserError(f"data.fresh_canvases needs a generated data set (mnist-translated-60, "
                            f"mnist-cluttered-60, mnist-cluttered-100), not {cfg.data.name!r}")
