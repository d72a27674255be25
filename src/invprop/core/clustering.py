"""Clustering for the clustering methods, as pure tensor functions: Sinkhorn-Knopp's equipartitioned assignments
(SwAV's of a batch, SeLa's of the whole dataset), Lloyd's k-means with DeepCluster's empty-cluster rule, PCA-whitening (DeepCluster) and ProtoNCE's
per-cluster concentration (PCL).

Everything runs on the tensors' device with torch; nothing here reads or writes files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from invprop.distributed.collectives import LOCAL, ProcessGroup, all_reduce_sum, masked_logsumexp
from invprop.settings import AT_LEAST_ONE, POSITIVE, require

#: Rows per block when assigning points to centroids (bounds the (rows, K) distance block).
ASSIGN_BLOCK_ROWS = 8192
#: SeLa: its Sinkhorn-Knopp stops when the summed relative change of beta falls below this (the authors' CIFAR code,
#: cifar.py; their ImageNet code, sinkhornknopp.py, stops at 1e-1)...
SELA_TOLERANCE = 1e-2
#: ... checked every this many iterations (the authors' code: 10)...
SELA_CHECK_EVERY = 10
#: ... and after at most this many in any case (the result says whether it converged).
SELA_MAX_ITERATIONS = 2000
#: DeepCluster's split of a centroid into two (FAISS's k-means, which the authors use): (1 +- this) x centroid.
SPLIT_PERTURBATION = 1.0 / 1024
#: ProtoNCE: the smoothing alpha of the concentration's denominator (Li et al., 2021, Eq. 12).
CONCENTRATION_ALPHA = 10.0
#: ProtoNCE: the percentiles that bound the concentrations before rescaling (the authors' code).
CONCENTRATION_CLAMP = (0.1, 0.9)


@torch.no_grad()
def sinkhorn_knopp(scores: Tensor, epsilon: float, iterations: int, group: ProcessGroup = LOCAL) -> Tensor:
    """SwAV's codes (Caron et al., 2020, Sec. 3.1, Eq. 3 and its solution): soft assignments of B samples to K
    prototypes whose prototypes are used equally, by ``iterations`` Sinkhorn-Knopp normalisations of
    ``exp(scores / epsilon)``, in the log domain and float32.

    Each iteration scales every prototype's column to a total of 1/K (summed over all processes' samples), then every
    sample's row to 1/B_total. The result is scaled by B_total, so each row sums to 1.

    Args:
        scores: (B, K) similarities of this process's samples to the prototypes.
        epsilon: the entropic regularisation (smaller: harder assignments).
        iterations: normalisation rounds (SwAV: 3).
        group: the processes whose samples share the equipartition (their rows are summed over).

    Returns:
        (B, K) codes Q, rows summing to 1, no gradient.

    Example:
        >>> q = sinkhorn_knopp(torch.tensor([[5.0, 0.0], [4.0, 0.0]]), epsilon=1.0, iterations=50)
        >>> [round(float(v), 3) for v in q.sum(dim=0)]   # both prototypes used equally
        [1.0, 1.0]
    """
    require("epsilon", epsilon, POSITIVE)
    require("iterations", iterations, AT_LEAST_ONE)
    log_q = scores.float() / epsilon
    total = float(all_reduce_sum(torch.tensor(float(scores.shape[0]), device=scores.device), group))
    if total == 0:  # no sample on any process (e.g. no hidden token to balance): nothing to assign
        return torch.zeros_like(log_q)
    k = scores.shape[1]
    for _ in range(iterations):
        log_q = log_q - masked_logsumexp(log_q.T, group=group).unsqueeze(0) - math.log(k)
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True) - math.log(total)
    return torch.exp(log_q + math.log(total))


class SelfLabels(NamedTuple):
    """SeLa's labels and how its solver ended."""

    labels: Tensor
    iterations: int
    converged: bool


