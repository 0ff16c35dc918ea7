"""Large scenes of real photographs holding one small CIFAR-10 object: `scenes-cifar10-512` (and any size).

The benchmark for "the object is small in a large image" on real photographs: glance 1 of the two-glance model
sees a thumbnail of the whole scene and picks patches, glance 2 classifies a patch at full resolution; a
one-glance CNN sees the scene downsized. Each image is an S x S RGB scene (S = 512 here; `make_scenes(size=S)`
draws any S >= 128, e.g. 1024):

- background: a grid of ceil(S/128)^2 tiles (16 at 512, 64 at 1024), each a Tiny ImageNet photograph (64x64)
  upscaled x2 to 128x128 (bilinear), drawn uniformly with replacement and mirrored left-right with probability
  1/2. The 31 Tiny ImageNet classes of 200 that one would file under a CIFAR-10 class (cats, dogs, birds, frogs,
  gazelle and bighorn, cars, vans, trucks and buses, boats: `EXCLUDED_WNIDS`) are never drawn, so no tile shows a
  rival object of a CIFAR-10 class: 169 classes remain, 20,449 train and 8,450 val photographs of the shared copy.
- object: one CIFAR-10 image (32x32) upscaled x2 to 64x64 by the same bilinear upscaling (object and tiles share
  their resampling, and both have hard edges), pasted at a uniformly random place fully inside. It covers
  64^2 / 512^2 = 1.56% of a 512 scene (0.39% at 1024). Label: its CIFAR-10 class. Box: (x0, y0, x0+64, y0+64),
  exclusive ends. The pasted square's edges (off the 128-pixel tile grid) help find the object, as any paste
  does; nothing in the background tells its class.

Sources: `root` is the shared data folder, its cifar10/ folder or cifar10-jpeg.zip (the registry's default);
Tiny ImageNet is tiny-imagenet-200.zip beside the cifar10 folder, or `tiny=PATH`. `load_scenes_cifar10_1024`
gives the 1024 variant (not registered).

Splits (default sizes; `n` and `seed` draw any number, deterministically in (split, seed)):

    split  scenes  objects from                                            backgrounds from
    train  10000   CIFAR-10 train minus the held-out 10% (45,000 images)     Tiny ImageNet train
    val     1000   the held-out 10% of CIFAR-10 train (500 a class, seed 0)  Tiny ImageNet train
    test    2000   CIFAR-10 test (10,000 images)                             Tiny ImageNet val

The held-out 10% is the package's one validation rule (`split.holdout`, seed 0: the very images the `cifar10`
data set's "val" split holds), fixed whatever the scene seed, so no "train" scene of any seed uses a "val" object.
Within a split the labels are balanced (each class n/10 times, to one) and objects are drawn without replacement
(a class's images repeat only once n/10 exceeds them: 4,500 a class in train, 500 in val, 1,000 in test).

Nothing dense is stored: a `SceneSplit` holds the objects' pixels (N, 3, 32, 32), their places, the tiles' photo
indices and flips, and a reference to the background photographs (the whole Tiny split, shared, not copied);
`render(index)` draws a batch of scenes with one gather, one upscaling and one paste, no loop over images. On one
CPU thread 16 scenes take about 18 ms at 512 and 95 ms at 1024. Memory: 32 MB for the 10,000 train scenes, plus
the backgrounds, 297 MB (Tiny train, one copy for "train" and "val") and 123 MB (Tiny val). Sparse splits are
cached in `sources.cache_dir()/scenes` (40 MB for the three; the backgrounds come back from the Tiny ImageNet
loader's own cache): with the sources' caches warm, building all three splits takes 2 s and loading them again
under 1 s (cold, decoding the two zips takes 10-15 s once).

    train = load_scenes_cifar10_512("../shared/data", "train")   # 10000 scenes, sparse
    x, keep = train.take(torch.arange(16))                       # (16, 3, 512, 512) uint8, all True
    write_folder(train, "scenes-512", fmt="jpg")                 # scenes-512/train/CLASS/00000.jpg, boxes.csv
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError, UserError
from ..files import atomic_write

VERSION = 1  # bump when the generator's output changes, so old cache entries are not reused
FORMAT = "scenes-cifar10-1"
OBJECT, PHOTO = 32, 64  # source sides: CIFAR-10 object, Tiny ImageNet photograph
SCALE = 2  # both are upscaled x2: the object to 64x64, a photograph to a 128x128 tile
SIZES = {"train": 10000, "val": 1000, "test": 2000}
SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
EXCLUDED_WNIDS = frozenset({  # Tiny ImageNet classes that show a CIFAR-10 class: never used as background
    "n02124075", "n02123045", "n02123394", "n02125311", "n02129165",  # Egyptian, tabby, Persian cat, cougar, lion
    "n02106662", "n02099712", "n02099601", "n02094433", "n02085620", "n02113799",  # six dog breeds
    "n02058221", "n02056570", "n01855672", "n02002724",  # albatross, king penguin, goose, black stork
    "n01641577", "n01644900",  # bullfrog, tailed frog
    "n02423022", "n02415577",  # gazelle, bighorn (deer-like)
    "n04285008", "n03100240", "n03670208", "n02814533", "n03444034",  # sports car, convertible, limo, wagon, kart
    "n03796401", "n03977966", "n04146614", "n04487081", "n04465501",  # moving/police van, school/trolleybus, tractor
    "n03447447", "n03662601",  # gondola, lifeboat
})


def upscale(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, h, w) uint8 -> (B, 3, 2h, 2w) uint8, bilinear (align_corners=False, no antialiasing)."""
    if x.device.type == "cpu":  # torch's uint8 kernel: exact to 1 grey level, several times faster than float
        return F.interpolate(x, scale_factor=SCALE, mode="bilinear", align_corners=False)
    y = F.interpolate(x.float(), scale_factor=SCALE, mode="bilinear", align_corners=False)
    return y.round_().clamp_(0, 255).to(torch.uint8)


