"""Objectives of the pretext tasks that are more than a plain cross-entropy: colorization's class-rebalanced
multinomial loss."""

from __future__ import annotations

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


__all__ = ["rebalanced_colour_loss"]
