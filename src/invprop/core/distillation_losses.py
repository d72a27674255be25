"""Non-contrastive objectives of the field, as pure functions: BYOL's normalised regression and SimSiam's negative
cosine, both against a stop-gradient target, SimSiam's collapse indicator, and SimCLRv2's distillation of a
classifier into a student on unlabelled images."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def byol_loss(prediction: Tensor, target: Tensor) -> Tensor:
    """BYOL's regression loss (Grill et al., 2020, Eq. 2): ``||p/||p|| - z'/||z'||||^2 = 2 - 2 cos(p, z')``.

    Args:
        prediction: (B, D) online predictor outputs q_theta(z_theta).
        target: (B, D) target projections z'_xi of the other view (a stop-gradient constant).

    Returns:
        The 0-d mean over the batch (one direction; BYOL sums both directions).
    """
    p = F.normalize(prediction.float(), dim=1)
    z = F.normalize(target.detach().float(), dim=1)
    return (2 - 2 * (p * z).sum(dim=1)).mean()


def negative_cosine(prediction: Tensor, target: Tensor) -> Tensor:
    """SimSiam's D(p, sg(z)) = -cos(p, z) (Chen & He, 2021, Eq. 1 with the stop-gradient of Eq. 3), mean over B.

    Args:
        prediction: (B, D) predictor outputs p.
        target: (B, D) projections z of the other view (the stop-gradient is applied here).
    """
    return -F.cosine_similarity(prediction.float(), target.detach().float(), dim=1).mean()


def normalised_output_std(z: Tensor) -> Tensor:
    """SimSiam's collapse indicator (Chen & He, 2021, Sec. 4.1, Fig. 2): the mean over channels of the standard
    deviation of ``z / ||z||`` over the batch -- about 1/sqrt(D) without collapse, 0 when collapsed.

    Args:
        z: (B, D), B >= 2.
    """
    return F.normalize(z.detach().float(), dim=1).std(dim=0).mean()


def soft_label_distillation_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """SimCLRv2's distillation loss (Chen et al., 2020b, Eq. 3): ``-sum_y P^T(y|x; tau) log P^S(y|x; tau)`` with
    ``P(y|x; tau) = softmax(logits / tau)``, the teacher's a constant; the mean over the batch, in float32 with
    autocast off.

    Args:
        student_logits: (B, C).
        teacher_logits: (B, C) (no gradient flows into them).
        temperature: tau > 0, the same for both.

    Returns:
        The 0-d mean loss.
    """
    with torch.autocast(device_type=student_logits.device.type, enabled=False):
        target = F.softmax(teacher_logits.detach().float() / temperature, dim=1)
        return -(target * F.log_softmax(student_logits.float() / temperature, dim=1)).sum(dim=1).mean()


__all__ = ["byol_loss", "negative_cosine", "normalised_output_std", "soft_label_distillation_loss"]
