"""Ramp-up schedules w(t) for the invariance term (Wang et al., 2020, Sec. 3.3, Eq. 7)."""

from __future__ import annotations

import math
from typing import Callable

#: Sharpness of the Gaussian ramp exp(-GAUSSIAN_SHARPNESS * (1 - t/T)^2), as in the mean-teacher literature.
GAUSSIAN_SHARPNESS = 5.0


def binary_rampup(epoch: int, rampup_epochs: int) -> float:
    """Binary ramp-up: 0 for epochs 1..T, then 1 (epochs count from 1).

    Args:
        epoch: the current epoch, starting at 1.
        rampup_epochs: T >= 0; T = 0 switches the invariance term on from the first epoch.
    """
    return 1.0 if epoch > rampup_epochs else 0.0


def gaussian_rampup(epoch: int, rampup_epochs: int, sharpness: float = GAUSSIAN_SHARPNESS) -> float:
    """Gaussian ramp-up ``exp(-sharpness * (1 - t/T)^2)`` for t < T, then 1 (epochs count from 1)."""
    if rampup_epochs <= 0 or epoch >= rampup_epochs:
        return 1.0
    gap = 1.0 - max(epoch, 0) / rampup_epochs
    return math.exp(-sharpness * gap * gap)


RAMPUPS: dict[str, Callable[[int, int], float]] = {"binary": binary_rampup, "gaussian": gaussian_rampup}


def rampup_weight(kind: str, epoch: int, rampup_epochs: int) -> float:
    """w(t) for a ramp-up named ``kind`` (``binary`` or ``gaussian``)."""
    try:
        fn = RAMPUPS[kind]
    except KeyError:
        raise ValueError(f"unknown ramp-up {kind!r}; choose one of {sorted(RAMPUPS)}") from None
    return fn(epoch, rampup_epochs)
