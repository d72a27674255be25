from __future__ import annotations

import os
import sys
from pathlib import Path

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
