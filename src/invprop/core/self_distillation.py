"""Self-distillation without labels (Caron et al., 2021, DINO): a student matches the centred, sharpened output
distribution of a momentum teacher across views of an image -- and, in iBOT (Zhou et al., 2022), on each hidden
patch token of a masked view; DINOv2's additions (Oquab et al., 2023): Sinkhorn-Knopp centring and the KoLeo
regulariser.

The equations follow the authors' code (facebookresearch/dino ``main_dino.py``, ``DINOLoss``; bytedance/ibot
``main_ibot.py``, ``iBOTLoss``; facebookresearch/dinov2 ``loss/``), restated in ``../shared/docs/vit-methods.md``
Sec. 1, 2 and 7.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from invprop.core.clustering import sinkhorn_knopp
from invprop.distributed.collectives import LOCAL, ProcessGroup


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


#: Sinkhorn-Knopp rounds of DINOv2's teacher centring (the authors' ``sinkhorn_knopp_teacher``, n_iterations=3).
SINKHORN_CENTERING_ROUNDS = 3
#: The distance floor of the KoLeo term's logarithm (DINOv2's ``KoLeoLoss`` eps).
KOLEO_EPS = 1e-8


def balanced_teacher_distribution(
    logits: Tensor, center: Tensor, temperature: float, group: ProcessGroup = LOCAL
) -> Tensor:
    """DINOv2's Sinkhorn-Knopp centring (Oquab et al., 2023, Sec. 4; the authors' ``sinkhorn_knopp_teacher``): the
    teacher's targets ``exp(g_t / tau_t)`` balanced over the K outputs by three Sinkhorn-Knopp rounds over every
    process's batch, instead of the softmax of centred outputs; ``center`` is not used.

    Args:
        logits: (B, K) teacher outputs.
        center: (K,) the running centre (unused; the signature of :func:`teacher_distribution`).
        temperature: tau_t.
        group: the processes whose batches the balance is over.

    Returns:
        (B, K) float32 targets, rows summing to 1, detached.
    """
    return sinkhorn_knopp(logits.detach().float(), temperature, SINKHORN_CENTERING_ROUNDS, group)


def centred_teacher_distribution(
    logits: Tensor, center: Tensor, temperature: float, group: ProcessGroup = LOCAL
) -> Tensor:
    """:func:`teacher_distribution` with the signature of :func:`balanced_teacher_distribution` (``group`` unused)."""
    return teacher_distribution(logits, center, temperature)


#: How a teacher's outputs become targets (``dino.centering``, ``ibot.centering``): DINO's softmax of centred
#: outputs, or DINOv2's Sinkhorn-Knopp balance.
TEACHER_CENTERINGS: dict[str, Callable[[Tensor, Tensor, float, ProcessGroup], Tensor]] = {
    "softmax": centred_teacher_distribution,
    "sinkhorn": balanced_teacher_distribution,
}


def koleo_loss(features: Tensor) -> Tensor:
    """``L_KoLeo = -1/n sum_i log(rho_i + eps)``, ``rho_i = min_{j != i} ||x_i - x_j||`` over L2-normalised rows
    (Oquab et al., 2023, DINOv2, Sec. 4, after Sablayrolles et al., 2019): the Kozachenko-Leonenko entropy estimate,
    which spreads the features of a batch.

    Args:
        features: (n, F) features (DINOv2: the student backbone's class tokens of one global crop), n >= 2.

    Returns:
        0-d float32 loss.
    """
    if features.shape[0] < 2:
        raise ValueError(f"the KoLeo term needs two rows at least, got {features.shape[0]}: give each process a batch "
                         "of two images or more")  # fmt: skip
    x = F.normalize(features.float(), dim=1, eps=KOLEO_EPS)
    # Exact differences, not the |a|^2 + |b|^2 - 2ab shortcut cdist takes past 25 rows, which rounds the small
    # distances of near-duplicates -- the rows KoLeo exists to push apart -- to 0, without a gradient.
    distances = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
    distances = distances + torch.diag(torch.full((x.shape[0],), float("inf"), device=x.device))
    return -torch.log(distances.min(dim=1).values + KOLEO_EPS).mean()


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


__all__ = [
    "KOLEO_EPS",
    "SINKHORN_CENTERING_ROUNDS",
    "TEACHER_CENTERINGS",
    "balanced_teacher_distribution",
    "centred_teacher_distribution",
    "dino_loss",
    "koleo_loss",
    "masked_token_loss",
    "next_center",
    "teacher_distribution",
    "teacher_temperature",
]
