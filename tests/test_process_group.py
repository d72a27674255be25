from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gloo import run_gloo
from invprop.engine.process_group import (
    SINGLE_PROCESS,
    DistributedContext,
    agree_to_stop,
    device_for,
    init_distributed,
    launched_distributed,
)


def test_single_process_without_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not launched_distributed() and init_distributed("cpu") is SINGLE_PROCESS
    assert not SINGLE_PROCESS.enabled and SINGLE_PROCESS.is_main
    assert device_for(SINGLE_PROCESS, "cpu") == "cpu"
    cpu = torch.device("cpu")
    assert agree_to_stop(SINGLE_PROCESS, True, cpu) and not agree_to_stop(SINGLE_PROCESS, False, cpu)


def test_a_half_set_environment_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from invprop.errors import ConfigError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ConfigError, match="launch with torchrun"):
        init_distributed("cpu")


def _vote(rank: int, world: int) -> tuple[bool, bool]:
    context, cpu = DistributedContext(rank, world), torch.device("cpu")
    return agree_to_stop(context, rank == 1, cpu), agree_to_stop(context, False, cpu)


def test_a_stop_request_of_one_process_reaches_everyone(tmp_path: Path) -> None:
    assert run_gloo(_vote, 2, tmp_path) == [(True, False), (True, False)]
