"""Masked siamese networks (Assran et al., 2022, MSN): a masked anchor view's soft assignment to learnable
prototypes matches the sharpened, balanced assignment of an unmasked target view, with a regulariser that spreads the
anchors' mean assignment over every prototype.

The equations follow the authors' code (facebookresearch/msn ``src/losses.py``), restated in
``../shared/docs/vit-methods.md`` Sec. 6.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

from invprop.core.clustering import sinkhorn_knopp
from invprop.core.diagnostics import entropies
from invprop.distributed.collectives import LOCAL, ProcessGroup


def prototype_scores(embeddings: Tensor, prototypes: Tensor) -> Tensor:
    """``z_hat q_hat^T`` (Assran et al., 2022, Eq. 1): cosine similarities of (B, d) embeddings to (K, d) prototypes,
    both L2-normalised; (B, K) float32."""
    return F.normalize(embeddings.float(), dim=1) @ F.normalize(prototypes.float(), dim=1).T


def msn_targets(
    scores: Tensor, temperature: float, sharpen_temperature: float, iterations: int, group: ProcessGroup = LOCAL
) -> Tensor:
    """``p+ = Sinkhorn(sharpen(softmax(s / tau), T))`` (Assran et al., 2022, Sec. 3; the authors' ``sharpen`` and
    ``distributed_sinkhorn``): the target view's assignment, sharpened -- ``sharpen(p, T)_k = p_k^(1/T) /
    sum_j p_j^(1/T)``, which is ``softmax(s / (tau T))`` -- then balanced over the prototypes by ``iterations``
    Sinkhorn-Knopp rounds over every process's batch (``iterations`` 0: sharpened only).

    Args:
        scores: (B, K) :func:`prototype_scores` of the target views.
        temperature: tau (MSN: 0.1).
        sharpen_temperature: T (MSN: 0.25).
        iterations: Sinkhorn-Knopp rounds (MSN: 3).
        group: the processes whose batches the balance is over.

    Returns:
        (B, K) float32 targets, rows summing to 1, no gradient.
    """
    sharpened = F.log_softmax(scores.detach().float() / (temperature * sharpen_temperature), dim=1)
    if iterations == 0:
        return sharpened.exp()
    return sinkhorn_knopp(sharpened, 1.0, iterations, group)


def msn_cross_entropy(anchor_scores: Tensor, targets: Tensor, temperature: float) -> Tensor:
    """``1/A sum_a H(p+_a, p_a)``, ``p_a = softmax(s_a / tau)`` (Assran et al., 2022, Eq. 2): each anchor view's
    assignment against its image's target, averaged over the A anchors.

    Args:
        anchor_scores: (A, K) :func:`prototype_scores` of the anchor views.
        targets: (A, K) :func:`msn_targets` of each anchor's image (repeated per anchor view).
        temperature: tau.
    """
    if anchor_scores.shape != targets.shape:
        raise ValueError(f"anchors {tuple(anchor_scores.shape)} and targets {tuple(targets.shape)} must match")
    return -(targets * F.log_softmax(anchor_scores.float() / temperature, dim=1)).sum(dim=1).mean()


def mean_entropy_penalty(mean_probs: Tensor) -> Tensor:
    """``log K - H(p_bar)`` (Assran et al., 2022, Eq. 3, the mean-entropy maximisation "me-max"): 0 when the anchors'
    mean assignment ``p_bar`` (K,) uses every prototype equally, log K when it is one prototype."""
    p = mean_probs.float()
    return math.log(p.shape[0]) - entropies(p)


__all__ = ["mean_entropy_penalty", "msn_cross_entropy", "msn_targets", "prototype_scores"]
