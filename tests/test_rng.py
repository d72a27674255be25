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


def test_each_process_of_a_run_draws_its_own_stream_and_the_main_one_keeps_a_single_process_stream() -> None:
    from invprop.engine.rng import process_seed, seed_process_draws

    seeds = {process_seed(0, epoch, rank) for epoch in range(1, 50) for rank in range(8)}
    assert len(seeds) == 49 * 8  # distinct for every epoch and process
    draws = []
    for rank in (0, 1, 2):
        torch.manual_seed(5)
        seed_process_draws(0, 3, rank)
        draws.append(torch.rand(4))
    torch.manual_seed(5)
    assert torch.equal(draws[0], torch.rand(4))  # rank 0: untouched
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[1], draws[2])


def test_a_large_run_seed_still_seeds_every_process() -> None:
    from invprop.engine.rng import seed_process_draws

    seed_process_draws(1_234_567_890, 800, 7)  # would overflow torch's 64-bit seed unreduced
    assert torch.rand(1).shape == (1,)
