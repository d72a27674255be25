"""Weighted k-nearest-neighbour classification on L2-normalised features (Wu et al. 2018; the kNN monitor).

Class score of a query = sum over its K most similar training features of ``exp(sim / sigma)`` for the
neighbour's class. Pure tensor code: the caller provides features.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

#: Default number of neighbours and weighting temperature of the protocol used by InvP and its peers.
DEFAULT_K = 200
DEFAULT_SIGMA = 0.07
#: Queries scored at once; memory is O(chunk x N_train).
DEFAULT_QUERY_CHUNK = 1024


def knn_class_scores(
    train_features: Tensor,
    train_labels: Tensor,
    query_features: Tensor,
    num_classes: int,
    k: int = DEFAULT_K,
    sigma: float = DEFAULT_SIGMA,
    chunk_size: int = DEFAULT_QUERY_CHUNK,
) -> Tensor:
    """Weighted kNN class scores.

    Args:
        train_features: (N, D) features (normalised here).
        train_labels: (N,) int64 labels in [0, num_classes).
        query_features: (Q, D) features (normalised here).
        num_classes: C.
        k: neighbours, capped at N.
        sigma: weighting temperature > 0.

    Returns:
        (Q, C) float32 scores.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    train = nn.functional.normalize(train_features.float(), dim=1)
    query = nn.functional.normalize(query_features.float(), dim=1)
    k = min(k, train.shape[0])
    labels = train_labels.to(train.device).long()
    scores = torch.zeros(query.shape[0], num_classes, device=train.device)
    for start in range(0, query.shape[0], chunk_size):
        sims, idx = (query[start : start + chunk_size].to(train.device) @ train.T).topk(k, dim=1)
        weights = torch.exp((sims - 1.0) / sigma)  # shifted by the max possible sim: same ranking, no overflow
        scores[start : start + chunk_size].scatter_add_(1, labels[idx], weights)
    return scores


def topk_accuracy(scores: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """Fraction of rows whose label is among the top-k scores, for each k (capped at the number of classes)."""
    labels = labels.to(scores.device).view(-1, 1)
    ranked = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices
    hits = ranked == labels
    return {k: float(hits[:, : min(k, scores.shape[1])].any(dim=1).float().mean()) for k in ks}
