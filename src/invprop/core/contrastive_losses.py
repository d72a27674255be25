"""Contrastive objectives of the field, as pure functions: SimCLR's NT-Xent, MoCo's InfoNCE against a queue, and
NNCLR's nearest-neighbour InfoNCE. Inputs are embeddings in any scale; each function L2-normalises what its paper
normalises, in float32, and returns the mean over anchors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def nt_xent_loss(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """NT-Xent (Chen et al., 2020, SimCLR, Eq. 1), averaged over all 2B anchors.

    For anchor i of the 2B normalised embeddings and its other view j:
    ``l(i, j) = -log exp(s_ij / tau) / sum_{k != i} exp(s_ik / tau)`` -- the 2B - 2 other embeddings are the
    negatives.

    Args:
        z1: (B, D) projections of the first views.
        z2: (B, D) projections of the second views (row b is image b's other view).
        temperature: tau > 0.

    Returns:
        The 0-d mean loss.
    """
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = z1.shape[0]
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


def info_nce_queue_loss(query: Tensor, key: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """InfoNCE against a queue of negatives (He et al., 2020, MoCo, Eq. 1; MoCo v2 keeps it).

    ``l = -log exp(q . k+ / tau) / (exp(q . k+ / tau) + sum_{k- in queue} exp(q . k- / tau))``.

    Args:
        query: (B, D) query projections (gradients flow).
        key: (B, D) keys of the same images from the momentum encoder (treated as constants).
        queue: (K, D) keys of earlier batches, the negatives (K may be 0).
        temperature: tau > 0.

    Returns:
        The 0-d mean loss over the B queries.
    """
    q = F.normalize(query.float(), dim=1)
    k = F.normalize(key.detach().float(), dim=1)
    negatives = F.normalize(queue.detach().float(), dim=1)
    positive = (q * k).sum(dim=1, keepdim=True)
    logits = torch.cat([positive, q @ negatives.T], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


def nearest_neighbours(z: Tensor, support: Tensor) -> Tensor:
    """Each row's most similar row of ``support`` by cosine similarity (Dwibedi et al., 2021, NNCLR, Eq. 2).

    Args:
        z: (B, D) projections.
        support: (K, D) support set, K >= 1.

    Returns:
        (B, D) normalised support rows (no gradient).
    """
    with torch.no_grad():
        s = F.normalize(support.float(), dim=1)
        index = (F.normalize(z.float(), dim=1) @ s.T).argmax(dim=1)
        return s[index]


def nnclr_loss(neighbours: Tensor, predictions: Tensor, temperature: float) -> Tensor:
    """NNCLR's loss for one direction (Dwibedi et al., 2021, Eq. 3), averaged over the B anchors.

    ``l_i = -log exp(NN(z_i) . p+_i / tau) / sum_k exp(NN(z_i) . p+_k / tau)``, the sum over the batch's predictions
    of the other view.

    Args:
        neighbours: (B, D) nearest support rows of the first view's projections (constants).
        predictions: (B, D) predictor outputs of the second views.
        temperature: tau > 0.
    """
    nn_ = F.normalize(neighbours.detach().float(), dim=1)
    p = F.normalize(predictions.float(), dim=1)
    logits = nn_ @ p.T / temperature
    return F.cross_entropy(logits, torch.arange(p.shape[0], device=p.device))


def log_nce_normaliser(similarities: Tensor, temperature: float, num_samples: int) -> Tensor:
    """log Z of the NCE probability ``exp(s / tau) / Z`` (Wu et al., 2018, Sec. 3.2, which PIRL's NCE follows):
    ``Z ~ N x mean_j exp(s_j / tau)`` over similarities to randomly drawn bank rows, estimated once and then fixed.

    Args:
        similarities: any shape, cosine similarities of embeddings to random bank rows.
        temperature: tau.
        num_samples: N, the rows of the bank (the noise distribution is uniform, 1/N).
    """
    s = similarities.detach().float().reshape(-1) / temperature
    return (
        torch.logsumexp(s, dim=0)
        - torch.log(torch.tensor(float(s.numel())))
        + torch.log(torch.tensor(float(num_samples)))
    )


def pirl_nce_loss(
    memory: Tensor, x: Tensor, negatives: Tensor, temperature: float, log_normaliser: Tensor, num_samples: int
) -> Tensor:
    """PIRL's NCE loss L_NCE(m_I, x) (Misra & van der Maaten, 2020, Eq. 3-4), mean over the batch.

    ``h(u, v) = P(u, v) / (P(u, v) + m/N)`` with ``P = exp(s(u, v) / tau) / Z`` (the probability of Wu et al.,
    2018, with its normaliser Z; Eq. 3 writes the unnormalised exponential), m negatives drawn uniformly from the
    N bank rows; ``L = -log h(m_I, x) - sum_{I' in D_N} log(1 - h(x, m_I'))``. Computed in log space.

    Args:
        memory: (B, D) bank rows m_I of the batch's images (constants).
        x: (B, D) the representation that is contrasted: g(v_It) (the jigsaw view) or f(v_I) (the image).
        negatives: (m, D) bank rows drawn at random, D_N (constants).
        temperature: tau.
        log_normaliser: log Z (0-d), from :func:`log_nce_normaliser`.
        num_samples: N, the bank's rows.
    """
    x = F.normalize(x.float(), dim=1)
    mem = F.normalize(memory.detach().float(), dim=1)
    neg = F.normalize(negatives.detach().float(), dim=1)
    log_noise = torch.log(torch.tensor(neg.shape[0] / num_samples, device=x.device))
    log_z = log_normaliser.to(x.device).float()
    positive = (x * mem).sum(dim=1) / temperature - log_z
    negative = x @ neg.T / temperature - log_z
    log_h = positive - torch.logaddexp(positive, log_noise)
    log_one_minus_h = log_noise - torch.logaddexp(negative, log_noise)
    return (-log_h - log_one_minus_h.sum(dim=1)).mean()


__all__ = [
    "info_nce_queue_loss",
    "log_nce_normaliser",
    "nearest_neighbours",
    "nnclr_loss",
    "nt_xent_loss",
    "pirl_nce_loss",
]