@torch.no_grad()
def self_labels(log_probs: Tensor, lam: float, tolerance: float = SELA_TOLERANCE,
                max_iterations: int = SELA_MAX_ITERATIONS) -> SelfLabels:  # fmt: skip
    """SeLa's pseudo-labels of the whole dataset (Asano et al., 2020, Sec. 3.1): the labels Q that minimise the
    cross-entropy to the network's predictions subject to an equipartition of the N images over the K labels, by
    Sinkhorn-Knopp on ``P^lambda``: ``Q = diag(alpha) P^lambda diag(beta)`` with ``alpha <- (1/K) / (P^lambda beta)``
    and ``beta <- (1/N) / (alpha^T P^lambda)``, then each image's label is the largest entry of its column of Q.
    In the log domain and float64 (``P^lambda`` underflows otherwise). As in the authors' code, it stops when
    ``sum_i |beta_i / beta'_i - 1|`` falls below ``tolerance``, checked every :data:`SELA_CHECK_EVERY` iterations.
    Memory: a few (N, K) float64 arrays.

    Args:
        log_probs: (N, K) log p(y | x_i) of a head for every image.
        lam: lambda > 0, the exponent (the authors: 25 on ImageNet, 10 on CIFAR-10).
        tolerance: the stopping threshold.
        max_iterations: the cap on iterations.

    Returns:
        The (N,) long labels in [0, K), the iterations run, and whether the threshold was reached.

    Example:
        >>> p = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4]])
        >>> self_labels(p.log(), lam=10.0).labels.tolist()   # all prefer label 0; equipartition gives two to each
        [0, 0, 1, 1]
    """
    require("lam", lam, POSITIVE)
    log_p = lam * log_probs.double()
    n, k = log_p.shape
    log_alpha = log_p.new_zeros(k)
    log_beta = log_p.new_full((n,), -math.log(n))  # the authors' start, 1/N
    converged, iteration = False, 0
    while iteration < max_iterations and not converged:
        log_alpha = -math.log(k) - torch.logsumexp(log_p + log_beta.unsqueeze(1), dim=0)
        new_beta = -math.log(n) - torch.logsumexp(log_p + log_alpha.unsqueeze(0), dim=1)
        if iteration % SELA_CHECK_EVERY == 0:
            converged = float((log_beta - new_beta).exp().sub(1.0).abs().sum()) < tolerance
        log_beta = new_beta
        iteration += 1
    return SelfLabels((log_p + log_alpha.unsqueeze(0)).argmax(dim=1), iteration, converged)


def squared_distances(x: Tensor, centroids: Tensor) -> Tensor:
    """(N, K) squared Euclidean distances of the rows of ``x`` (N, D) to ``centroids`` (K, D), in float32."""
    x, c = x.float(), centroids.float()
    return ((x * x).sum(1, keepdim=True) - 2 * x @ c.T + (c * c).sum(1).unsqueeze(0)).clamp_min(0)


def assign(x: Tensor, centroids: Tensor) -> tuple[Tensor, Tensor]:
    """Each row's nearest centroid and its squared distance: ``(assignments (N,) long, distances (N,))``."""
    labels, distances = [], []
    for block in x.split(ASSIGN_BLOCK_ROWS):
        d = squared_distances(block, centroids)
        best, index = d.min(dim=1)
        labels.append(index)
        distances.append(best)
    return torch.cat(labels), torch.cat(distances)