@dataclass(kw_only=True)
class SceneSplit:
    """Sparse scenes: everything needed to render N scenes of size x size, and nothing dense."""

    size: int  # scene side S
    labels: torch.Tensor  # (N,) int64: the object's CIFAR-10 class
    objects: torch.Tensor  # (N, 3, 32, 32) uint8: the object images
    object_index: torch.Tensor  # (N,) int64: their index in CIFAR-10 train ("train", "val") or test ("test")
    positions: torch.Tensor  # (N, 2) int64: (row, col) of the 64x64 object's top-left corner
    tiles: torch.Tensor  # (N, T, T) int64: the photograph of each tile, an index into `backgrounds`
    flips: torch.Tensor  # (N, T, T) bool: tile mirrored left-right
    backgrounds: torch.Tensor  # (M, 3, 64, 64) uint8: the Tiny ImageNet split the tiles come from (shared)
    split: str = "train"  # "train", "val" or "test"
    classes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (3, self.size, self.size)

    image_shape = shape  # the name `MegapixelSplit` uses

    @property
    def boxes(self) -> torch.Tensor:
        """(N, 4) object boxes (x0, y0, x1, y1), exclusive ends, in scene pixels."""
        y, x = self.positions[:, 0], self.positions[:, 1]
        side = OBJECT * SCALE
        return torch.stack([x, y, x + side, y + side], dim=1)

    def _index(self, index: torch.Tensor | slice | int | list) -> torch.Tensor:
        if isinstance(index, slice):
            index = range(len(self))[index]
        return torch.as_tensor(index, dtype=torch.int64).reshape(-1)

    def render(self, index: torch.Tensor | slice | int | list) -> torch.Tensor:
        """Scenes `index` as (b, 3, S, S) uint8: the tiles, then the object pasted over them."""
        index = self._index(index)
        b, t, tile, side = index.shape[0], self.tiles.shape[1], PHOTO * SCALE, OBJECT * SCALE
        if b == 0:
            return torch.zeros(0, *self.shape, dtype=torch.uint8)
        photos = self.backgrounds[self.tiles[index].reshape(-1)]  # (b*T*T, 3, 64, 64)
        flip = self.flips[index].reshape(-1, 1, 1, 1)  # (b*T*T, 1, 1, 1)
        photos = torch.where(flip, photos.flip(-1), photos)
        grid = upscale(photos).reshape(b, t, t, 3, tile, tile)  # (b, T, T, 3, 128, 128)
        canvas = grid.permute(0, 3, 1, 4, 2, 5).reshape(b, 3, t * tile, t * tile)  # (b, 3, T*128, T*128)
        if t * tile != self.size:
            canvas = canvas[:, :, :self.size, :self.size].contiguous()  # (b, 3, S, S)
        pos, offsets = self.positions[index], torch.arange(side)  # (b, 2), (64,)
        rows = (pos[:, 0, None] + offsets)[:, None, :, None]  # (b, 1, 64, 1)
        cols = (pos[:, 1, None] + offsets)[:, None, None, :]  # (b, 1, 1, 64)
        canvas[torch.arange(b)[:, None, None, None], torch.arange(3)[None, :, None, None], rows, cols] = \
            upscale(self.objects[index])  # (b, 3, 64, 64)
        return canvas

    def take(self, index: torch.Tensor | slice | int | list) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (b, 3, S, S) uint8, keep (b,) bool): the streaming loaders' interface; every scene renders."""
        images = self.render(index)
        return images, torch.ones(images.shape[0], dtype=torch.bool)

    def subset(self, index: torch.Tensor | slice | list) -> "SceneSplit":
        index = self._index(index)
        per_scene = ("labels", "objects", "object_index", "positions", "tiles", "flips")
        return SceneSplit(**{f.name: getattr(self, f.name)[index] if f.name in per_scene else getattr(self, f.name)
                             for f in fields(self)})

    def nbytes(self) -> int:
        """Bytes this split holds besides the shared backgrounds (the dense split would hold N * 3 * S * S)."""
        return sum(v.numel() * v.element_size() for k, v in vars(self).items()
                   if isinstance(v, torch.Tensor) and k != "backgrounds")

    # ---- storage: everything but the backgrounds, which the caller supplies on loading --------------------------
    def save(self, path: str | os.PathLike) -> None:
        state = {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                 for f in fields(self) if f.name != "backgrounds"}
        atomic_write(Path(path), lambda f: torch.save({"format": FORMAT, "version": VERSION, **state}, f))

    @classmethod
    def load(cls, path: str | os.PathLike, backgrounds: torch.Tensor) -> "SceneSplit":
        """The split saved at `path`, its tiles pointing into `backgrounds`; DataError if unreadable or inconsistent."""
        def bad(why: str) -> DataError:
            return DataError(f"{str(path)!r} is not a valid scenes file ({why}); delete it to rebuild it")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001  (any unreadable file is one clear error)
            raise bad(type(e).__name__) from None
        if not isinstance(state, dict) or state.pop("format", None) != FORMAT or state.pop("version", None) != VERSION:
            raise bad("wrong format or version")
        names = {f.name for f in fields(cls)} - {"backgrounds"}
        if set(state) != names:
            raise bad(f"fields {sorted(set(state) ^ names)} differ")
        try:
            out = cls(backgrounds=backgrounds, **{**state, "classes": tuple(state["classes"])})
            n, t = len(out), out.tiles.shape[-1]
            expect = {"labels": ((n,), torch.int64), "objects": ((n, 3, OBJECT, OBJECT), torch.uint8),
                      "object_index": ((n,), torch.int64), "positions": ((n, 2), torch.int64),
                      "tiles": ((n, t, t), torch.int64), "flips": ((n, t, t), torch.bool)}
            for k, (shape, dtype) in expect.items():
                v = getattr(out, k)
                if tuple(v.shape) != shape or v.dtype != dtype:
                    raise ValueError(f"{k} is {tuple(v.shape)} {v.dtype}, expected {shape} {dtype}")
            if t * PHOTO * SCALE < out.size or (out.tiles.numel() and not 0 <= out.tiles.min() <= out.tiles.max()
                                                < len(backgrounds)):
                raise ValueError("the tiles do not fit the backgrounds")
            if n and not 0 <= out.positions.min() <= out.positions.max() <= out.size - OBJECT * SCALE:
                raise ValueError("an object lies outside the scene")
        except (TypeError, ValueError, KeyError, AttributeError, RuntimeError) as e:
            raise bad(str(e)) from None
        return out


