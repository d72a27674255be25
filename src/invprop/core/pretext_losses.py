"""Objectives of the pretext tasks: colorization's class-rebalanced multinomial loss, Larsson et al.'s hue and
chroma classification, split-brain autoencoders' cross-channel classification, Exemplar-CNN's surrogate-class cross-entropy, and the multi-task sum of several tasks'
losses."""

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


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """The per-pixel cross-entropy between target distributions over Q classes and predicted scores,
    ``-sum_q H(X)_{h,w,q} log softmax(scores)_{h,w,q}``, the mean over pixels and images; float32.

    Args:
        logits: (B, Q, H, W) predicted scores.
        targets: (B, Q, H, W) target distributions (one-hot for hard classes).

    Returns:
        The 0-d mean loss.

    Example:
        >>> round(float(soft_cross_entropy(torch.zeros(1, 4, 2, 2), torch.full((1, 4, 2, 2), 0.25))), 4)  # ln 4
        1.3863
    """
    with torch.autocast(device_type=logits.device.type, enabled=False):
        return -(targets.float() * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def split_brain_loss(ab_logits: Tensor, ab_targets: Tensor, l_logits: Tensor, l_targets: Tensor) -> Tensor:
    """The split-brain autoencoder's objective (Zhang, Isola & Efros, 2017, Eq. 1-4 with the classification loss
    of Eq. 3): ``l(F_1(X_1), X_2) + l(F_2(X_2), X_1)`` -- the L half's prediction of the quantised ab colours plus
    the ab half's prediction of the quantised lightness, each :func:`soft_cross_entropy`.

    Args:
        ab_logits, ab_targets: (B, Q_ab, h, w) the L half's scores and the encoded ab targets.
        l_logits, l_targets: (B, Q_L, h, w) the ab half's scores and the encoded L targets.

    Returns:
        The 0-d sum of the two mean losses.
    """
    return soft_cross_entropy(ab_logits, ab_targets) + soft_cross_entropy(l_logits, l_targets)


def hue_chroma_loss(
    chroma_logits: Tensor, chroma_bins: Tensor, hue_logits: Tensor, hue_bins: Tensor, chroma: Tensor, hue_weight: float
) -> Tensor:
    """Larsson et al.'s (2017) colourisation loss (the authors' colorize_hypercolumn.py): at every sampled pixel,
    the cross-entropy of its chroma bin plus ``hue_weight x chroma x`` the cross-entropy of its hue bin -- the hue
    term weighted by the pixel's chroma, since a grey pixel has no hue; each the mean over pixels; float32.

    Args:
        chroma_logits, hue_logits: (N, Q_c) and (N, Q_h) scores at N pixels.
        chroma_bins, hue_bins: (N,) int64 the pixels' bins.
        chroma: (N,) the pixels' chroma in [0, 1].
        hue_weight: the hue term's weight (the authors: 5).

    Returns:
        The 0-d loss.

    Example:
        >>> scores = torch.zeros(2, 4)  # uniform over 4 bins: each cross-entropy is ln 4
        >>> round(float(hue_chroma_loss(scores, torch.tensor([0, 1]), scores, torch.tensor([2, 3]),
        ...                             torch.tensor([0.0, 1.0]), 5.0)), 4)  # ln 4 x (1 + 5 x 0.5)
        4.852
    """
    with torch.autocast(device_type=chroma_logits.device.type, enabled=False):
        chroma_term = F.cross_entropy(chroma_logits.float(), chroma_bins)
        hue_term = F.cross_entropy(hue_logits.float(), hue_bins, reduction="none")
        return chroma_term + (hue_weight * chroma.float() * hue_term).mean()


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


__all__ = [
    "hue_chroma_loss",
    "rebalanced_colour_loss",
    "soft_cross_entropy",
    "split_brain_loss",
    "surrogate_class_loss",
    "weighted_task_sum",
]
