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


#: Linux: writing this to /proc/self/clear_refs resets the process's peak resident memory (VmHWM).
_RESET_PEAK_RSS = "5"


def reset_peak_memory(device: torch.device | str) -> None:
    """Start measuring peak memory afresh: CUDA's allocator peak, or (CPU, Linux) the process's peak resident set."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write(_RESET_PEAK_RSS)
    except OSError:
        pass  # not Linux, or not allowed: the peak since the process started is reported instead


def peak_memory_bytes(device: torch.device | str) -> int | None:
    """Peak memory since :func:`reset_peak_memory`: CUDA tensors on ``device``, or the process's peak resident set
    on the CPU (Linux ``VmHWM``; elsewhere None)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


__all__ = ["available_cores", "describe_machine", "peak_memory_bytes", "reset_peak_memory"]
