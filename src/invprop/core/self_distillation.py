"""Self-distillation without labels (Caron et al., 2021, DINO): a student matches the centred, sharpened output
distribution of a momentum teacher across views of an image -- and, in iBOT (Zhou et al., 2022), on each hidden
patch token of a masked view.

The equations follow the authors' code (facebookresearch/dino ``main_dino.py``, ``DINOLoss``; bytedance/ibot
``main_ibot.py``, ``iBOTLoss``), restated in ``../shared/docs/vit-methods.md`` Sec. 1 and 2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def teacher_distribution(logits: Tensor, center: Tensor, temperature: float) -> Tensor:
    """``P_t(x) = softmax((g_t(x) - c) / tau_t)`` (Caron et al., 2021, Eq. 1 with the centring of Sec. 3.1): the
    teacher's centred and sharpened distribution, without gradient.

    Args:
        logits: (B, K) teacher outputs g_t(x).
        center: (K,) the running centre c.
        temperature: tau_t (DINO: 0.04 to 0.07).

    Returns:
        (B, K) float32 probabilities, detached.
    """
    return F.softmax((logits.detach().float() - center.float()) / temperature, dim=-1)


def dino_loss(student_logits: list[Tensor], teacher_probs: list[Tensor], student_temperature: float) -> Tensor:
    """``L = 1/N sum_{t} sum_{v != t} H(P_t(x_t), P_s(x_v))`` (Caron et al., 2021, Eq. 3; the authors'
    ``DINOLoss.forward``): every teacher view's distribution against every student view but the same crop, averaged
    over the N such pairs and over the batch; ``H(a, b) = -sum_k a_k log b_k`` and
    ``P_s = softmax(g_s / tau_s)``.

    Args:
        student_logits: the student's (B, K) outputs of every view, the teacher's views first (the global crops),
            then the small crops.
        teacher_probs: :func:`teacher_distribution` of the teacher's views, (B, K) each, in the same order as the
            first ``len(teacher_probs)`` student views.
        student_temperature: tau_s (DINO: 0.1).

    Returns:
        0-d float32 loss.
    """
    if len(teacher_probs) > len(student_logits):
        raise ValueError(f"{len(teacher_probs)} teacher views need at least as many student views, "
                         f"got {len(student_logits)}")  # fmt: skip
    log_student = [F.log_softmax(s.float() / student_temperature, dim=-1) for s in student_logits]
    total, pairs = student_logits[0].new_zeros((), dtype=torch.float32), 0
    for t, probs in enumerate(teacher_probs):
        for v, log_p in enumerate(log_student):
            if v != t:
                total = total - (probs * log_p).sum(dim=-1).mean()
                pairs += 1
    if pairs == 0:
        raise ValueError("DINO's loss needs two views at least (one teacher view and another student view)")
    return total / pairs


def masked_token_loss(
    student_logits: Tensor, teacher_probs: Tensor, hidden: Tensor, student_temperature: float
) -> Tensor:
    """``L_MIM = mean_b 1/|M_b| sum_{i in M_b} H(P_t^patch(u)_{b,i}, P_s^patch(u_hat)_{b,i})`` for one view (Zhou et
    al., 2022, iBOT, Eq. 2; the authors' ``iBOTLoss``): the teacher's distribution of each patch token of the whole
    view against the student's of the same token in the masked view, averaged over each image's hidden tokens, then
    over the images -- an image with no hidden token counts as 0 in that mean, as in the authors' code.

    Args:
        student_logits: (B, N, K) the student's outputs of each patch token of the masked view.
        teacher_probs: (B, N, K) :func:`teacher_distribution` of the teacher's patch tokens of the whole view.
        hidden: (B, N) bool, True where the student's token was hidden.
        student_temperature: tau_s (iBOT: 0.1).

    Returns:
        0-d float32 loss.
    """
    if student_logits.shape != teacher_probs.shape or student_logits.shape[:2] != hidden.shape:
        raise ValueError(f"student {tuple(student_logits.shape)}, teacher {tuple(teacher_probs.shape)} and mask "
                         f"{tuple(hidden.shape)} must be (B, N, K), (B, N, K) and (B, N)")  # fmt: skip
    log_student = F.log_softmax(student_logits.float() / student_temperature, dim=-1)
    per_token = -(teacher_probs * log_student).sum(dim=-1)
    weights = hidden.float()
    return ((per_token * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)).mean()


def next_center(center: Tensor, batch_mean: Tensor, momentum: float) -> Tensor:
    """``c <- m c + (1 - m) mean_i g_t(x_i)`` (Caron et al., 2021, Eq. 4): the centre's update from the mean teacher
    output of the batch (both teacher views, every process).

    Args:
        center: (K,) the centre before the step.
        batch_mean: (K,) the teacher outputs' mean over the batch.
        momentum: m (DINO: 0.9).
    """
    return center * momentum + batch_mean.to(center.dtype) * (1 - momentum)


def teacher_temperature(epoch: int, warmup_epochs: int, start: float, final: float) -> float:
    """tau_t at ``epoch`` (counting from 1): linear from ``start`` to ``final`` over the first ``warmup_epochs``
    epochs, then ``final`` (the authors' ``teacher_temp_schedule``: ``linspace(start, final, warmup_epochs)``).

    Example:
        >>> [round(teacher_temperature(e, 3, 0.04, 0.07), 3) for e in (1, 2, 3, 4)]
        [0.04, 0.055, 0.07, 0.07]
    """
    if epoch > warmup_epochs:
        return final
    if warmup_epochs == 1:
        return start
    return start + (final - start) * (epoch - 1) / (warmup_epochs - 1)


__all__ = ["dino_loss", "masked_token_loss", "next_center", "teacher_distribution", "teacher_temperature"]
