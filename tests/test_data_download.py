"""Tests for data/download.py against a local HTTP server on 127.0.0.1 (never the real addresses): good,
truncated, wrong-checksum and hostile archives, a server error mid-transfer, resuming a partial download."""
from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from multiglance.data import download as dl
from multiglance.data.download import Dataset, Remote
from multiglance.data.sources import load_cifar10, load_mnist
from multiglance.errors import DataError

RNG = np.random.default_rng(0)


class Handler(BaseHTTPRequestHandler):
    """Serves server.files; server.plan[name] lists what to do for each next request: "ok", "500", "404",
    "cut:N" (send N bytes of the body, then drop the connection), "ignore-range" (always the whole file)."""

    def do_GET(self) -> None:
        srv, name = self.server, self.path.lstrip("/")
        srv.log.append((name, self.headers.get("Range")))
        plan = srv.plan.get(name) or ["ok"]
        action = plan.pop(0) if len(plan) > 1 else plan[0]
        if name not in srv.files or action == "404":
            self.send_error(404)
            return
        if action == "500":
            self.send_error(500)
            return
        data, start, rng = srv.files[name], 0, self.headers.get("Range")
        if rng and action != "ignore-range":
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if action.startswith("cut:"):
            body = body[:int(action[4:])]
        self.wfile.write(body)
        srv.sent += len(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(dl, "RETRY_WAIT", 0.0)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.files, srv.plan, srv.log, srv.sent = {}, {}, [], 0
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/"
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def remote(name: str, data: bytes, **kw) -> Remote:
    return Remote(name, ("http://127.0.0.1:9/never-used/",), len(data), hashlib.sha256(data).hexdigest(), **kw)


def serve(srv, monkeypatch: pytest.MonkeyPatch, key: str, files: dict[str, bytes], folder: str = "",
          unpack: str | None = None, checked: dict[str, bytes] | None = None) -> None:
    """Serve `files` and make data set `key` expect `checked` (default: the same files) from the server."""
    srv.files.update(files)
    spec = Dataset(tuple(remote(n, d) for n, d in (checked or files).items()), folder, unpack, "")
    monkeypatch.setitem(dl.DATASETS, key, spec)


# ---- small archives the tests build ------------------------------------------------------------------------
def cifar_tar_gz(members: dict[str, bytes] | None = None) -> tuple[bytes, np.ndarray, list[int]]:
    images = RNG.integers(0, 256, (6 * 2, 3072), dtype=np.uint8)
    labels = [int(v) for v in RNG.integers(0, 10, 12)]
    files = {f"cifar-10-batches-py/data_batch_{i + 1}": pickle.dumps(
        {b"data": images[2 * i:2 * i + 2], b"labels": labels[2 * i:2 * i + 2]}, protocol=2) for i in range(5)}
    files["cifar-10-batches-py/test_batch"] = pickle.dumps({b"data": images[10:], b"labels": labels[10:]}, protocol=2)
    files.update(members or {})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue(), images, labels


def mnist_files() -> dict[str, bytes]:
    out = {}
    for prefix, n in [("train", 5), ("t10k", 3)]:
        images = RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = RNG.integers(0, 10, n).astype(np.uint8)
        out[f"{prefix}-images-idx3-ubyte.gz"] = gzip.compress(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        out[f"{prefix}-labels-idx1-ubyte.gz"] = gzip.compress(struct.pack(">II", 2049, n) + labels.tobytes())
    return out


# ---- good downloads ----------------------------------------------------------------------------------------
def test_cifar10_is_downloaded_checked_unpacked_and_loads(server, monkeypatch, tmp_path: Path) -> None:
    archive, images, labels = cifar_tar_gz()
    serve(server, monkeypatch, "cifar10", {"cifar-10-python.tar.gz": archive}, unpack="cifar-10-batches-py")
    path = dl.download("cifar10", tmp_path, url_base=server.url, progress=False)
    assert path == tmp_path / "cifar-10-batches-py"
    split = load_cifar10(path, "train", cache=False)
    assert torch.equal(split.images, torch.from_numpy(images[:10].reshape(-1, 3, 32, 32)))
    assert split.labels.tolist() == labels[:10]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-batches-py"]  # no archive, .part or temp
    assert dl.download("cifar10", tmp_path, url_base=server.url, progress=False) == path  # done: nothing fetched
    assert len(server.log) == 1


def test_mnist_files_are_downloaded_and_load(server, monkeypatch, tmp_path: Path) -> None:
    files = mnist_files()
    serve(server, monkeypatch, "mnist", files, folder="mnist")
    path = dl.download("mnist", tmp_path, url_base=server.url, progress=False)
    assert sorted(p.name for p in path.iterdir()) == sorted(files)
    assert load_mnist(path, "test").images.shape == (3, 1, 28, 28)


def test_cli_download_prints_where_and_errors_are_one_line(server, monkeypatch, tmp_path: Path, capsys) -> None:
    from multiglance.cli import main

    serve(server, monkeypatch, "mnist", mnist_files(), folder="mnist")
    assert main(["data", "download", "mnist", "--root", str(tmp_path), "--url-base", server.url, "--quiet"]) == 0
    assert f"mnist is in {tmp_path / 'mnist'}" in capsys.readouterr().out
    assert main(["data", "download", "mnist", "--root", str(tmp_path / "b"), "--url-base", server.url + "nope/",
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "404" in err and err.count("\n") == 1


# ---- faults --------------------------------------------------------------------------------------------------
def test_server_error_mid_transfer_is_resumed_not_restarted(server, monkeypatch, tmp_path: Path) -> None:
    files = mnist_files()
    big = "train-images-idx3-ubyte.gz"
    half = len(files[big]) // 2
    server.plan[big] = [f"cut:{half}", "500", "ok"]  # the connection drops halfway, then a 500, then fine
    serve(server, monkeypatch, "mnist", files, folder="mnist")
    dl.download("mnist", tmp_path, url_base=server.url, progress=False)
    assert (tmp_path / "mnist" / big).read_bytes() == files[big]
    ranges = [r for n, r in server.log if n == big]
    assert ranges == [None, f"bytes={half}-", f"bytes={half}-"]
    assert server.sent == sum(len(d) for d in files.values())  # not a byte fetched twice


def test_a_connection_that_keeps_dropping_gets_there_by_resuming(server, monkeypatch, tmp_path: Path) -> None:
    data = bytes(RNG.integers(0, 256, 5000, dtype=np.uint8))
    server.plan["f.bin"] = ["cut:1000"] * 5 + ["ok"]
    serve(server, monkeypatch, "mnist", {"f.bin": data}, folder="m")
    dl.download("mnist", tmp_path, url_base=server.url, progress=False, retries=6)
    assert (tmp_path / "m" / "f.bin").read_bytes() == data and server.sent == len(data)


def test_giving_up_leaves_only_a_part_file_that_the_next_run_continues(server, monkeypatch, tmp_path: Path) -> None:
    data = bytes(RNG.integers(0, 256, 5000, dtype=np.uint8))
    server.plan["f.bin"] = ["cut:1000"] * 3 + ["ok"]
    serve(server, monkeypatch, "mnist", {"f.bin": data}, folder="m")
    with pytest.raises(DataError, match="failed after 2 tries.*again to continue from 2000 bytes"):
        dl.download("mnist", tmp_path, url_base=server.url, progress=False, retries=1)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["f.bin.part"]  # nothing looks complete
    dl.download("mnist", tmp_path, url_base=server.url, progress=False)
    assert (tmp_path / "m" / "f.bin").read_bytes() == data and not (tmp_path / "m" / "f.bin.part").exists()


def test_resume_from_a_partial_file_of_an_earlier_process(server, monkeypatch, tmp_path: Path) -> None:
    archive, _, _ = cifar_tar_gz()
    serve(server, monkeypatch, "cifar10", {"cifar-10-python.tar.gz": archive}, unpack="cifar-10-batches-py")
    (tmp_path / "cifar-10-python.tar.gz.part").write_bytes(archive[:1234])
    dl.download("cifar10", tmp_path, url_base=server.url, progress=False)
    assert server.log == [("cifar-10-python.tar.gz", "bytes=1234-")] and server.sent == len(archive) - 1234
    assert len(load_cifar10(tmp_path / "cifar-10-batches-py", "test", cache=False)) == 2


def test_server_ignoring_range_starts_over(server, monkeypatch, tmp_path: Path) -> None:
    data = bytes(RNG.integers(0, 256, 3000, dtype=np.uint8))
    server.plan["f.bin"] = ["ignore-range"]
    serve(server, monkeypatch, "mnist", {"f.bin": data}, folder="m")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "f.bin.part").write_bytes(data[:1000])
    dl.download("mnist", tmp_path, url_base=server.url, progress=False)
    assert (tmp_path / "m" / "f.bin").read_bytes() == data


@pytest.mark.parametrize("fault", ["truncated file", "other content", "damaged part file", "longer file"])
def test_a_file_that_fails_its_checksum_is_deleted_never_kept(server, monkeypatch, tmp_path: Path,
                                                            fault: str) -> None:
    good = bytes(RNG.integers(0, 256, 4000, dtype=np.uint8))
    served = {"truncated file": good[:2500], "other content": good[::-1], "damaged part file": good,
              "longer file": good + b"extra"}[fault]
    serve(server, monkeypatch, "mnist", {"f.bin": served}, folder="m", checked={"f.bin": good})
    (tmp_path / "m").mkdir()
    if fault == "damaged part file":
        (tmp_path / "m" / "f.bin.part").write_bytes(b"\0" * 1000)  # resumed onto wrong bytes
    with pytest.raises(DataError, match="not the official one|more than the 4000 bytes"):
        dl.download("mnist", tmp_path, url_base=server.url, progress=False)
    assert not (tmp_path / "m" / "f.bin").exists()
    if fault != "longer file":
        assert not (tmp_path / "m" / "f.bin.part").exists()
    if fault == "damaged part file":  # the next run starts clean and succeeds
        dl.download("mnist", tmp_path, url_base=server.url, progress=False)
        assert (tmp_path / "m" / "f.bin").read_bytes() == good


def test_not_found_is_not_retried(server, monkeypatch, tmp_path: Path) -> None:
    serve(server, monkeypatch, "mnist", {"f.bin": b"x"}, folder="m")
    server.plan["f.bin"] = ["404"]
    with pytest.raises(DataError, match="answered 404"):
        dl.download("mnist", tmp_path, url_base=server.url, progress=False)
    assert len(server.log) == 1


def test_unreachable_server_is_a_clear_error(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(dl, "RETRY_WAIT", 0.0)
    monkeypatch.setitem(dl.DATASETS, "mnist", Dataset((remote("f.bin", b"x"),), "m", None, ""))
    with pytest.raises(DataError, match="download failed after 2 tries"):
        dl.download("mnist", tmp_path, url_base="http://127.0.0.1:9/", progress=False, retries=1, timeout=2)


# ---- hostile or broken archives ----------------------------------------------------------------------------
@pytest.mark.parametrize("evil", ["../escape.txt", "/abs/escape.txt", "link"])
def test_hostile_archive_is_refused_and_nothing_is_unpacked(server, monkeypatch, tmp_path: Path, evil: str) -> None:
    archive, _, _ = cifar_tar_gz()
    buf = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(archive)) as src, tarfile.open(fileobj=buf, mode="w:gz") as t:
        for m in src.getmembers():
            t.addfile(m, src.extractfile(m))
        info = tarfile.TarInfo(evil if evil != "link" else "cifar-10-batches-py/link")
        if evil == "link":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        else:
            info.size = 4
        t.addfile(info, None if evil == "link" else io.BytesIO(b"evil"))
    root = tmp_path / "root"
    serve(server, monkeypatch, "cifar10", {"cifar-10-python.tar.gz": buf.getvalue()}, unpack="cifar-10-batches-py")
    with pytest.raises(DataError, match="climbs out|absolute path|link"):
        dl.download("cifar10", root, url_base=server.url, progress=False)
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-python.tar.gz"]  # verified, but not unpacked
    assert not (tmp_path / "escape.txt").exists()


def test_archive_without_the_expected_folder_is_refused(server, monkeypatch, tmp_path: Path) -> None:
    archive, _, _ = cifar_tar_gz()
    serve(server, monkeypatch, "cifar10", {"cifar-10-python.tar.gz": archive}, unpack="tiny-imagenet-200")
    with pytest.raises(DataError, match="does not hold the folder tiny-imagenet-200"):
        dl.download("cifar10", tmp_path, url_base=server.url, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-python.tar.gz"]


def test_zip_without_known_checksum_is_checked_by_crc(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("tiny-imagenet-200/wnids.txt", b"n01443537\n" * 20)
    good = buf.getvalue()
    spec = Remote("t.zip", (), None)
    (tmp_path / "t.zip").write_bytes(good)
    assert dl.verify(tmp_path / "t.zip", spec) is None
    bad = bytearray(good)
    bad[good.index(b"n0144") + 3] ^= 1
    (tmp_path / "t.zip").write_bytes(bytes(bad))
    assert "CRC" in dl.verify(tmp_path / "t.zip", spec)
    (tmp_path / "t.zip").write_bytes(good[: len(good) // 2])
    assert "not a readable zip" in dl.verify(tmp_path / "t.zip", spec)
    md5 = Remote("t.zip", (), None, md5=hashlib.md5(good).hexdigest())
    (tmp_path / "t.zip").write_bytes(good)
    assert dl.verify(tmp_path / "t.zip", md5) is None


def test_official_table_is_complete() -> None:
    """Every data set names https/http addresses, a size or a digest, and a SHA-256 wherever one is known."""
    for name, spec in dl.DATASETS.items():
        for r in spec.files:
            assert r.mirrors and all(m.startswith(("https://", "http://")) and m.endswith("/") for m in r.mirrors)
            assert r.sha256 or r.md5, name
            assert r.sha256 is None or len(r.sha256) == 64
    assert {r.name for r in dl.DATASETS["mnist"].files} == {f"{p}-{k}-idx{i}-ubyte.gz" for p in ("train", "t10k")
                                                           for k, i in (("images", 3), ("labels", 1))}