# ---- the generator ------------------------------------------------------------------------------------------
def object_pool(split: str, labels: np.ndarray) -> np.ndarray:
    """Indices into CIFAR-10 train ("train", "val") or test ("test") the split's objects may be drawn from: the
    package's one validation rule (`split.source_indices`: a stratified 10%, seed 0) decides train vs val."""
    from .split import source_indices

    return np.arange(len(labels)) if split == "test" else source_indices(labels, split)


def _balanced_draw(rng: np.random.Generator, labels: np.ndarray, pool: np.ndarray, n: int) -> np.ndarray:
    """(n,) entries of `pool` (whose classes are `labels`): every class of the pool equally often (to one), in
    random order, each class's images in a random order without repeats until that class is used up."""
    present = np.unique(labels)
    target = present[rng.permutation(np.arange(n) % len(present))]  # (n,) the class of each draw
    order = np.empty(n, np.int64)
    for c in present:  # a loop over classes, not images
        slots = np.flatnonzero(target == c)
        members = rng.permutation(pool[labels == c])
        order[slots] = members[np.arange(len(slots)) % len(members)]
    return order


def make_scenes(split: str, *, objects: torch.Tensor, labels: torch.Tensor | np.ndarray, pool: np.ndarray,
                backgrounds: torch.Tensor, background_pool: np.ndarray, n: int | None = None, size: int = 512,
                seed: int = 0, classes: tuple[str, ...] = ()) -> SceneSplit:
    """`n` sparse scenes (default `SIZES[split]`) of size x size: objects drawn from `objects[pool]` (M, 3, 32, 32)
    uint8 with their `labels`, tiles from `backgrounds[background_pool]` (K, 3, 64, 64). Deterministic in
    (split, seed)."""
    side, tile = OBJECT * SCALE, PHOTO * SCALE
    if split not in SPLIT_CODE:
        raise DataError(f"unknown split {split!r}; use 'train', 'val' or 'test'")
    if size < tile:
        raise DataError(f"a scene must be at least {tile} pixels wide, got {size}")
    if tuple(objects.shape[1:]) != (3, OBJECT, OBJECT) or tuple(backgrounds.shape[1:]) != (3, PHOTO, PHOTO):
        raise DataError(f"scenes need {OBJECT}x{OBJECT} RGB objects and {PHOTO}x{PHOTO} RGB photographs, got "
                        f"{tuple(objects.shape[1:])} and {tuple(backgrounds.shape[1:])}")
    if len(pool) == 0 or len(background_pool) == 0:
        raise DataError(f"no source images left for the {split!r} scenes; check the CIFAR-10 and Tiny ImageNet data")
    n = SIZES[split] if n is None else int(n)
    t = -(-size // tile)  # tiles per side
    rng = np.random.default_rng([seed, SPLIT_CODE[split]])
    order = _balanced_draw(rng, np.asarray(labels)[pool], np.asarray(pool), n)  # (n,)
    tiles = np.asarray(background_pool)[rng.integers(0, len(background_pool), (n, t, t))]  # (n, T, T)
    flips = rng.random((n, t, t)) < 0.5
    positions = rng.integers(0, size - side + 1, (n, 2))  # (n, 2) row, col
    index = torch.from_numpy(order.astype(np.int64))
    return SceneSplit(size=size, labels=torch.as_tensor(np.asarray(labels), dtype=torch.int64)[index],
                      objects=objects[index].contiguous(), object_index=index,
                      positions=torch.from_numpy(positions.astype(np.int64)),
                      tiles=torch.from_numpy(tiles.astype(np.int64)), flips=torch.from_numpy(flips),
                      backgrounds=backgrounds, split=split, classes=tuple(classes))


def write_folder(split: SceneSplit, root: str | os.PathLike, *, fmt: str = "jpg", quality: int = 90,
                 batch: int = 64) -> Path:
    """Write ROOT/<split>/<class>/<index>.<fmt> (a class-folder tree `load_folder` and the streaming loader read)
    and ROOT/<split>/boxes.csv (file, label, x0, y0, x1, y1); returns ROOT/<split>."""
    from PIL import Image

    kinds = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG"}
    if fmt.lower() not in kinds:
        raise DataError(f"cannot write scenes as {fmt!r}; use one of {', '.join(kinds)}")
    out = Path(root) / split.split
    names = [f"{split.classes[c]}/{i:0{len(str(max(len(split) - 1, 0)))}d}.{fmt}"
             for i, c in enumerate(split.labels.tolist())]
    try:
        for c in sorted(set(split.labels.tolist())):
            (out / split.classes[c]).mkdir(parents=True, exist_ok=True)
        for start in range(0, len(split), batch):
            images = split.render(slice(start, start + batch)).permute(0, 2, 3, 1).numpy()  # (b, S, S, 3)
            for name, image in zip(names[start:start + batch], images):
                options = {"quality": quality} if kinds[fmt.lower()] == "JPEG" else {}
                Image.fromarray(image).save(out / name, kinds[fmt.lower()], **options)
        rows = [f"{name},{c},{','.join(map(str, box))}" for name, c, box in
                zip(names, split.labels.tolist(), split.boxes.tolist())]
        (out / "boxes.csv").write_text("\n".join(["file,label,x0,y0,x1,y1", *rows]) + "\n")
    except OSError as e:
        raise UserError(f"cannot write the scenes under {str(out)!r} ({e.strerror}); choose a writable "
                        "folder") from None
    return out


# ---- registry entries ---------------------------------------------------------------------------------------
def source_paths(root: str | os.PathLike, tiny: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(CIFAR-10, Tiny ImageNet) paths from `root`: the shared data folder, the cifar10 folder, or the CIFAR-10
    zip/tree itself; Tiny ImageNet is `tiny`, else ../tiny-imagenet-200.zip beside the cifar10 folder."""
    root = Path(root)
    if (root / "cifar10" / "cifar10-jpeg.zip").is_file():
        cifar = root / "cifar10" / "cifar10-jpeg.zip"
    elif root.is_dir() and (root / "cifar10-jpeg.zip").is_file():
        cifar = root / "cifar10-jpeg.zip"
    else:
        cifar = root
    folder = cifar.parent if cifar.is_file() else cifar
    tiny_path = Path(tiny) if tiny is not None else folder.parent / "tiny-imagenet-200.zip"
    if not tiny_path.exists():
        raise DataError(f"Tiny ImageNet not found at {str(tiny_path)!r} (the scenes' backgrounds come from it); put "
                        "tiny-imagenet-200.zip beside the cifar10 folder or pass tiny=PATH")
    return cifar, tiny_path


def _cache_root() -> Path:
    from .sources import cache_dir

    return cache_dir() / "scenes"


@functools.lru_cache(maxsize=2)
def _tiny(path: str, split: str, fingerprint: str):
    """The Tiny ImageNet split, kept in memory so that "train" and "val" scenes share one copy of it."""
    from .sources import load_tiny_imagenet

    return load_tiny_imagenet(path, split)


def load_scenes_cifar10(root, split: str, *, size: int = 512, n: int | None = None, seed: int = 0,
                        tiny: str | os.PathLike | None = None, cache: bool = True) -> SceneSplit:
    """Scenes of `size` for split "train", "val" or "test" (see the module docstring), cached when `cache`."""
    from .sources import CIFAR10_CLASSES, _fingerprint, load_cifar10

    if split not in SPLIT_CODE:
        raise DataError(f"unknown split {split!r}; use 'train', 'val' or 'test'")
    cifar_path, tiny_path = source_paths(root, tiny)
    n = SIZES[split] if n is None else int(n)
    fingerprint = json.dumps([_fingerprint(cifar_path.resolve()), _fingerprint(tiny_path.resolve())])
    photos = _tiny(str(tiny_path.resolve()), "test" if split == "test" else "train", fingerprint)
    key = hashlib.sha256(json.dumps([VERSION, split, size, n, seed, fingerprint]).encode()).hexdigest()[:16]
    path = _cache_root() / f"scenes-cifar10-{size}-{split}-{n}-{seed}-{key}.pt"
    if cache and path.is_file():
        try:
            return SceneSplit.load(path, photos.images)
        except DataError as e:
            warnings.warn(f"{e}: rebuilding it")
    cifar = load_cifar10(cifar_path, "test" if split == "test" else "train")
    labels = cifar.labels.numpy()
    allowed = np.flatnonzero(~np.isin(np.asarray(photos.classes)[photos.labels.numpy()], list(EXCLUDED_WNIDS)))
    out = make_scenes(split, objects=cifar.images, labels=labels, pool=object_pool(split, labels),
                      backgrounds=photos.images, background_pool=allowed, n=n, size=size, seed=seed,
                      classes=tuple(cifar.classes) or CIFAR10_CLASSES)
    if cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            out.save(path)
        except (OSError, UserError) as e:
            warnings.warn(f"cannot write the scenes cache {str(path)!r} ({e}); set MULTIGLANCE_CACHE to a writable "
                          "folder to load faster next time")
    return out


def load_scenes_cifar10_128(root, split: str, **options) -> SceneSplit:
    """128x128 scenes (one tile; the object a quarter of the area): the first step of a curriculum."""
    return load_scenes_cifar10(root, split, size=128, **options)


def load_scenes_cifar10_256(root, split: str, **options) -> SceneSplit:
    """256x256 scenes (4 tiles; the object 6.25% of the area): the second step of a curriculum."""
    return load_scenes_cifar10(root, split, size=256, **options)


def load_scenes_cifar10_512(root, split: str, **options) -> SceneSplit:
    """`scenes-cifar10-512`: 512x512 scenes. Options: n, seed, tiny (path), cache."""
    return load_scenes_cifar10(root, split, size=512, **options)


def load_scenes_cifar10_1024(root, split: str, **options) -> SceneSplit:
    """1024x1024 scenes (64 tiles, the object 0.39% of the area). Options: n, seed, tiny (path), cache."""
    return load_scenes_cifar10(root, split, size=1024, **options)
