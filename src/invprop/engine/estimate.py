"""What a run will take, said once after its first steps: the time of an epoch and of the epochs left.

The first :data:`WARM_STEPS` optimiser steps are not timed (allocation, autotuning, caches filling); the next
:data:`TIMED_STEPS` are, and their mean times an epoch's steps. The epoch's start (a clustering method's k-means) and
the kNN monitor come on top; the log line says so where the run has them.
"""

from __future__ import annotations

import time

#: Steps left untimed at the start, and steps timed after them.
WARM_STEPS = 3
TIMED_STEPS = 10


def duration(seconds: float) -> str:
    """``42 s``, ``7.5 min`` or ``2.3 h``.

    Example:
        >>> duration(42), duration(450), duration(8280)
        ('42 s', '7.5 min', '2.3 h')
    """
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class RunEstimate:
    """Times the first steps of a run's segment and gives, once, the line that estimates it.

    Args:
        steps_per_epoch: optimiser steps of an epoch.
        epochs_left: epochs this segment will train, the current one included.
        extras: what the estimate leaves out (e.g. ``"the kNN monitor"``), or empty.
    """

    def __init__(self, steps_per_epoch: int, epochs_left: int, extras: str = "") -> None:
        self.steps_per_epoch = steps_per_epoch
        self.epochs_left = epochs_left
        self.extras = extras
        self._steps = 0
        self._started: float | None = None
        self.done = False
        #: The estimated seconds of an epoch's steps, once measured (else None).
        self.epoch_seconds: float | None = None

    @property
    def warm_steps(self) -> int:
        """The steps left untimed: :data:`WARM_STEPS`, fewer in a short epoch (none: no estimate before an epoch of
        one step ends)."""
        return max(0, min(WARM_STEPS, self.steps_per_epoch - 1))

    @property
    def timed_steps(self) -> int:
        """The steps timed: :data:`TIMED_STEPS`, fewer in a short epoch (at least one)."""
        return max(1, min(TIMED_STEPS, self.steps_per_epoch - self.warm_steps))

    def step(self) -> str | None:
        """Count one optimiser step; the estimate's line when it has just been measured, else None."""
        if self.done:
            return None
        self._steps += 1
        if self._steps == self.warm_steps:
            self._started = time.perf_counter()
            return None
        if self._started is None or self._steps < self.warm_steps + self.timed_steps:
            return None
        self.done = True
        per_step = (time.perf_counter() - self._started) / self.timed_steps
        epoch = self.epoch_seconds = per_step * self.steps_per_epoch
        extras = f", plus {self.extras}" if self.extras else ""
        return (
            f"estimate after {self._steps} steps: about {duration(epoch)} per epoch ({self.steps_per_epoch} steps of "
            f"{per_step:.3f} s), {duration(epoch * self.epochs_left)} for the {self.epochs_left} epoch(s) left{extras}"
        )


__all__ = ["RunEstimate", "TIMED_STEPS", "WARM_STEPS", "duration"]
