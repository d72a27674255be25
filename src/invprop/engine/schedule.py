"""Learning-rate schedules as pure functions of the global step (so resuming needs only the step count)."""

from __future__ import annotations

import math
from typing import Sequence


def lr_factor(
    step: int,
    steps_per_epoch: int,
    epochs: int,
    schedule: str = "cosine",
    warmup_epochs: int = 0,
    milestones: Sequence[int] | None = None,
    gamma: float = 0.1,
) -> float:
    """Multiplier of the base learning rate at global ``step`` (counting from 0).

    ``cosine``: linear warm-up over ``warmup_epochs``, then half a cosine to 0 at the end of ``epochs``.
    ``step``: warm-up, then times ``gamma`` at each milestone epoch (default milestones: 50%, 75%, 87.5%).
    """
    total = max(steps_per_epoch * epochs, 1)
    warmup = steps_per_epoch * warmup_epochs
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine":
        progress = (step - warmup) / max(total - warmup, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    if schedule == "step":
        marks = milestones if milestones is not None else [epochs // 2, epochs * 3 // 4, epochs * 7 // 8]
        epoch = step // max(steps_per_epoch, 1)
        return gamma ** sum(epoch >= m for m in marks)
    raise ValueError(f"unknown schedule {schedule!r}; choose cosine or step")
