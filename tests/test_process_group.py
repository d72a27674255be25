from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from gloo import run_gloo
from invprop.engine.process_group import (
    SINGLE_PROCESS,
    DistributedContext,
    device_for,
    init_distributed,
    launched_distributed,
    reduce_step_values,
)


def test_single_process_without_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not launched_distributed() and init_distributed("cpu") is SINGLE_PROCESS
    assert not SINGLE_PROCESS.enabled and SINGLE_PROCESS.is_main
    assert device_for(SINGLE_PROCESS, "cpu") == "cpu"
    values, counts, stop = reduce_step_values(
        SINGLE_PROCESS, {"loss": 2.0, "purity": float("nan")}, True, torch.device("cpu")
    )
    assert values["loss"] == 2.0 and counts == {"loss": 1, "purity": 0} and stop


def test_a_half_set_environment_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from invprop.errors import ConfigError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ConfigError, match="launch with torchrun"):
        init_distributed("cpu")


def _reduce(rank: int, world: int) -> tuple[dict[str, float], dict[str, int], bool]:
    values = {"loss": 1.0 + rank, "purity": float("nan") if rank == 0 else 0.5}
    return reduce_step_values(DistributedContext(rank, world), values, stop=rank == 1, device=torch.device("cpu"))


def test_step_values_are_averaged_and_a_stop_request_reaches_everyone(tmp_path: Path) -> None:
    for means, counts, stop in run_gloo(_reduce, 2, tmp_path):
        assert means["loss"] == 1.5 and counts["loss"] == 2
        assert means["purity"] == 0.5 and counts["purity"] == 1  # undefined on one process: left out of the mean
        assert stop and not math.isnan(means["purity"])
