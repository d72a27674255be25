"""Margin objectives on distances between embeddings, as pure functions: the contrastive loss of DrLIM (Hadsell,
Chopra & LeCun, 2006) and the batch-hard triplet loss with a soft margin of S4L-Exemplar (Zhai et al., 2019). Both
work on Euclidean distances in float32 with autocast off; a distance of exactly 0 between two different embeddings
carries no gradient (its direction is undefined) instead of a NaN."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def pairwise_distances(z: Tensor) -> Tensor:
    """Euclidean distances between every two rows: (N, D) -> (N, N), float32, 0 on the diagonal.

    ``torch.cdist`` computed from the differences (not from ``|a|^2 + |b|^2 - 2 a.b``, which cancels badly for near
    points), without an (N, N, D) tensor; a distance of 0 has a gradient of 0.
    """
    z = z.float()
    return torch.cdist(z, z, compute_mode="donot_use_mm_for_euclid_dist")


def drlim_loss(z1: Tensor, z2: Tensor, margin: float) -> Tensor:
    """The contrastive loss of DrLIM (Hadsell, Chopra & LeCun, 2006, Eq. 4) over every pair of the batch's 2B
    embeddings: ``L = (1 - Y) 1/2 D^2 + Y 1/2 max(0, m - D)^2`` with ``D = |G(x_a) - G(x_b)|_2``, Y = 0 for the two
    views of one image (neighbours) and Y = 1 for every other pair.

    The paper sums L over its set of pairs; here the set is the batch's ``2B (2B - 1) / 2`` unordered pairs and the
    loss is their mean (a constant factor). The embeddings are not normalised, as the paper's mapping G is not.

    Args:
        z1: (B, D) embeddings of the first views.
        z2: (B, D) embeddings of the second views (row b is image b's other view), B >= 1.
        margin: m > 0, the distance beyond which a dissimilar pair costs nothing.

    Returns:
        The 0-d mean loss over the pairs.
    """
    with torch.autocast(device_type=z1.device.type, enabled=False):
        z = torch.cat([z1, z2]).float()
        n, total = z1.shape[0], 2 * z1.shape[0]
        distances = pairwise_distances(z)
        rows = torch.arange(total, device=z.device)
        similar = torch.zeros(total, total, dtype=torch.bool, device=z.device)
        similar[rows, torch.cat([rows[n:], rows[:n]])] = True
        pairs = torch.ones(total, total, device=z.device).triu(diagonal=1).bool()
        pull = 0.5 * distances.pow(2)
        push = 0.5 * (margin - distances).clamp_min(0).pow(2)
        return torch.where(similar, pull, push)[pairs].mean()


def batch_hard_triplet_loss(embeddings: Tensor, groups: Tensor) -> Tensor:
    """The batch-hard triplet loss with a soft margin (Hermans, Beyer & Leibe, 2017, Eq. 5; S4L-Exemplar, Zhai et
    al., 2019, Sec. 3.2): for every anchor a, ``softplus(max_p d(a, p) - min_n d(a, n))`` on L2-normalised
    embeddings, p over the anchor's own group (the other views of its image), n over every other group; the mean over
    anchors.

    Args:
        embeddings: (N, D), any scale (normalised here).
        groups: (N,) int, the image each row is a view of; every group has at least two rows and there are at least
            two groups.

    Returns:
        The 0-d mean loss.
    """
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        distances = pairwise_distances(F.normalize(embeddings.float(), dim=1))
        same = groups.unsqueeze(0) == groups.unsqueeze(1)
        hardest_positive = distances.masked_fill(~same, float("-inf")).max(dim=1).values
        hardest_negative = distances.masked_fill(same, float("inf")).min(dim=1).values
        return F.softplus(hardest_positive - hardest_negative).mean()


__all__ = ["batch_hard_triplet_loss", "drlim_loss", "pairwise_distances"]
