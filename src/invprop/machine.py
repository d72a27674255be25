"""What machine this is: one description for run records, ablation tables and benchmarks, and the usable cores."""

from __future__ import annotations

import os
import platform

import torch


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def describe_machine(device: torch.device | str | None = None) -> str:
    """One line: the accelerator (the GPU of ``device``, else the first GPU, else "no GPU"), the cores, torch.

    Example:
        >>> "CPU cores" in describe_machine("cpu") and "torch" in describe_machine("cpu")
        True
    """
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        accelerator = torch.cuda.get_device_name(device)
    elif device is None and torch.cuda.is_available():
        accelerator = torch.cuda.get_device_name(0)
    else:
        accelerator = "no GPU"
    cpu = platform.processor() or platform.machine()
    return f"{accelerator}; {available_cores()} CPU cores ({cpu}); torch {torch.__version__}"


__all__ = ["available_cores", "describe_machine"]
