"""Random-number state of a run: seeding, and capturing or restoring it in a form checkpoints hold.

The states are stored as tensors and plain containers, so a checkpoint loads with ``weights_only=True``.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

#: Mixes the run seed and the epoch into one per-epoch seed, so an epoch's randomness does not depend on history.
EPOCH_SEED_STRIDE = 1_000_003
#: Mixes a process's rank into its epoch's seed (ranks below it get distinct seeds).
PROCESS_SEED_STRIDE = 65_537
#: Seeds are taken modulo this (``torch.manual_seed`` takes a signed 64-bit integer).
SEED_LIMIT = 2**63


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of ``epoch`` of a run seeded with ``seed``: a function of the two only."""
    return seed * EPOCH_SEED_STRIDE + epoch


def process_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of process ``rank``'s own draws in ``epoch`` of a run seeded with ``seed``: a function of the three."""
    return (epoch_seed(seed, epoch) * PROCESS_SEED_STRIDE + rank) % SEED_LIMIT


def seed_process_draws(seed: int, epoch: int, rank: int) -> None:
    """Give process ``rank`` of a distributed run its own stream of the draws a method makes in its steps (masks,
    noise, dropout) in ``epoch``; otherwise every process, seeded alike, would draw the same masks for its different
    images. Rank 0 keeps the stream a one-process run has. Called after the epoch's start, whose draws (a clustering's
    initialisation) every process must share."""
    if rank:
        seed_everything(process_seed(seed, epoch, rank))


def rng_state() -> dict[str, Any]:
    """The torch (CPU, and every GPU's once CUDA is in use), NumPy and Python generator states as tensors and plain
    containers (loadable with weights_only).

    Example:
        >>> state = rng_state(); a = torch.rand(1); restore_rng_state(state)
        >>> bool(torch.equal(a, torch.rand(1)))
        True
    """
    np_kind, np_keys, *np_rest = np.random.get_state(legacy=True)
    assert isinstance(np_keys, np.ndarray)  # the legacy state is (name, keys, pos, has_gauss, cached_gaussian)
    py_version, py_keys, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_kind, torch.from_numpy(np_keys.astype(np.int64)), *np_rest],
        "python": [*py_keys, py_version, py_gauss],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # draws made on the GPU (masks, noise, dropout)
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore the states captured by :func:`rng_state` (the GPUs' too, where it captured them and GPUs are here)."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    *python_keys, version, gauss = state["python"]
    random.setstate((version, tuple(python_keys), gauss))


__all__ = [
    "EPOCH_SEED_STRIDE", "PROCESS_SEED_STRIDE", "epoch_seed", "process_seed", "restore_rng_state", "rng_state",
    "seed_everything", "seed_process_draws",
]  # fmt: skip
