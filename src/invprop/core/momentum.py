"""Momentum (EMA) targets: the parameter update of MoCo's key encoder and BYOL's target network, and BYOL's
cosine schedule of the momentum."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``xi <- m xi + (1 - m) theta`` for every parameter (He et al., 2020, MoCo, Eq. 2; Grill et al., 2020, BYOL,
    Sec. 3.1), in place; buffers (BatchNorm statistics) are copied, as both papers' code does.

    Args:
        target: the momentum network (its parameters are not trained by gradients).
        online: the network it follows; same architecture.
        momentum: m in [0, 1].
    """
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.mul_(momentum).add_(o.detach(), alpha=1 - momentum)
    for tb, ob in zip(target.buffers(), online.buffers(), strict=True):
        tb.copy_(ob)


def cosine_momentum(base: float, step: int, total_steps: int, final: float = 1.0) -> float:
    """BYOL's schedule (Grill et al., 2020, Sec. 3.2): ``tau_k = final - (final - base)(cos(pi k / K) + 1) / 2``,
    from ``base`` at step 0 to ``final`` at step K.

    Example:
        >>> cosine_momentum(0.99, 0, 100), cosine_momentum(0.99, 100, 100)
        (0.99, 1.0)
    """
    progress = min(max(step, 0), total_steps) / max(total_steps, 1)
    return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2


def linear_momentum(base: float, step: int, total_steps: int, final: float = 1.0) -> float:
    """The linear schedule of I-JEPA's and MSN's target encoders (Assran et al., 2023, 2022, the authors'
    ``momentum_scheduler``): ``tau_k = base + (final - base) k / K``, from ``base`` at step 0 to ``final`` at step K.

    Example:
        >>> linear_momentum(0.996, 0, 100), round(linear_momentum(0.996, 50, 100), 6), linear_momentum(0.996, 100, 100)
        (0.996, 0.998, 1.0)
    """
    progress = min(max(step, 0), total_steps) / max(total_steps, 1)
    return base + (final - base) * progress


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose parameters take no gradient (the starting point of a momentum network)."""
    twin = copy.deepcopy(module)
    for param in twin.parameters():
        param.requires_grad_(False)
    return twin


__all__ = ["cosine_momentum", "ema_update_", "frozen_copy", "linear_momentum"]
