"""The authors' formulation of one InvP objective step, kept as the reference for tests and benchmarks.

Written from the paper and the description of the authors' code (Wang et al., 2020; not copied): the full B x N similarity matrix is
exponentiated, M_i is the top-N_b of that matrix, positives are the hop-by-hop concatenation of neighbour lists
(duplicates kept), ``1e-7`` is added inside the logs, the neighbour table of the batch rows is refreshed from the
top-(k+1) of the full matrix, and the bank rows are EMA-updated. It is deliberately the slow, dense form; the
library's :class:`invprop.core.invp_losses.InvariancePropagationLoss` with ``exact=False`` computes the same losses.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

#: The constant the authors add inside their logs.
AUTHORS_LOG_EPSILON = 1e-7


def authors_objective(
    embeddings: Tensor,
    indices: Tensor,
    bank_features: Tensor,
    neighbors: Tensor,
    temperature: float,
    n_background: int,
    steps: int,
    n_positives: int,
    exclusive: bool = True,
    hard_positives: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """The authors' instance and invariance losses (Eqs. 6 and 4/5 in their dense, exponentiated form).

    Args:
        embeddings: (B, D) un-normalised embeddings.
        indices: (B,) bank rows of the batch.
        bank_features: (N, D) bank.
        neighbors: (N, k) neighbour table (all entries valid).
        temperature, n_background, steps, n_positives: tau, N_b, l and P.
        exclusive: subtract the anchor's own term from the invariance denominator.
        hard_positives: sum the P smallest (True) or largest positive similarities.

    Returns:
        ``(instance, invariance, similarity)``: two scalars and the (B, N) exponentiated similarity matrix.
    """
    points = embeddings / embeddings.pow(2).sum(1, keepdim=True).sqrt()
    similarity = torch.exp(points @ bank_features.to(points.dtype).T / temperature)
    rows = torch.arange(similarity.shape[0], device=similarity.device)
    own = similarity[rows, indices]
    background, _ = similarity.topk(n_background, dim=1, largest=True, sorted=True)
    instance = -(own / background.sum(1) + AUTHORS_LOG_EPSILON).log().mean()
    matrix = neighbors[indices]
    hop = matrix
    for _ in range(steps - 1):
        hop = neighbors[hop].reshape(hop.shape[0], -1)
        matrix = torch.cat([matrix, hop], dim=1)
    positive = torch.gather(similarity, 1, matrix)
    chosen, _ = positive.topk(min(n_positives, positive.shape[1]), dim=1, largest=not hard_positives)
    denominator = background.sum(1) - own if exclusive else background.sum(1)
    invariance = -(chosen.sum(1) / denominator + AUTHORS_LOG_EPSILON).log().mean()
    return instance, invariance, similarity


def authors_step(
    embeddings: Tensor,
    indices: Tensor,
    bank_features: Tensor,
    neighbors: Tensor,
    temperature: float,
    n_background: int,
    steps: int,
    n_positives: int,
    weight: float,
    momentum: float,
) -> Tensor:
    """One full objective step as the authors run it: losses, backward, neighbour refresh, bank update.

    ``bank_features`` and ``neighbors`` are updated in place; the gradient lands in ``embeddings.grad``.

    Returns:
        The detached total loss ``L_ins + weight * L_inv``.
    """
    instance, invariance, similarity = authors_objective(
        embeddings, indices, bank_features, neighbors, temperature, n_background, steps, n_positives
    )
    loss = instance + weight * invariance
    loss.backward()
    with torch.no_grad():
        k = neighbors.shape[1]
        candidates = similarity.topk(k + 1, dim=1).indices
        is_self = candidates == indices.view(-1, 1)
        spare = candidates[:, k:].expand_as(candidates)
        neighbors[indices] = torch.where(is_self, spare, candidates)[:, :k]
        fresh = nn.functional.normalize(embeddings.detach(), dim=1)
        mixed = momentum * bank_features[indices] + (1 - momentum) * fresh
        bank_features[indices] = nn.functional.normalize(mixed, dim=1)
    return loss.detach()
