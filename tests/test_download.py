"""``data.download``: a built-in dataset fetched through torchvision from a local HTTP server on 127.0.0.1.

The server hands out a small CIFAR-10 archive of the real layout (``cifar-10-batches-py/`` with five training
batches, a test batch and ``batches.meta``); torchvision's CIFAR-10 URL and checksums are pointed at it.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import logging
import pickle
import socket
import tarfile
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torchvision

from invprop.cli import main
from invprop.data.download import STAGING_PREFIX

IMAGES_PER_BATCH = 4
TEST_IMAGES = 10


def _batch(count: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(count, 3 * 32 * 32), dtype=np.uint8)
    return pickle.dumps({"data": data, "labels": [i % 10 for i in range(count)]})


def _archive() -> tuple[bytes, dict[str, str]]:
    """A CIFAR-10 python archive in memory, and the MD5 of each file in it."""
    files = {f"data_batch_{i}": _batch(IMAGES_PER_BATCH, i) for i in range(1, 6)}
    files["test_batch"] = _batch(TEST_IMAGES, 9)
    files["batches.meta"] = pickle.dumps({"label_names": [f"class{i}" for i in range(10)]})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue(), {name: hashlib.md5(payload).hexdigest() for name, payload in files.items()}


class ArchiveServer:
    """Serves one archive at ``/cifar-10-python.tar.gz`` and counts the requests; ``corrupt`` flips one byte."""

    def __init__(self, archive: bytes) -> None:
        self.archive = archive
        self.corrupt = False
        self.requests = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                owner.requests += 1
                body = bytearray(owner.archive)
                if owner.corrupt:
                    body[len(body) // 2] ^= 0xFF
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(bytes(body))

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/cifar-10-python.tar.gz"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ArchiveServer]:
    archive, md5 = _archive()
    served = ArchiveServer(archive)
    thread = threading.Thread(target=served.httpd.serve_forever, daemon=True)
    thread.start()
    cifar = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cifar, "url", served.url)
    monkeypatch.setattr(cifar, "tgz_md5", hashlib.md5(archive).hexdigest())
    monkeypatch.setattr(cifar, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(cifar, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(cifar, "meta", {"filename": "batches.meta", "key": "label_names", "md5": md5["batches.meta"]})
    yield served
    served.httpd.shutdown()
    served.httpd.server_close()


def _train(root: Path, out: Path, *extra: str) -> int:
    args = ["-q", "train", "--dataset", "cifar10", "--epochs", "1", "--out", str(out)]
    for setting in (
        f"data.root={root}",
        "data.num_workers=0",
        "model.backbone=small_convnet",
        "optim.batch_size=8",
        "loss.n_background=16",
        "eval.knn_k=5",
        *extra,
    ):
        args += ["--set", setting]
    try:
        return main(args)
    except SystemExit as stop:
        return int(stop.code or 0)


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.name.startswith(STAGING_PREFIX) or p.suffix == ".gz")


def test_first_run_downloads_and_trains_second_run_does_not_download(server: ArchiveServer, tmp_path: Path) -> None:
    root = tmp_path / "data"
    assert _train(root, tmp_path / "first") == 0
    assert server.requests >= 1
    assert sorted(p.name for p in (root / "cifar-10-batches-py").iterdir()) == sorted(
        ["batches.meta", "test_batch", *(f"data_batch_{i}" for i in range(1, 6))]
    )
    assert _leftovers(root) == []  # the archive and the staging folder are gone
    assert (tmp_path / "first" / "last.pt").is_file()
    requests = server.requests
    assert _train(root, tmp_path / "second") == 0
    assert server.requests == requests


def test_corrupt_download_is_refused_and_removed(
    server: ArchiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.corrupt = True
    root = tmp_path / "data"
    assert _train(root, tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "CIFAR-10 could not be downloaded" in err and "checksum" in err
    assert not (root / "cifar-10-batches-py").exists() and _leftovers(root) == []
    assert not (tmp_path / "run" / "last.pt").exists()


def test_offline_download_says_where_to_put_the_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:  # a port with nobody listening: the connection is refused, as offline
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", f"http://127.0.0.1:{port}/cifar-10-python.tar.gz")
    root = tmp_path / "data"
    assert _train(root, tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "no connection" in err and "put cifar-10-batches-py/" in err and str(root) in err
    assert not (root / "cifar-10-batches-py").exists() and _leftovers(root) == []


def test_without_download_a_missing_dataset_is_an_error_naming_the_switch(
    server: ArchiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _train(tmp_path / "data", tmp_path / "run", "data.download=false") == 2
    assert "set data.download=true" in capsys.readouterr().err
    assert server.requests == 0


def test_unreadable_files_are_not_downloaded_over(
    server: ArchiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "data" / "cifar-10-batches-py"
    broken.mkdir(parents=True)
    (broken / "data_batch_1").write_bytes(b"not a pickle")
    assert _train(tmp_path / "data", tmp_path / "run") == 2
    assert "remove" in capsys.readouterr().err
    assert (broken / "data_batch_1").read_bytes() == b"not a pickle" and server.requests == 0


def test_download_shows_a_progress_bar_unless_quiet(
    server: ArchiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from invprop.data.datasets import cifar10_source

    caplog.set_level(logging.INFO, logger="invprop.data.download")
    source = cifar10_source(tmp_path, download=True)
    assert len(source.train) == 5 * IMAGES_PER_BATCH and len(source.test) == TEST_IMAGES
    assert "100%" in capsys.readouterr().err
    assert any("downloading CIFAR-10" in record.getMessage() for record in caplog.records)


def test_a_failed_move_takes_back_what_it_had_moved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from invprop.data.download import Fetch, fetch_dataset
    from invprop.errors import DataError

    def download(where: Path) -> None:
        (where / "train.mat").write_bytes(b"train")
        (where / "test.mat").write_bytes(b"test")

    spec = Fetch("X", "x", ("train.mat", "test.mat"), download, "put train.mat and test.mat under x")
    rename = Path.rename

    def failing_rename(self: Path, target: Path) -> Path:
        if self.name == "test.mat":
            raise OSError("disk full")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", failing_rename)
    with pytest.raises(DataError, match=r"X could not be downloaded \(disk full\); put train.mat"):
        fetch_dataset(spec, tmp_path)
    assert list((tmp_path / "x").iterdir()) == []  # neither the moved file nor the staging folder is left


def test_a_full_disk_during_a_download_is_a_write_error_and_leaves_nothing(tmp_path: Path) -> None:
    """No space is not a failed download: exit code 74 and the folder named, not "put the files there by hand"."""
    import errno

    from invprop.data.download import Fetch, fetch_dataset
    from invprop.errors import EXIT_WRITE_FAILED, WriteError

    def download(where: Path) -> None:
        (where / "train.mat").write_bytes(b"half of it")
        raise OSError(errno.ENOSPC, "No space left on device")

    spec = Fetch("X", "x", ("train.mat",), download, "put train.mat under x")
    with pytest.raises(WriteError, match=r"cannot write .*/x: No space left on device \(ENOSPC\)") as info:
        fetch_dataset(spec, tmp_path)
    assert info.value.exit_code == EXIT_WRITE_FAILED
    assert list((tmp_path / "x").iterdir()) == []
