"""A run's random state: captured and restored exactly, the GPUs' generators too once CUDA draws (the
reconstruction methods draw their masks and noise on the training device)."""

from __future__ import annotations

import pytest
import torch

from invprop.engine.rng import restore_rng_state, rng_state


def test_the_cpu_state_round_trips_and_holds_no_gpu_state_without_cuda_in_use() -> None:
    state = rng_state()
    first = torch.rand(3)
    restore_rng_state(state)
    assert torch.equal(first, torch.rand(3))
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        assert "cuda" not in state


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_the_gpu_generators_round_trip() -> None:
    torch.rand(1, device="cuda")  # CUDA in use
    state = rng_state()
    first = torch.rand(4, device="cuda")
    torch.rand(100, device="cuda")
    restore_rng_state(state)
    assert "cuda" in state and torch.equal(first, torch.rand(4, device="cuda"))
