from __future__ import annotations

import errno
import fnmatch
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
#: Test and benchmark support that is not library code (the authors' formulation, the oracle of several tests).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
CIFAR_TARBALL = SHARED_DATA / "cifar10-jpeg.tar.gz"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def cifar_tarball() -> Path:
    path = Path(os.environ.get("INVPROP_CIFAR_TARBALL", CIFAR_TARBALL))
    if not path.is_file():
        pytest.skip(f"CIFAR-10 tarball not found at {path} (../shared/data is absent)")
    return path


def random_graph(n: int, k: int, generator: torch.Generator, invalid_fraction: float = 0.0) -> torch.Tensor:
    """A random directed k-regular graph without self-loops; some entries optionally -1 (unknown)."""
    rows = []
    for i in range(n):
        others = torch.randperm(n - 1, generator=generator)[:k]
        rows.append(others + (others >= i).long())
    table = torch.stack(rows)
    if invalid_fraction:
        drop = torch.rand(table.shape, generator=generator) < invalid_fraction
        table[drop] = -1
    return table


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch InvP run on digits (with diagnostics), shared by the evaluation tests; treat it as read-only."""
    from invprop.cli import main

    run = tmp_path_factory.mktemp("run") / "digits"
    assert main(["-q", "train", "--epochs", "2", "--set", "loss.rampup_epochs=1", "--out", str(run)]) == 0
    return run


class _FullDisk:
    """A file handle whose first write stores half of its bytes and then fails with ``code``."""

    def __init__(self, handle: Any, code: int) -> None:
        self._handle, self._code = handle, code

    def write(self, data: Any) -> int:
        self._handle.write(bytes(data)[: len(data) // 2])
        raise OSError(self._code, os.strerror(self._code))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> "_FullDisk":
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()


@pytest.fixture
def fail_writes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``fail_writes(pattern, code)``: every atomic write (:mod:`invprop.files`) of a file whose name matches the
    glob ``pattern`` fails like a full disk: half of the first write lands in the temporary file, then ``OSError``.
    Linux only (it reads /proc/self/fd)."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd")
    real = os.fdopen

    def install(pattern: str, code: int = errno.ENOSPC) -> None:
        def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
            handle = real(fd, *args, **kwargs)
            try:
                name = Path(os.readlink(f"/proc/self/fd/{fd}")).name
            except OSError:
                return handle
            # write_atomically's temporary file: ".<target name>.<random>.tmp"
            return _FullDisk(handle, code) if fnmatch.fnmatch(name, f".{pattern}.*.tmp") else handle

        monkeypatch.setattr(os, "fdopen", fdopen)

    yield install
    monkeypatch.undo()