def _means(x: Tensor, labels: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Per-cluster mean rows (K, D) in float64 and sizes (K,); an empty cluster's mean is zero."""
    sums = torch.zeros(k, x.shape[1], dtype=torch.float64, device=x.device).index_add_(0, labels, x.double())
    counts = torch.bincount(labels, minlength=k)
    return sums / counts.clamp_min(1).unsqueeze(1), counts


def split_empty_clusters(
    x: Tensor, centroids: Tensor, labels: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor, int]:
    """DeepCluster's remedy for empty clusters (Caron et al., 2018, Sec. 3.3): an empty cluster takes the centroid
    of a non-empty cluster, drawn with probability proportional to its size (as FAISS's k-means, which the authors
    use), with a small perturbation in opposite directions for the two; the points of that cluster are then split
    between the two centroids.

    Args:
        x: (N, D) points.
        centroids: (K, D) centroids after an update.
        labels: (N,) assignments the update was made from.
        generator: draws the clusters that are split (on the CPU).

    Returns:
        ``(centroids, labels, splits)``: new (K, D) centroids and (N,) labels, and how many empty clusters were
        filled (0: the inputs are returned unchanged).
    """
    k = centroids.shape[0]
    counts = torch.bincount(labels, minlength=k)
    empty = (counts == 0).nonzero().flatten().tolist()
    if not empty:
        return centroids, labels, 0
    centroids, labels, counts = centroids.clone(), labels.clone(), counts.clone()
    for target in empty:
        weights = (counts - 1).clamp_min(0).double().cpu()  # a cluster of one point cannot be split
        if float(weights.sum()) == 0:
            break
        source = int(torch.multinomial(weights, 1, generator=generator))
        centre = centroids[source].clone()
        centroids[target] = centre * (1 + SPLIT_PERTURBATION)
        centroids[source] = centre * (1 - SPLIT_PERTURBATION)
        members = (labels == source).nonzero().flatten()
        pair = torch.stack([centroids[source], centroids[target]])
        nearest = squared_distances(x[members], pair).argmin(dim=1)
        if bool((nearest == 0).all()) or bool((nearest == 1).all()):  # symmetric points: split them in half
            nearest = torch.arange(members.numel(), device=x.device) % 2
        moved = members[nearest == 1]
        labels[moved] = target
        counts[source] -= moved.numel()
        counts[target] = moved.numel()
    return centroids, labels, len(empty)


@dataclass
class KMeansResult:
    """What :func:`kmeans` returns.

    Attributes:
        centroids: (K, D) float32 centroids.
        assignments: (N,) long, each point's cluster (the nearest final centroid).
        distances: (N,) squared distance of each point to its centroid.
        iterations: Lloyd iterations run.
        splits: empty clusters filled over the run.
    """

    centroids: Tensor
    assignments: Tensor
    distances: Tensor
    iterations: int
    splits: int


@torch.no_grad()
def kmeans(x: Tensor, centroids: Tensor, iterations: int, generator: torch.Generator | None = None) -> KMeansResult:
    """Lloyd's k-means from the given initial centroids: assign each point to its nearest centroid, move each
    centroid to the mean of its points, until the assignments stop changing or after ``iterations`` updates; an
    empty cluster is filled by :func:`split_empty_clusters`. Exact (no sampling), float32 distances, float64 means.

    Args:
        x: (N, D) points.
        centroids: (K, D) initial centroids (e.g. K points drawn from ``x``), K <= N.
        iterations: at most this many centroid updates.
        generator: draws the clusters split for empty ones (default: seeded with 0).

    Returns:
        A :class:`KMeansResult`.

    Example:
        >>> points = torch.tensor([[0.0], [0.1], [5.0], [5.2]])
        >>> kmeans(points, points[[0, 1]].clone(), iterations=10).assignments.tolist()
        [0, 0, 1, 1]
    """
    require("iterations", iterations, AT_LEAST_ONE)
    k = centroids.shape[0]
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"k-means needs between 1 and {x.shape[0]} centroids (one per point at most), got {k}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    c = centroids.float().clone()
    labels, distances = assign(x, c)
    splits, done = 0, 0
    for done in range(1, iterations + 1):
        means, counts = _means(x, labels, k)
        c = torch.where((counts > 0).unsqueeze(1), means, c.double()).float()
        c, labels, split = split_empty_clusters(x, c, labels, generator)
        splits += split
        if split:
            c = _means(x, labels, k)[0].float()
        new_labels, distances = assign(x, c)
        if torch.equal(new_labels, labels):
            break
        labels = new_labels
    return KMeansResult(c, labels, distances, done, splits)


#: k-means implementations: exact Lloyd in torch, or FAISS's (optional package).
KMEANS_BACKENDS = ("torch", "faiss")


def kmeans_with(
    backend: str, x: Tensor, centroids: Tensor, iterations: int, generator: torch.Generator | None = None
) -> KMeansResult:
    """:func:`kmeans` (``torch``) or FAISS's k-means (``faiss``) from the same initial centroids."""
    if backend == "torch":
        return kmeans(x, centroids, iterations, generator)
    if backend != "faiss":
        raise ValueError(f"k-means backend must be one of {', '.join(KMEANS_BACKENDS)}, got {backend!r}")
    from invprop.core.faiss_search import faiss_kmeans

    c, labels, distances = faiss_kmeans(x, centroids, iterations)
    return KMeansResult(c, labels, distances, iterations, 0)


def initial_centroids(x: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """``k`` distinct rows of ``x`` drawn uniformly (FAISS's and DeepCluster's initialisation): (k, D)."""
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"cannot draw {k} initial centroids from {x.shape[0]} points; lower the number of clusters")
    return x[torch.randperm(x.shape[0], generator=generator)[:k].to(x.device)].clone()


@dataclass
class Whitening:
    """A fitted PCA-whitening: ``(x - mean) @ projection``.

    Attributes:
        mean: (D,) the points' mean.
        projection: (D, d) principal directions scaled by 1 / sqrt(their variance); a direction without variance
            maps to 0.
    """

    mean: Tensor
    projection: Tensor

    def __call__(self, x: Tensor) -> Tensor:
        return ((x.double() - self.mean) @ self.projection).float()


def pca_whitening(x: Tensor, dim: int) -> Whitening:
    """PCA to ``dim`` components and whitening, as DeepCluster prepares features for k-means (Caron et al., 2018,
    Sec. 3.3: "PCA-reduced to 256 dimensions, whitened and l2-normalized"), fitted in float64.

    Args:
        x: (N, D) features.
        dim: kept components d (at most D; the leading ones by variance).

    Returns:
        A :class:`Whitening`; applied to ``x`` its output has (up to rounding) zero mean and identity covariance on
        the components with variance.
    """
    require("dim", dim, AT_LEAST_ONE)
    if dim > x.shape[1]:
        raise ValueError(f"PCA cannot keep {dim} components of {x.shape[1]}-dimensional features; lower it")
    data = x.double()
    mean = data.mean(dim=0)
    centred = data - mean
    covariance = centred.T @ centred / max(x.shape[0] - 1, 1)
    variances, vectors = torch.linalg.eigh(covariance)  # ascending
    variances, vectors = variances.flip(0)[:dim], vectors.flip(1)[:, :dim]
    floor = variances.max().clamp_min(0) * torch.finfo(torch.float64).eps * x.shape[1]
    scale = torch.where(variances > floor, variances.clamp_min(floor).rsqrt(), torch.zeros_like(variances))
    return Whitening(mean, vectors * scale.unsqueeze(0))


def cluster_concentration(
    distances: Tensor, assignments: Tensor, k: int, temperature: float, alpha: float = CONCENTRATION_ALPHA
) -> Tensor:
    """ProtoNCE's concentration phi of each cluster (Li et al., 2021, PCL, Eq. 12), then bounded and rescaled as the
    authors' code does.

    ``phi = sum_z ||v'_z - c||_2 / (Z log(Z + alpha))`` over the Z momentum features v'_z of the cluster. A cluster of
    one point takes the largest phi of the others. The values are clipped to their 10th and 90th percentiles and
    scaled so that their mean is ``temperature`` (the InfoNCE temperature).

    Args:
        distances: (N,) Euclidean distance of each point to its centroid (not squared).
        assignments: (N,) cluster of each point.
        k: clusters K (every one non-empty).
        temperature: the mean of the returned values.
        alpha: the smoothing alpha (10 in the paper).

    Returns:
        (K,) float32 concentrations, positive.
    """
    require("temperature", temperature, POSITIVE)
    counts = torch.bincount(assignments, minlength=k).double()
    if bool((counts == 0).any()):
        raise ValueError("every cluster needs at least one point to estimate its concentration")
    sums = torch.zeros(k, dtype=torch.float64, device=distances.device).index_add_(0, assignments, distances.double())
    phi = sums / (counts * torch.log(counts + alpha))
    several = counts > 1
    largest = phi[several].max() if bool(several.any()) else torch.tensor(1.0, dtype=torch.float64)
    phi = torch.where(several, phi, largest)
    low, high = torch.quantile(phi, torch.tensor(CONCENTRATION_CLAMP, dtype=torch.float64, device=phi.device))
    phi = phi.clamp(low, high)
    if float(phi.mean()) <= 0:  # every cluster a single point at its centroid: nothing to scale
        return torch.full((k,), temperature, dtype=torch.float32, device=distances.device)
    return (temperature * phi / phi.mean()).float()


__all__ = [
    "SELA_TOLERANCE",
    "SelfLabels",
    "self_labels",
    "KMEANS_BACKENDS",
    "KMeansResult",
    "Whitening",
    "assign",
    "cluster_concentration",
    "initial_centroids",
    "kmeans",
    "kmeans_with",
    "pca_whitening",
    "sinkhorn_knopp",
    "split_empty_clusters",
    "squared_distances",
]
