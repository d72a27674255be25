from __future__ import annotations

import os
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


def test_a_peer_that_ended_is_named_in_one_line() -> None:
    import socket
    import subprocess
    import sys

    from invprop.engine.process_group import peer_lost
    from invprop.errors import EXIT_SYSTEM, PeerLost

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # ended and reaped: its pid names no process now
    here = socket.gethostname()
    context = DistributedContext(0, 3, 0, True, ((here, os.getpid()), (here, gone.pid), ("elsewhere", 1)))
    gloo = RuntimeError(
        "[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer [10.0.0.2]:4711"
    )
    lost = peer_lost(gloo, context)
    assert isinstance(lost, PeerLost) and lost.exit_code == EXIT_SYSTEM
    assert str(lost) == (
        f"process 0 of 3 stopped: process 1 (pid {gone.pid}) of this torchrun job ended while they trained (its own "
        "output and torchrun's summary say why); run the same torchrun command with --resume to go on from the last "
        "checkpoint"
    )
    alive = DistributedContext(0, 2, 0, True, ((here, os.getpid()), (here, os.getppid())))
    assert "stopped: another process of this torchrun job ended" in str(peer_lost(gloo, alive))
    assert peer_lost(RuntimeError("CUDA out of memory"), context) is None  # not a lost peer
    assert peer_lost(gloo, SINGLE_PROCESS) is None
