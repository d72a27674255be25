"""Helpers shared by the benchmark scripts: timing with device synchronisation, peak memory, machine description."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence

import torch

from invprop.machine import describe_machine

#: The authors' ImageNet settings (Wang et al., 2020).
EMBEDDING_DIM = 128
NUM_NEIGHBORS = 4
STEPS = 3
N_BACKGROUND = 4096
N_POSITIVES = 50
TEMPERATURE = 0.07
WEIGHT = 0.6
MOMENTUM = 0.5


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float | None:
    """Peak allocated device memory since the last :func:`reset_peak`, in MiB (None on CPU)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def machine() -> str:
    """One line naming the machine: GPU model or CPU, core count, torch version."""
    return describe_machine()


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def fmt(value: float | None, pattern: str = "{:.2f}") -> str:
    return "-" if value is None else pattern.format(value)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table: a header line, a rule and one line per row (each line ends with a newline)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
