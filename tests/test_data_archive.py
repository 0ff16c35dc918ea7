"""Tests for data/archive.py: one Tree over folders, zips and tars; hostile archives refused."""
from __future__ import annotations

import io
import os
import stat
import tarfile
import tempfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multiglance.data.archive import open_tree
from multiglance.errors import DataError

from conftest import examples

FILES = {"top/a.txt": b"alpha", "top/sub/b.bin": bytes(range(256)), "top/sub/deeper/c.txt": b""}


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def write_zip(path: Path, files: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as z:
        for name, data in files.items():
            z.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return path


def write_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as t:
        for info, data in members:
            t.addfile(info, None if data is None else io.BytesIO(data))
    return path


def tar_file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def tar_special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info, None


@pytest.fixture(params=["folder", "zip", "stored-zip", "tar", "tar.gz", "tar.bz2"])
def tree_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    kind = request.param
    if kind == "folder":
        return write_folder(tmp_path / "folder", FILES)
    if kind.endswith("zip"):
        method = zipfile.ZIP_STORED if kind == "stored-zip" else zipfile.ZIP_DEFLATED
        return write_zip(tmp_path / "data.zip", FILES, method)
    mode = {"tar": "w", "tar.gz": "w:gz", "tar.bz2": "w:bz2"}[kind]
    return write_tar(tmp_path / f"data.{kind}", [tar_file(n, d) for n, d in FILES.items()], mode)


def test_every_kind_reads_the_same_files(tree_path: Path) -> None:
    with open_tree(tree_path) as tree:
        assert sorted(tree.names()) == sorted(FILES)
        for name, data in FILES.items():
            assert tree.read(name) == data
        assert dict(tree.iter_read(sorted(FILES))) == FILES
        assert "top/a.txt" in tree and "a.txt" not in tree


def test_find_root_strips_a_top_folder(tree_path: Path) -> None:
    with open_tree(tree_path) as tree:
        sub = tree.find_root("a.txt")
        assert sorted(sub.names()) == ["a.txt", "sub/b.bin", "sub/deeper/c.txt"]
        assert sub.read("sub/b.bin") == bytes(range(256))
        assert sorted(tree.find_root("deeper/").names()) == ["b.bin", "deeper/c.txt"]
        assert tree.find_root("top/").prefix == ""  # the shallowest match wins
        with pytest.raises(DataError, match="no wnids.txt found"):
            tree.find_root("wnids.txt")


def test_junk_and_folder_entries_are_left_out(tmp_path: Path) -> None:
    files = {"d/x.png": b"1", "__MACOSX/d/._x.png": b"2", "d/._x.png": b"3", "d/.DS_Store": b"4", "./d/y": b"5"}
    with open_tree(write_zip(tmp_path / "a.zip", files)) as tree:
        assert sorted(tree.names()) == ["d/x.png", "d/y"]


def test_where_names_the_file(tmp_path: Path) -> None:
    with open_tree(write_zip(tmp_path / "a.zip", {"d/x": b"1"})) as tree:
        assert tree.find_root("x").where("x") == f"{tmp_path / 'a.zip'}:d/x"
        with pytest.raises(DataError, match="not found"):
            tree.read("nope")


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "/etc/passwd", "C:/windows/x", "..\\evil"])
def test_zip_with_escaping_path_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(DataError, match="absolute path|climbs out"):
        open_tree(write_zip(tmp_path / "bad.zip", {"ok.txt": b"x", name: b"evil"}))


@pytest.mark.parametrize("name", ["../evil.txt", "/abs/evil.txt"])
def test_tar_with_escaping_path_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(DataError, match="absolute path|climbs out"):
        open_tree(write_tar(tmp_path / "bad.tar.gz", [tar_file("ok", b"x"), tar_file(name, b"e")]))


@pytest.mark.parametrize("kind,match", [(tarfile.SYMTYPE, "link"), (tarfile.LNKTYPE, "link"),
                                        (tarfile.CHRTYPE, "device"), (tarfile.BLKTYPE, "device"),
                                        (tarfile.FIFOTYPE, "fifo")])
def test_tar_links_and_devices_are_refused(tmp_path: Path, kind: bytes, match: str) -> None:
    path = write_tar(tmp_path / "bad.tar", [tar_file("ok", b"x"), tar_special("evil", kind, "/etc/passwd")], "w")
    with pytest.raises(DataError, match=match):
        open_tree(path)


