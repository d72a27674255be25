"""Mutual-information objectives between a global vector and local features (Hjelm et al., 2019, Deep InfoMax):
every image's global embedding scored against every location of every image's local map, the image's own
locations the positives, the other images' locations the negatives."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def local_global_scores(global_embeddings: Tensor, local_embeddings: Tensor) -> Tensor:
    """The dot-product critic of Deep InfoMax (Hjelm et al., 2019, Sec. 3.1 and App. A.2, "encoder and dot
    product"): ``T[i, j, s] = <g_i, l_{j,s}>`` for every global embedding i, image j and location s.

    Args:
        global_embeddings: (B, U).
        local_embeddings: (B, U, h, w) (or (B, U, S)).

    Returns:
        (B, B, S) float32 scores.

    Example:
        >>> local_global_scores(torch.ones(2, 3), torch.ones(2, 3, 1, 2)).shape
        torch.Size([2, 2, 2])
    """
    local = local_embeddings.float().flatten(2)
    return torch.einsum("iu,jus->ijs", global_embeddings.float(), local)


def jsd_mutual_information(scores: Tensor) -> Tensor:
    """The Jensen-Shannon estimate of the mutual information between the global vector and a local feature
    (Hjelm et al., 2019, Eq. 4; Nowozin et al., 2016): ``E_P[-sp(-T)] - E_{PxN}[sp(T)]``, each expectation
    shifted by log 2 so that a critic at chance (T = 0) gives 0, as the authors' code does.

    Args:
        scores: (B, B, S) with the positives on the diagonal (i = j), B >= 2.

    Returns:
        The 0-d estimate: positives averaged over their B x S entries, negatives over their B x (B - 1) x S.

    Example:
        >>> float(jsd_mutual_information(torch.zeros(3, 3, 4)))  # a critic at chance
        0.0
    """
    b = scores.shape[0]
    positive = torch.eye(b, dtype=torch.bool, device=scores.device).unsqueeze(2).expand_as(scores)
    log2 = math.log(2.0)
    expected_positive = (log2 - F.softplus(-scores[positive])).mean()
    expected_negative = (F.softplus(scores[~positive]) - log2).mean()
    return expected_positive - expected_negative


def local_infonce_loss(scores: Tensor) -> Tensor:
    """InfoNCE between the global vector and a local feature (Hjelm et al., 2019, Eq. 5; van den Oord et al., 2018):
    for each image i and location s, ``-log exp(T[i,i,s]) / (exp(T[i,i,s]) + sum_{j != i, s'} exp(T[i,j,s']))`` --
    the image's own location against every location of every other image -- averaged over i and s; float32
    log-sum-exp. The negatives' log-sum-exp is one per image, shared by its S locations: O(B^2 S) work and memory,
    not O(B^2 S^2).

    Args:
        scores: (B, B, S) with the positives on the diagonal, B >= 2.

    Returns:
        The 0-d mean loss.

    Example:
        >>> round(float(local_infonce_loss(torch.zeros(2, 2, 3))), 4)  # ln(1 + 3): one positive, three negatives
        1.3863
    """
    b = scores.shape[0]
    scores = scores.float()
    eye = torch.eye(b, dtype=torch.bool, device=scores.device)
    positives = scores[eye]  # (B, S)
    # Every location of image i shares its negatives: their log-sum-exp once per image, (B, 1), not per location.
    negatives = torch.logsumexp(scores.masked_fill(eye.unsqueeze(2), float("-inf")).flatten(1), dim=1, keepdim=True)
    return -(positives - torch.logaddexp(positives, negatives)).mean()


def soft_clip(scores: Tensor, clip: float) -> Tensor:
    """AMDIM's soft clipping of critic scores (Bachman et al., 2019, Sec. 3.4): ``c tanh(s / c)``, near s for
    |s| << c and never beyond c, so that no score can make the softmax saturate.

    Example:
        >>> soft_clip(torch.tensor([0.0, 1000.0]), 20.0).tolist()
        [0.0, 20.0]
    """
    return clip * torch.tanh(scores / clip)


def amdim_nce_loss(sources: Tensor, targets: Tensor, clip: float, penalty: float) -> Tensor:
    """AMDIM's NCE from one source vector per image to every location of a target map of the other view
    (Bachman et al., 2019, Sec. 3.2-3.4 and the authors' costs.py): scores ``s = <u_i, v_{j,s}> / sqrt(U)``, soft
    clipped (:func:`soft_clip`), then :func:`local_infonce_loss` (the image's own locations against every location
    of every other image), plus ``penalty x mean(s^2)`` over the raw scores.

    Args:
        sources: (B, U) source embeddings (a global vector, or one location of a map).
        targets: (B, U, h, w) target embeddings of the other view.
        clip: c of the soft clipping.
        penalty: the weight of the squared-score regulariser.

    Returns:
        The 0-d loss.

    Example:
        >>> round(float(amdim_nce_loss(torch.zeros(2, 4), torch.zeros(2, 4, 1, 3), 20.0, 0.05)), 4)  # ln(1 + 3)
        1.3863
    """
    raw = local_global_scores(sources, targets) / math.sqrt(sources.shape[1])
    return local_infonce_loss(soft_clip(raw, clip)) + penalty * raw.square().mean()


__all__ = ["amdim_nce_loss", "jsd_mutual_information", "local_global_scores", "local_infonce_loss", "soft_clip"]
