"""What the two-view methods of the field share: two augmented views per image, a step counter for schedules, and
the gathering of a distributed run's batch.

A batch's full-size views come stacked view-major, ``(2B, C, H, W)``: rows ``[0, B)`` are the first views and
``[B, 2B)`` the second views of the same images. Each method encodes both halves in one forward pass (BatchNorm
statistics over the 2B images, as single-process implementations do). Multi-crop's small crops (``data.small_crops``)
come as the batch's second group, encoded in a second forward pass; which views a loss then compares is
:mod:`invprop.core.crop_pairs`'s rule.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from torch import Tensor

from invprop.core.momentum import cosine_momentum
from invprop.distributed.collectives import all_gather_rows, all_gather_tensor
from invprop.errors import ConfigError
from invprop.methods.method import Batch, BuildContext, Method

logger = logging.getLogger(__name__)


def warn_if_queue_holds_the_dataset(key: str, size: int, num_samples: int) -> None:
    """Say once, when a method is built, that a queue as large as the dataset holds images' own earlier rows."""
    if size >= num_samples:
        logger.warning(
            "%s=%d is not below the %d training images: the queue holds images' own earlier rows (as negatives or "
            "neighbours); lower it", key, size, num_samples,
        )  # fmt: skip


def halves(x: Tensor) -> tuple[Tensor, Tensor]:
    """The first and second views' rows of a view-major (2B, ...) tensor."""
    n = x.shape[0] // 2
    return x[:n], x[n:]


def split_views(groups: list[Tensor], size: int) -> list[Tensor]:
    """Every view's rows (B, ...) of a batch's groups of view-major outputs ((V_g x B, ...) each), in view order:
    the full-size views, then the small crops."""
    return [view for group in groups for view in group.split(size)]


#: A momentum curve: ``curve(base, step, total_steps, final)``.
MomentumCurve = Callable[[float, int, int, float], float]


def momentum_schedule(
    key: str, base: float, final: float, context: BuildContext, curve: MomentumCurve = cosine_momentum
) -> "MomentumSchedule":
    """The momentum schedule of a momentum encoder over the run's steps -- BYOL's cosine (Grill et al., 2020, Sec.
    3.2) unless ``curve`` says otherwise (e.g. :func:`invprop.core.momentum.linear_momentum`); a one-line error when
    it changes over the run and the context does not say how many steps the run has."""
    if base != final and context.total_steps is None:
        raise ConfigError(f"{key} rises from {base} to {final} over the run's steps: give the number of optimiser "
                          "steps (BuildContext.total_steps; create_method(..., total_steps=N))")  # fmt: skip
    return MomentumSchedule(base, final, context.total_steps or 1, curve)


class MomentumSchedule:
    """``momentum(step)``: from ``base`` at step 0 to ``final`` at step ``total_steps`` along ``curve`` (a function of
    the optimiser step the batch carries, so it needs no state of its own and no device sync)."""

    def __init__(self, base: float, final: float, total_steps: int, curve: MomentumCurve = cosine_momentum) -> None:
        self.base, self.final, self.total_steps = base, final, max(int(total_steps), 1)
        self.curve = curve

    def __call__(self, step: int) -> float:
        return self.curve(self.base, step, self.total_steps, self.final)


class TwoViewMethod(Method):
    """Base of the two-view methods: :meth:`pair` encodes a batch into its two halves.

    Args:
        encoder: backbone + projector (the run's ``model.head``).
        context: in a distributed run, :meth:`gather` and :meth:`gather_constant` concatenate every process's rows
            (rank order), so that a loss over the batch sees the global batch.
    """

    views = 2

    halves = staticmethod(halves)

    def pair(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Projections (B, D) of the first and of the second views, one forward pass."""
        return halves(self.encode(images))

    def encode_groups(self, batch: Batch) -> list[Tensor]:
        """Projections of each of the batch's groups of views, view-major ((V_g x B, D) each), one forward pass a
        group: the two full-size views, then the multi-crop small crops when the batch has them."""
        self.views_of(batch)
        return [self.encode(group) for group in batch.groups]

    def encode_views(self, batch: Batch) -> list[Tensor]:
        """Projections (B, D) of every view of the batch: the two full-size views, then each small crop."""
        return split_views(self.encode_groups(batch), batch.size)

    def gather(self, x: Tensor) -> Tensor:
        """Every process's rows, differentiably (the batch's own rows keep their gradient); as is in one process."""
        return all_gather_rows(x) if self.distributed else x

    def gather_constant(self, x: Tensor) -> Tensor:
        """Every process's rows without gradient (keys before they enter a queue)."""
        return all_gather_tensor(x.detach()) if self.distributed else x.detach()

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # Runs of earlier versions counted steps in a buffer; the schedules now read the batch's step.
        state_dict.pop(f"{prefix}step", None)
        super()._load_from_state_dict(state_dict, prefix, *args)


__all__ = [
    "MomentumSchedule", "TwoViewMethod", "halves", "momentum_schedule", "split_views", "warn_if_queue_holds_the_dataset",
]  # fmt: skip