@pytest.mark.parametrize("mode,match", [(stat.S_IFLNK | 0o777, "symbolic link"), (stat.S_IFCHR | 0o666, "device")])
def test_zip_links_and_devices_are_refused(tmp_path: Path, mode: int, match: str) -> None:
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as z:
        info = zipfile.ZipInfo("evil")
        info.create_system, info.external_attr = 3, mode << 16
        z.writestr(info, "/etc/passwd")
    with pytest.raises(DataError, match=match):
        open_tree(path)


def test_zip_bomb_is_bounded(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "bomb.zip", {"big": bytes(4 << 20), "a": bytes(600), "b": bytes(600)})
    assert path.stat().st_size < 20_000
    with open_tree(path, max_entry_bytes=1 << 20) as tree:
        with pytest.raises(DataError, match="over the limit"):
            tree.read("big")
    with open_tree(path, max_total_bytes=1000) as tree:
        assert tree.read("a") == bytes(600)
        with pytest.raises(DataError, match="in all"):
            tree.read("b")


def test_zip_entry_larger_than_declared_is_refused(tmp_path: Path) -> None:
    data = bytearray(write_zip(tmp_path / "z.zip", {"x": bytes(5000)}).read_bytes())
    central = data.index(b"PK\x01\x02")
    data[central + 24:central + 28] = (100).to_bytes(4, "little")  # declared uncompressed size: 100
    (tmp_path / "lie.zip").write_bytes(bytes(data))
    with open_tree(tmp_path / "lie.zip") as tree, pytest.raises(DataError, match="corrupt"):
        tree.read("x")


def test_tar_gz_bomb_is_refused_before_decompressing_it_all(tmp_path: Path) -> None:
    path = write_tar(tmp_path / "bomb.tar.gz", [tar_file(f"f{i}", bytes(1 << 20)) for i in range(8)])
    assert path.stat().st_size < 100_000
    with pytest.raises(DataError, match="decompression bomb"):
        open_tree(path, max_total_bytes=3 << 20)


def test_folder_links_inside_are_followed_outside_refused(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "d", {"real/a.txt": b"a"})
    os.symlink(root / "real", root / "alias")
    os.symlink(root, root / "real" / "loop")  # a cycle must not hang the walk
    with open_tree(root) as tree:
        assert tree.read("alias/a.txt") == b"a"
        assert sorted(tree.names()) == ["alias/a.txt", "real/a.txt"]
    (tmp_path / "secret").write_bytes(b"s")
    os.symlink(tmp_path / "secret", root / "leak")
    with pytest.raises(DataError, match="outside the folder"):
        open_tree(root)


def test_folder_with_fifo_is_refused(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "d", {"a.txt": b"a"})
    os.mkfifo(root / "pipe")
    with pytest.raises(DataError, match="not a regular file"):
        open_tree(root)


def test_not_an_archive_truncated_and_missing(tmp_path: Path) -> None:
    (tmp_path / "x.zip").write_bytes(b"hello, not a zip")
    with pytest.raises(DataError, match="not a folder, .zip or .tar"):
        open_tree(tmp_path / "x.zip")
    whole = write_tar(tmp_path / "t.tar.gz", [tar_file(f"f{i}", os.urandom(3000)) for i in range(5)]).read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError):
        with open_tree(tmp_path / "cut.tar.gz") as tree:
            for name in tree.names():
                tree.read(name)
    with pytest.raises(DataError, match="does not exist"):
        open_tree(tmp_path / "missing")


def _read_everything(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "blob"
        path.write_bytes(data)
        try:
            with open_tree(path, max_entry_bytes=1 << 20, max_total_bytes=4 << 20) as tree:
                for _ in tree.iter_read(tree.names()):
                    pass
        except DataError:
            pass


VALID_ZIP = io.BytesIO()
with zipfile.ZipFile(VALID_ZIP, "w", zipfile.ZIP_DEFLATED) as _z:
    _z.writestr("a/x.txt", b"hello" * 50)
    _z.writestr("a/y.bin", bytes(range(200)))


@settings(max_examples=examples(60), deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_data_error(data: bytes) -> None:
    _read_everything(data)


@settings(max_examples=examples(60), deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(VALID_ZIP.getvalue()) - 1), st.integers(0, 255)), max_size=8))
def test_damaged_zip_raises_only_data_error(edits: list[tuple[int, int]]) -> None:
    data = bytearray(VALID_ZIP.getvalue())
    for pos, value in edits:
        data[pos] = value
    _read_everything(bytes(data))
