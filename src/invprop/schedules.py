"""Learning-rate schedules as pure functions of the global step (so resuming needs only the step count).

Each schedule in :data:`SCHEDULES` maps ``(progress after warm-up in [0, 1], epoch, epochs, milestones, gamma)`` to
a multiplier of the base learning rate; :func:`lr_factor` adds the linear warm-up.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

from invprop.registry import Registry

#: ``(progress in [0, 1], epoch, epochs, milestones or None, gamma) -> multiplier``.
Schedule = Callable[[float, int, int, "Sequence[int] | None", float], float]
SCHEDULES: Registry[Schedule] = Registry("schedule")


@SCHEDULES.register("cosine")
def cosine_schedule(progress: float, epoch: int, epochs: int, milestones: Sequence[int] | None, gamma: float) -> float:
    """Half a cosine from 1 to 0 over the steps after the warm-up."""
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


@SCHEDULES.register("step")
def step_schedule(progress: float, epoch: int, epochs: int, milestones: Sequence[int] | None, gamma: float) -> float:
    """Times ``gamma`` at each milestone epoch (default milestones: 50%, 75%, 87.5% of the epochs)."""
    marks = milestones if milestones is not None else [epochs // 2, epochs * 3 // 4, epochs * 7 // 8]
    return gamma ** sum(epoch >= m for m in marks)


def lr_factor(
    step: int,
    steps_per_epoch: int,
    epochs: int,
    schedule: str = "cosine",
    warmup_epochs: int = 0,
    milestones: Sequence[int] | None = None,
    gamma: float = 0.1,
) -> float:
    """Multiplier of the base learning rate at global ``step`` (counting from 0): a linear warm-up over
    ``warmup_epochs``, then ``schedule``.

    Example:
        >>> lr_factor(0, 10, 10, "cosine", warmup_epochs=1), lr_factor(55, 10, 10, "cosine", warmup_epochs=1)
        (0.1, 0.5)
    """
    shape = SCHEDULES.get(schedule)
    total = max(steps_per_epoch * epochs, 1)
    warmup = steps_per_epoch * warmup_epochs
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return shape(progress, step // max(steps_per_epoch, 1), epochs, milestones, gamma)


__all__ = ["SCHEDULES", "cosine_schedule", "lr_factor", "step_schedule"]
