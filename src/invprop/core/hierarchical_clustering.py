"""DeeperCluster's two-level k-means (Caron, Bojanowski, Mairal & Joulin, ICCV 2019, Sec. 3.2): the points are
clustered into m super-clusters, then the points of each super-cluster into k / m sub-clusters of their own.
Each level is :func:`invprop.core.clustering.kmeans_with` from centroids drawn among the points it clusters."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from invprop.core.clustering import initial_centroids, kmeans_with


@dataclass
class TwoLevelClusters:
    """What :func:`two_level_kmeans` returns.

    Attributes:
        super_labels: (N,) long, each point's super-cluster in ``[0, m)``.
        sub_labels: (N,) long, each point's sub-cluster inside its super-cluster, in ``[0, k / m)``.
        distances: (N,) squared distance of each point to its sub-cluster's centroid.
        splits: empty clusters filled, over both levels.
    """

    super_labels: Tensor
    sub_labels: Tensor
    distances: Tensor
    splits: int

    def flat_labels(self, sub_clusters: int) -> Tensor:
        """Each point's cluster among all ``m x sub_clusters``: ``super * sub_clusters + sub``."""
        return self.super_labels * sub_clusters + self.sub_labels


@torch.no_grad()
def two_level_kmeans(
    points: Tensor,
    super_clusters: int,
    sub_clusters: int,
    iterations: int,
    generator: torch.Generator,
    backend: str = "torch",
) -> TwoLevelClusters:
    """Hierarchical k-means of Caron et al. (2019, Sec. 3.2): ``super_clusters`` over all points, then
    ``sub_clusters`` inside each super-cluster (as many as it has points when it has fewer).

    Args:
        points: (N, D), N >= super_clusters.
        super_clusters: m >= 1 (1: one super-cluster, plain k-means of ``sub_clusters``).
        sub_clusters: k / m >= 1, the sub-clusters of each super-cluster.
        iterations: at most this many Lloyd iterations per k-means.
        generator: draws the initial centroids and the splits of empty clusters.
        backend: ``torch`` (exact) or ``faiss``.

    Returns:
        A :class:`TwoLevelClusters`.

    Example:
        >>> pts = torch.tensor([[0.0], [0.1], [1.0], [1.1], [10.0], [10.1], [11.0], [11.1]])
        >>> result = two_level_kmeans(pts, 2, 2, 10, torch.Generator().manual_seed(0))
        >>> len(set(result.flat_labels(2).tolist()))
        4
    """
    first = kmeans_with(backend, points, initial_centroids(points, super_clusters, generator), iterations, generator)
    super_labels = first.assignments
    sub_labels = torch.zeros_like(super_labels)
    distances = torch.zeros_like(first.distances)
    splits = first.splits
    for cluster in range(super_clusters):
        members = (super_labels == cluster).nonzero().squeeze(1)
        if members.numel() == 0:
            continue
        inside = points[members]
        k = min(sub_clusters, members.numel())
        second = kmeans_with(backend, inside, initial_centroids(inside, k, generator), iterations, generator)
        sub_labels[members] = second.assignments.to(sub_labels.device)
        distances[members] = second.distances.to(distances.device)
        splits += second.splits
    return TwoLevelClusters(super_labels, sub_labels, distances, splits)


__all__ = ["TwoLevelClusters", "two_level_kmeans"]
