"""Where and in which precision a run computes."""

from __future__ import annotations

import contextlib

import torch

from invprop.config import AUTOCAST_DTYPES
from invprop.errors import DeviceUnavailable


def resolve_device(name: str) -> torch.device:
    """The device ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` names (``auto``: CUDA when there is one)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable(name)
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None = fp32, no autocast)."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return AUTOCAST_DTYPES[precision]


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """An autocast context for ``dtype`` on ``device``, or no context for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


__all__ = ["autocast", "autocast_dtype", "resolve_device"]
