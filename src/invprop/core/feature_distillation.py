"""Distillation of a frozen pretrained teacher's features (LightlyTrain's ``distillation``, after Beyer et al., 2022,
"Knowledge distillation: a good teacher is patient and consistent"): the student's similarities to a queue of the
teacher's embeddings match the teacher's own, and the queue and the mixup that both see.

The equations follow LightlyTrain's code (lightly-ai/lightly-train ``_methods/distillation``), restated in
``../shared/docs/vit-methods.md`` Sec. 8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: LightlyTrain's queue sizes by dataset size: ``(fewer images than this, queue rows)``, about a quarter to a half of
#: the smallest dataset of each bucket (``DistillationArgs.resolve_auto``).
QUEUE_BUCKETS = ((50, 16), (100, 32), (250, 64), (500, 128), (1_000, 256), (2_000, 512), (4_000, 1024),
                 (10_000, 2048), (20_000, 4096))  # fmt: skip
#: The queue size for datasets past the last bucket.
LARGEST_QUEUE = 8192


def queue_size_for(images: int) -> int:
    """LightlyTrain's automatic queue size for a dataset of ``images`` images.

    Example:
        >>> queue_size_for(1347), queue_size_for(50_000)
        (512, 8192)
    """
    return next((rows for limit, rows in QUEUE_BUCKETS if images < limit), LARGEST_QUEUE)


def queue_distillation_loss(student: Tensor, teacher: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """``L = 1/B sum_b KL(softmax(t_b Q^T / tau) || softmax(s_b Q^T / tau))`` (LightlyTrain's ``DistillationLoss``,
    ``vit-methods.md`` Sec. 8 v1): each image's distribution of similarities to the queued teacher embeddings, the
    student's against the teacher's.

    Args:
        student: (B, D_T) L2-normalised student embeddings, projected to the teacher's width.
        teacher: (B, D_T) L2-normalised teacher embeddings.
        queue: (Q, D_T) the queued teacher embeddings (rows not yet filled are zeros).
        temperature: tau (LightlyTrain: 0.07).

    Returns:
        0-d float32 loss (KL summed over the queue, averaged over the batch: ``batchmean``).
    """
    queue = queue.float()
    log_student = F.log_softmax(student.float() @ queue.T / temperature, dim=1)
    log_teacher = F.log_softmax(teacher.float() @ queue.T / temperature, dim=1)
    return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)


def next_queue(queue: Tensor, teacher: Tensor) -> Tensor:
    """The queue after a batch: the batch's teacher embeddings first, the oldest rows dropped (a batch at least as
    large as the queue fills it with its first rows), as LightlyTrain's ``_update_queue``."""
    rows = queue.shape[0]
    if teacher.shape[0] >= rows:
        return teacher[:rows].detach().to(queue.dtype).clone()
    return torch.cat([teacher.detach().to(queue.dtype), queue[: rows - teacher.shape[0]]])


def mixup(images: Tensor, weight: float, order: Tensor) -> Tensor:
    """``lambda x + (1 - lambda) x[order]``: each image mixed with another of the batch (LightlyTrain's
    ``_mixup_data``, one ``lambda`` per batch)."""
    return weight * images + (1.0 - weight) * images[order]


__all__ = ["LARGEST_QUEUE", "QUEUE_BUCKETS", "mixup", "next_queue", "queue_distillation_loss", "queue_size_for"]
