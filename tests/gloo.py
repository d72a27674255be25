"""Run a function in several CPU processes joined by a gloo process group, for the distributed tests.

``run_gloo(fn, world_size, tmp_path, *args)`` starts ``world_size`` fresh processes (spawn), each calls
``fn(rank, world_size, *args)`` inside an initialised default group, and returns their return values in rank order.
An exception in any process fails the calling test with that process's traceback. ``fn`` must be a module-level
function (it is pickled by reference).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _entry(rank: int, fn: Callable[..., Any], world_size: int, folder: str, args: tuple[Any, ...]) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=world_size)
    try:
        result = fn(rank, world_size, *args)
        torch.save(result, Path(folder) / f"result-{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_gloo(fn: Callable[..., Any], world_size: int, tmp_path: Path, *args: Any) -> list[Any]:
    """``[fn(0, W, *args), ..., fn(W-1, W, *args)]``, each computed in its own process of a gloo group."""
    folder = tmp_path / f"gloo-{fn.__name__}"
    folder.mkdir(parents=True, exist_ok=True)
    mp.start_processes(_entry, args=(fn, world_size, str(folder), args), nprocs=world_size, start_method="spawn")
    return [torch.load(folder / f"result-{rank}.pt", weights_only=False) for rank in range(world_size)]
