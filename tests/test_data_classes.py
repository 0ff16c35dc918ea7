"""Tests for data/classes.py and the class-folder loader: empty class folders and classes missing from a split
are warned about; a split with classes that train/ lacks (label indices would shift) is refused."""
from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from multiglance.data.classes import check_class_sets, class_files
from multiglance.data.sources import load_folder
from multiglance.errors import DataError


def png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def make_tree(root: Path, layout: dict[str, dict[str, int]], empty: tuple[str, ...] = ()) -> Path:
    """layout {split: {class: number of images}}; `empty`: folders to create with no files."""
    for split, classes in layout.items():
        for c, n in classes.items():
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (root / split / c / f"{i}.png").write_bytes(png(10 * i))
    for folder in empty:
        (root / folder).mkdir(parents=True, exist_ok=True)
    return root


def load(root: Path, split: str):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = load_folder(root, split, cache=False)
    return result, [str(w.message) for w in caught]


def test_class_files_groups_by_split_and_class() -> None:
    names = ["train/cat/1.png", "train/cat/sub/2.jpg", "train/dog/readme.txt", "test/cat/3.png", "top.png"]
    assert class_files(names) == {"train": {"cat": ["train/cat/1.png", "train/cat/sub/2.jpg"], "dog": []},
                                  "test": {"cat": ["test/cat/3.png"]}}


def test_check_class_sets() -> None:
    assert check_class_sets({"a": 2, "b": 1}, {"a": 1, "b": 1}, "ROOT") == []
    notes = check_class_sets({"a": 2, "b": 1, "e": 0}, {"a": 1, "f": 0}, "ROOT", split_name="val")
    assert notes == ["ROOT: class folder(s) train/e/ hold no images; they are left out of the classes (add images "
                     "or remove the folders)",
                     "ROOT: class folder(s) val/f/ hold no images",
                     "ROOT: val/ has no images of class(es) b; their accuracy cannot be measured (None in "
                     "per-class accuracy)"]
    with pytest.raises(DataError, match=r"ROOT: test/ has class folder\(s\) c that train/ lacks .* label indices "
                                        r"would shift against the classes \['a', 'b'\]"):
        check_class_sets({"a": 2, "b": 1}, {"a": 1, "c": 1}, "ROOT")
    with pytest.raises(DataError, match="class folder"):  # its train/ folder is empty: not a class
        check_class_sets({"a": 2, "b": 0}, {"a": 1, "b": 1}, "ROOT")
    assert check_class_sets({"a": 1}, None, "ROOT", classes=["a", "b"]) == [
        "ROOT: train/ has no images of class(es) b; the model cannot learn them"]


def test_an_empty_class_folder_is_warned_about_and_left_out(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "d", {"train": {"cat": 2, "dog": 2}, "test": {"cat": 1, "dog": 1}},
                     empty=("train/emu", "test/emu"))
    (root / "train" / "owl").mkdir()
    (root / "train" / "owl" / "notes.txt").write_text("no images here")
    train, notes = load(root, "train")
    assert train.classes == ["cat", "dog"] and train.labels.tolist() == [0, 0, 1, 1]
    assert len(notes) == 1 and "train/emu/, train/owl/ hold no images" in notes[0]
    test, notes = load(root, "test")
    assert test.classes == ["cat", "dog"] and notes == [f"{root}: class folder(s) test/emu/ hold no images"]


def test_a_class_missing_from_the_test_split_is_warned_about(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "d", {"train": {"cat": 2, "dog": 2, "emu": 1}, "test": {"cat": 1, "emu": 2}})
    test, notes = load(root, "test")
    assert test.classes == ["cat", "dog", "emu"] and test.labels.tolist() == [0, 2, 2]  # indices as in train
    assert notes == [f"{root}: test/ has no images of class(es) dog; their accuracy cannot be measured (None in "
                     "per-class accuracy)"]


def test_a_test_class_that_train_lacks_is_refused(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "d", {"train": {"cat": 2, "emu": 1}, "val": {"cat": 1, "dog": 1, "emu": 1}})
    with pytest.raises(DataError, match=r"val/ has class folder\(s\) dog that train/ lacks"):
        load(root, "test")
    empty = make_tree(tmp_path / "e", {"train": {"cat": 2}, "test": {"cat": 1, "dog": 1}}, empty=("train/dog",))
    with pytest.raises(DataError, match="dog that train/ lacks"):
        load(empty, "test")


def test_a_zip_with_a_class_folder_of_non_images(tmp_path: Path) -> None:
    path = tmp_path / "d.zip"
    with zipfile.ZipFile(path, "w") as z:
        for name in ("train/cat/0.png", "train/dog/0.png", "test/cat/0.png", "test/dog/0.png"):
            z.writestr(name, png(1))
        z.writestr("train/owl/readme.txt", "nothing")
    train, notes = load(path, "train")
    assert train.classes == ["cat", "dog"] and len(notes) == 1 and "train/owl/ hold no images" in notes[0]


