"""Learning-rate schedules as pure functions of the global step (so resuming needs only the step count), and the
scaling of a published learning rate with the batch.

Each schedule in :data:`SCHEDULES` maps ``(progress after warm-up in [0, 1], epoch, epochs, milestones, gamma)`` to
a multiplier of the peak learning rate; :func:`lr_factor` adds the linear warm-up and the floor the schedule decays
to. :data:`LR_SCALINGS` holds the rules that scale a recipe's learning rate, published for a reference batch, to the
run's batch (:func:`scaled_lr`).
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


@SCHEDULES.register("constant")
def constant_schedule(
    progress: float, epoch: int, epochs: int, milestones: Sequence[int] | None, gamma: float
) -> float:
    """The peak learning rate throughout (DeepCluster's: Caron et al., 2018, the authors' code)."""
    return 1.0


@SCHEDULES.register("linear")
def linear_schedule(progress: float, epoch: int, epochs: int, milestones: Sequence[int] | None, gamma: float) -> float:
    """A straight line from 1 to 0 over the steps after the warm-up (Jenni & Favaro, 2018: "linear decay")."""
    return 1.0 - min(progress, 1.0)


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
    warmup_start: float = 0.0,
    floor: float = 0.0,
) -> float:
    """Multiplier of the peak learning rate at global ``step`` (counting from 0): a linear warm-up over
    ``warmup_epochs`` from ``warmup_start`` (a share of the peak), then ``schedule`` decaying towards ``floor`` (a
    share of the peak: ``floor + (1 - floor) x schedule``).

    Example:
        >>> lr_factor(0, 10, 10, "cosine", warmup_epochs=1), lr_factor(55, 10, 10, "cosine", warmup_epochs=1)
        (0.1, 0.5)
        >>> lr_factor(55, 10, 10, "cosine", warmup_epochs=1, floor=0.001)
        0.5005
    """
    shape = SCHEDULES.get(schedule)
    total = max(steps_per_epoch * epochs, 1)
    warmup = steps_per_epoch * warmup_epochs
    if step < warmup:
        return warmup_start + (1.0 - warmup_start) * ((step + 1) / warmup)
    progress = (step - warmup) / max(total - warmup, 1)
    return floor + (1.0 - floor) * shape(progress, step // max(steps_per_epoch, 1), epochs, milestones, gamma)


def cosine_between(start: float, final: float, step: int, total_steps: int) -> float:
    """From ``start`` at step 0 to ``final`` at step ``total_steps`` on half a cosine, no warm-up (DINO's
    ``cosine_scheduler`` of the weight decay and the teacher's momentum: Caron et al., 2021, the authors' utils.py).

    Example:
        >>> [round(cosine_between(0.04, 0.4, step, 10), 6) for step in (0, 5, 10)]
        [0.04, 0.22, 0.4]
    """
    progress = min(max(step, 0), total_steps) / max(total_steps, 1)
    return final + (start - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _no_scaling(batch: int, reference: int) -> float:
    return 1.0


def _linear(batch: int, reference: int) -> float:
    return batch / reference


def _square_root(batch: int, reference: int) -> float:
    return math.sqrt(batch / reference)


#: How a recipe's learning rate, published for a reference batch, follows the run's batch: ``none`` (as published,
#: whatever the batch), ``linear`` (Goyal et al., 2017: x B / B_ref) or ``sqrt`` (SimCLR's: x sqrt(B / B_ref)).
LR_SCALINGS: dict[str, Callable[[int, int], float]] = {"none": _no_scaling, "linear": _linear, "sqrt": _square_root}


def scaled_lr(lr: float, batch: int, reference: int, rule: str) -> float:
    """The peak learning rate of a run of global batch ``batch`` from a recipe's ``lr`` at ``reference``.

    Example:
        >>> scaled_lr(0.3, 512, 256, "linear"), scaled_lr(1.2, 1024, 256, "sqrt"), scaled_lr(0.03, 512, 256, "none")
        (0.6, 2.4, 0.03)
    """
    if rule == "none":
        return lr  # as published: no rounding of a multiplication by 1
    return lr * LR_SCALINGS[rule](batch, reference)


__all__ = [
    "cosine_between",
    "LR_SCALINGS",
    "SCHEDULES",
    "constant_schedule",
    "cosine_schedule",
    "lr_factor",
    "scaled_lr",
    "step_schedule",
]
