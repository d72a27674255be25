"""Objectives of the pretext tasks: colorization's class-rebalanced multinomial loss, Exemplar-CNN's surrogate-class
cross-entropy, and the multi-task sum of several tasks' losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def rebalanced_colour_loss(logits: Tensor, targets: Tensor, weights: Tensor) -> Tensor:
    """Colorization's loss (Zhang, Isola & Efros, 2016, Eq. 2 and 3): per pixel, the cross-entropy between the soft
    target Z and the predicted distribution over the Q colour classes, weighted by v(Z) = w of the target's most
    likely class; the mean over pixels.

    Args:
        logits: (B, Q, H, W) predicted scores.
        targets: (B, Q, H, W) soft-encoded target distributions.
        weights: (Q,) class-rebalancing weights w.

    Returns:
        The 0-d mean loss.
    """
    log_p = F.log_softmax(logits.float(), dim=1)
    per_pixel = -(targets.float() * log_p).sum(dim=1)
    v = weights.float()[targets.argmax(dim=1)]
    return (v * per_pixel).mean()


def surrogate_class_loss(logits: Tensor, classes: Tensor) -> Tensor:
    """Exemplar-CNN's objective (Dosovitskiy et al., 2014, Eq. 1): the cross-entropy of each transformed copy's
    N-way softmax against its seed's surrogate class, ``-log softmax(W f(T x_i) + b)_i``; the mean over copies, in
    float32 with autocast off.

    Args:
        logits: (B, N), ``W f(T x) + b`` for every surrogate class.
        classes: (B,) int64, each copy's seed in ``[0, N)``.

    Returns:
        The 0-d mean loss.
    """
    with torch.autocast(device_type=logits.device.type, enabled=False):
        return F.cross_entropy(logits.float(), classes)


def weighted_task_sum(losses: Tensor, weights: Tensor) -> Tensor:
    """The multi-task objective of Doersch & Zisserman (2017, Sec. 3, the "naive multi-head" network):
    ``L = sum_t w_t L_t`` over the tasks sharing one trunk.

    Args:
        losses: (T,) each task's 0-d loss, stacked.
        weights: (T,) w_t.

    Returns:
        The 0-d weighted sum.
    """
    return (weights.to(losses.dtype) * losses).sum()


__all__ = ["rebalanced_colour_loss", "surrogate_class_loss", "weighted_task_sum"]