def test_the_warnings_come_even_when_the_pixels_are_cached(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MULTIGLANCE_CACHE", str(tmp_path / "cache"))
    root = make_tree(tmp_path / "d", {"train": {"cat": 2, "dog": 1}, "test": {"cat": 1}})
    for _ in range(2):  # cold, then warm
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            test = load_folder(root, "test")
        assert test.labels.tolist() == [0]
        assert any("test/ has no images of class(es) dog" in str(w.message) for w in caught)


# ------------------------------------------------------------- both loaders, trees without a test split #

def stream_load(root: Path, split: str):
    from multiglance.data.stream import open_stream

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = open_stream(root, split, size=4)
    return result, [str(w.message) for w in caught]


LOADERS = {"memory": load, "stream": stream_load}


@pytest.mark.parametrize("loader", LOADERS)
def test_class_warnings_and_refusals_are_the_same_streamed(tmp_path: Path, loader: str) -> None:
    root = make_tree(tmp_path / "d", {"train": {"cat": 2, "dog": 2}, "test": {"cat": 1}}, empty=("train/emu",))
    train, notes = LOADERS[loader](root, "train")
    assert train.classes == ["cat", "dog"] and train.labels.tolist() == [0, 0, 1, 1]
    assert notes == [f"{root}: class folder(s) train/emu/ hold no images; they are left out of the classes "
                     "(add images or remove the folders)"]
    test, notes = LOADERS[loader](root, "test")
    assert test.labels.tolist() == [0] and notes == [
        f"{root}: test/ has no images of class(es) dog; their accuracy cannot be measured (None in per-class accuracy)"]
    bad = make_tree(tmp_path / "b", {"train": {"cat": 2}, "val": {"cat": 1, "cow": 1}})
    with pytest.raises(DataError, match=r"val/ has class folder\(s\) cow that train/ lacks .* label indices would "
                                        r"shift against the classes \['cat'\]"):
        LOADERS[loader](bad, "test")


def held_out_message(where: str, n: int, flat: bool = False) -> str:
    if flat:
        return (f"no test/ split in {where} (a flat ROOT/CLASS/ tree): testing on a seeded 10% of its class folders "
                f"({n} images), held out from training")
    return f"no test/ split in {where}: testing on a seeded 10% of train/ ({n} images), held out from training"


def pixel_ids(split) -> list[int]:
    """Each image's id: make_tree's images are uniform with value 10 * i, so (class, value) names a file."""
    if hasattr(split, "files"):
        return [hash(f) for f in split.files]
    return [hash((int(y), int(x[0, 0, 0]))) for x, y in zip(split.images, split.labels)]


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("layout", ["train-only", "flat", "flat zip"])
def test_a_tree_without_a_test_split_gets_a_seeded_held_out_one(tmp_path: Path, loader: str, layout: str) -> None:
    counts = {"cat": 20, "dog": 10, "emu": 1}  # 2 + 1 + 0 test images (round(10%), at least 1 from 2 or more)
    if layout == "train-only":
        root = make_tree(tmp_path / "d", {"train": counts})
        where = str(root)
    else:
        flat = make_tree(tmp_path / "f", {"photos": counts}) / "photos"  # photos/CLASS/*.png
        root, where = flat, str(flat)
        if layout == "flat zip":
            root = tmp_path / "f.zip"
            with zipfile.ZipFile(root, "w") as z:
                for p in sorted(flat.rglob("*.png")):
                    z.write(p, f"photos/{p.relative_to(flat)}")  # a top folder: the classes lie one level down
            where = f"{root}:photos"
    test, notes = LOADERS[loader](root, "test")
    assert test.classes == ["cat", "dog", "emu"] and test.labels.tolist() == [0, 0, 1]
    assert notes[0] == held_out_message(where, 3, flat=layout != "train-only")
    assert notes[1:] == [f"{where}: the held-out test split has no images of class(es) emu (too few images); their "
                         "accuracy cannot be measured (None in per-class accuracy)"]
    train, notes = LOADERS[loader](root, "train")
    assert notes == [held_out_message(where, 3, flat=layout != "train-only")]
    assert len(train) == 28 and train.labels.tolist() == [0] * 18 + [1] * 9 + [2]
    assert not set(pixel_ids(train)) & set(pixel_ids(test))  # held out from training
    again, _ = LOADERS[loader](root, "test")
    assert pixel_ids(again) == pixel_ids(test)  # seeded: the same split every time


@pytest.mark.parametrize("name", ["folder", "folder-stream"])
def test_registry_splits_of_a_train_only_tree_are_disjoint(tmp_path: Path, name: str) -> None:
    from multiglance.data import load_split
    from multiglance.data.classes import TEST_FRACTION, TEST_SEED
    from multiglance.data.split import VAL_SEED, holdout

    root = make_tree(tmp_path / "d", {"train": {"cat": 20, "dog": 20}})
    options = {"size": 4} if name == "folder-stream" else {"cache": False}
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        parts = {s: load_split(name, root, s, **options) for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [32, 4, 4]
    ids = {s: set(pixel_ids(p)) for s, p in parts.items()}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    labels = np.repeat([0, 1], 20)  # the stated rule: test = holdout(all, 10%, seed 1), val = holdout(rest, seed 0)
    rest, test = holdout(labels, TEST_FRACTION, seed=TEST_SEED)
    assert TEST_SEED != VAL_SEED and len(test) == 4 and len(holdout(labels[rest.numpy()], 0.1)[1]) == 4


def test_the_in_memory_loader_applies_exif_orientation_as_streaming_does(tmp_path: Path) -> None:
    from multiglance.data.stream import open_stream

    rgb = np.random.default_rng(0).integers(0, 256, (4, 6, 3), dtype=np.uint8)  # (H, W, 3): stored sideways
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / "d" / split / c).mkdir(parents=True)
            img = Image.fromarray(rgb)
            exif = img.getexif()
            exif[0x0112] = 6  # a viewer rotates it 90 degrees clockwise: shown 4 wide, 6 high
            img.save(tmp_path / "d" / split / c / "0.png", exif=exif.tobytes())
    memory = load_folder(tmp_path / "d", "train", cache=False)
    assert memory.images.shape == (2, 3, 6, 4)
    np.testing.assert_array_equal(memory.images[0].permute(1, 2, 0).numpy(), np.rot90(rgb, k=-1))
    streamed = open_stream(tmp_path / "d", "train", size=6, width=4)
    assert torch_equal(streamed.take(np.arange(2))[0], memory.images)


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(torch.as_tensor(a), torch.as_tensor(b))
