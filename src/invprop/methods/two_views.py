"""What the two-view methods of the field share: two augmented views per image, a step counter for schedules, and
the gathering of a distributed run's batch.

A batch's full-size views come stacked view-major, ``(2B, C, H, W)``: rows ``[0, B)`` are the first views and
``[B, 2B)`` the second views of the same images. Each method encodes both halves in one forward pass (BatchNorm
statistics over the 2B images, as single-process implementations do).
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch import Tensor, nn

from invprop.distributed.collectives import all_gather_rows, all_gather_tensor
from invprop.methods.method import BuildContext, Method, StepOutput

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


class TwoViewMethod(Method):
    """Base of the two-view methods: :meth:`pair` encodes a batch into its two halves; ``step`` (a buffer, saved
    with the state) counts optimiser steps against the context's ``total_steps`` for schedules.

    Args:
        encoder: backbone + projector (the run's ``model.head``).
        context: in a distributed run, :meth:`gather` and :meth:`gather_constant` concatenate every process's rows
            (rank order), so that a loss over the batch sees the global batch.
    """

    views = 2
    step: Tensor

    def __init__(self, encoder: nn.Module, context: BuildContext) -> None:
        super().__init__(encoder, context)
        self.total_steps = max(int(context.total_steps), 1)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    halves = staticmethod(halves)

    def pair(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Projections (B, D) of the first and of the second views, one forward pass."""
        return halves(self.encode(images))

    def gather(self, x: Tensor) -> Tensor:
        """Every process's rows, differentiably (the batch's own rows keep their gradient); as is in one process."""
        return all_gather_rows(x) if self.distributed else x

    def gather_constant(self, x: Tensor) -> Tensor:
        """Every process's rows without gradient (keys before they enter a queue)."""
        return all_gather_tensor(x.detach()) if self.distributed else x.detach()

    @torch.no_grad()
    def after_step(self, outputs: Sequence[StepOutput]) -> None:
        self.step.add_(1)


__all__ = ["TwoViewMethod", "halves", "warn_if_queue_holds_the_dataset"]
