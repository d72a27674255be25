"""Contrastive objectives of the field, as pure functions: SimCLR's NT-Xent, MoCo's InfoNCE against a queue,
MoCo v3's InfoNCE over the batch's keys, NNCLR's nearest-neighbour InfoNCE, PIRL's NCE, CMC's sum over pairs of
views and the invariant and spreading instance softmax of Ye et al. Inputs are embeddings in any scale; each
function L2-normalises what its paper normalises, in float32, and returns the mean over anchors."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from invprop.settings import Range, require

#: At least 1, as a real number.
AT_LEAST_ONE_REAL = Range(ge=1.0)
#: The smallest distance from 0 at which ``log(-expm1(x))`` is evaluated (float32's smallest normal number).
_TINY = torch.finfo(torch.float32).tiny


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


def batch_keys_loss(query: Tensor, keys: Tensor, temperature: float, offset: int = 0) -> Tensor:
    """MoCo v3's contrastive loss (Chen, Xie & He, 2021, Eq. 1 and Alg. 1): each query against every key of the
    (global) batch, its own image's key the positive, scaled by ``2 tau`` as the authors' code does:
    ``l_i = -2 tau log exp(q_i . k_{o+i} / tau) / sum_j exp(q_i . k_j / tau)``, q and k L2-normalised.

    Args:
        query: (B, D) this process's queries (gradients flow).
        keys: (M, D) keys of every process's batch, without gradient (M = B in one process).
        temperature: tau > 0 (MoCo v3: 1.0 for ResNets, 0.2 for ViTs).
        offset: the row of ``keys`` holding this process's first image (its rank x B).

    Returns:
        The 0-d mean loss over the B queries.
    """
    q = F.normalize(query.float(), dim=1)
    k = F.normalize(keys.detach().float(), dim=1)
    targets = torch.arange(offset, offset + q.shape[0], device=q.device)
    return 2 * temperature * F.cross_entropy(q @ k.T / temperature, targets)


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


def log_one_minus_exp(x: Tensor) -> Tensor:
    """``log(1 - exp(x))`` for ``x < 0``, accurate at both ends (``log(-expm1(x))`` near 0, ``log1p(-exp(x))``
    below ``-log 2``; Maechler, 2012, "Accurately computing log(1 - exp(-|a|))")."""
    near_zero = x > -math.log(2.0)
    return torch.where(near_zero, torch.log(-torch.expm1(x.clamp_max(-_TINY))), torch.log1p(-torch.exp(x)))


def invariant_spreading_loss(z1: Tensor, z2: Tensor, temperature: float, negative_weight: float = 1.0) -> Tensor:
    """The instance softmax on in-batch features of Ye et al. (2019, CVPR, Sec. 3.2, the loss J), over all 2B anchors.

    Every embedding of the 2B (both views of the B images) is an anchor a whose query ``q_a`` is classified among the
    other 2B - 1 embeddings, which act as the classifier's weights and carry no gradient (the authors' BatchAverage
    takes them from ``feat.data``); the anchor's other view is its instance. With ``e_j = exp(q_a . k_j / tau)`` and
    the authors' denominator ``Z_a = e_pos + m sum_{j not in {a, pos}} e_j`` (their BatchCriterion scales the
    negatives' sum by ``negM``; the paper's m = 1 gives the plain softmax), ``P(j | a) = e_j / Z_a`` and
    ``J_a = -log P(pos | a) - m sum_{j not in {a, pos}} log(1 - P(j | a))`` -- the invariance term and the spreading
    term -- and the loss is the mean of ``J_a`` over the 2B anchors, as BatchCriterion divides by 2B. In float32
    with autocast off, in the log domain; a ``P(j | a)`` within float32's resolution of 1 is held at ``1 - eps``
    (its ``log(1 - P)`` stays finite; that term's gradient is then 0, the invariance term's is not).

    Args:
        z1: (B, D) embeddings of the first views.
        z2: (B, D) embeddings of the second views (row b is image b's other view), B >= 2.
        temperature: tau > 0.
        negative_weight: m >= 1, the weight of the spreading term and of the negatives in Z_a (below 1 a P(j | a)
            could exceed 1; the authors' code then takes another branch, a subset of hard negatives, not
            implemented here).

    Returns:
        The 0-d mean loss.
    """
    require("negative_weight", negative_weight, AT_LEAST_ONE_REAL)
    with torch.autocast(device_type=z1.device.type, enabled=False):
        z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
        n, total = z1.shape[0], 2 * z1.shape[0]
        rows = torch.arange(total, device=z.device)
        partner = torch.cat([rows[n:], rows[:n]])
        negatives = ~torch.eye(total, dtype=torch.bool, device=z.device)
        negatives[rows, partner] = False
        logits = z @ z.detach().T / temperature
        positive = logits[rows, partner]
        negative = logits[negatives].view(total, total - 2)
        log_z = torch.logaddexp(positive, math.log(negative_weight) + torch.logsumexp(negative, dim=1))
        ceiling = math.log1p(-torch.finfo(torch.float32).eps)
        log_not = log_one_minus_exp((negative - log_z.unsqueeze(1)).clamp_max(ceiling))
        return (log_z - positive - negative_weight * log_not.sum(dim=1)).mean()


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


def full_graph_loss(
    embeddings: Sequence[Tensor],
    memories: Sequence[Tensor],
    negatives: Sequence[Tensor],
    pair_loss: Callable[[Tensor, Tensor, Tensor], Tensor],
) -> Tensor:
    """Contrastive multiview coding's objective over every pair of views (Tian et al., 2019, CMC, Sec. 3.2 for two
    views, ``L(V1, V2) = L^{V1,V2} + L^{V2,V1}``, and Sec. 3.3's "full graph" for more): the sum over ordered pairs
    i != j of ``pair_loss(embeddings[i], memories[j], negatives[j])`` -- view i's embedding as the anchor, the same
    image's memory of view j its positive, memories of view j of other images its negatives.

    Args:
        embeddings: per view, (B, D) embeddings (gradients flow).
        memories: per view, (B, D) memory rows of the batch's images (constants).
        negatives: per view, (K, D) memory rows drawn as negatives (constants).
        pair_loss: ``(anchor, positive, negatives) -> 0-d loss``, e.g. :func:`info_nce_queue_loss` with tau bound
            (the softmax form) or NCE.

    Example:
        >>> one = lambda a, p, n: (a - p).pow(2).sum() + 0 * n.sum()
        >>> z = [torch.zeros(1, 2), torch.ones(1, 2)]
        >>> float(full_graph_loss(z, z, [torch.zeros(3, 2)] * 2, one))
        4.0
    """
    views = len(embeddings)
    if views < 2 or len(memories) != views or len(negatives) != views:
        raise ValueError(f"CMC's objective needs two or more views and a memory and negatives per view; got "
                         f"{views} embeddings, {len(memories)} memories, {len(negatives)} negatives")  # fmt: skip
    pairs = [pair_loss(embeddings[i], memories[j], negatives[j]) for i in range(views) for j in range(views) if i != j]
    return torch.stack(pairs).sum()


__all__ = [
    "batch_keys_loss",
    "full_graph_loss",
    "info_nce_queue_loss",
    "invariant_spreading_loss",
    "log_nce_normaliser",
    "log_one_minus_exp",
    "nearest_neighbours",
    "nnclr_loss",
    "nt_xent_loss",
    "pirl_nce_loss",
]
