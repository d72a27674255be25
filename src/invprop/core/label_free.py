"""Label-free criteria of a representation: what ``compare`` can rank by when the images have no labels.

Each is one function of embeddings (pure tensors); which one ranks, and how well each agrees with labels, is
measured in docs/results.md. Higher is better for :func:`rankme`, :func:`lidar` and :func:`cluster_learnability`;
lower for :func:`alignment` and :func:`uniformity`; :func:`twonn_dimension` has no direction of its own.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from invprop.core.clustering import initial_centroids, kmeans
from invprop.core.knn_classifier import knn_class_scores

#: RankMe's epsilon (Garrido et al., 2023, Eq. 1; the value recommended for float32 -- unconfirmed in the paper).
RANKME_EPS = 1e-7
#: A RankMe below this means the embeddings have collapsed towards one direction (a rank of 1 is a single line):
#: the monitor warns.
COLLAPSED_RANK = 2.0
#: LiDAR's regulariser of the within-class covariance and its entropy epsilon (Thilak et al., 2024; the paper
#: prints neither: the values of public reimplementations, unconfirmed).
LIDAR_DELTA = 1e-4
LIDAR_EPS = 1e-8
#: Wang & Isola (2020)'s defaults: alpha of the alignment, t of the uniformity.
ALIGN_ALPHA = 2.0
UNIFORM_T = 2.0
#: Neighbours and temperature of the cluster-learnability kNN (the weighted kNN of the monitor; Lu et al. 2023
#: use a kNN classifier -- its k is unconfirmed).
CL_KNN_K = 20
CL_KNN_SIGMA = 0.07
#: k-means iterations of the cluster learnability.
CL_KMEANS_ITERATIONS = 30


def smooth_rank(values: Tensor, eps: float) -> Tensor:
    """``exp`` of the Shannon entropy of non-negative ``values`` normalised to sum 1 (plus ``eps``): the smooth
    rank of Roy & Vetterli (2007), which RankMe and LiDAR apply to singular values and eigenvalues.

    Args:
        values: (K,) non-negative.
        eps: added after normalising, so that a zero value contributes 0 to the entropy.

    Returns:
        () float32, between 1 and K (about).
    """
    values = values.float().clamp_min(0)
    p = values / values.sum().clamp_min(torch.finfo(torch.float32).tiny) + eps
    return torch.exp(-torch.special.xlogy(p, p).sum())  # (0 log 0 = 0)


def rankme(embeddings: Tensor, eps: float = RANKME_EPS) -> Tensor:
    """RankMe (Garrido, Balestriero, Najman & LeCun, ICML 2023, Eq. 1): the smooth rank of the singular values of
    the (N, D) embedding matrix, neither centred nor normalised (the division by their sum makes it scale-free).

    Args:
        embeddings: (N, D).

    Returns:
        () float32 in [1, min(N, D)].
    """
    return smooth_rank(torch.linalg.svdvals(embeddings.double()).float(), eps)


def lidar(views: Tensor, delta: float = LIDAR_DELTA, eps: float = LIDAR_EPS) -> Tensor:
    """LiDAR (Thilak et al., ICLR 2024): the smooth rank of the LDA matrix whose classes are images and whose samples
    are each image's augmented views.

    With ``mu_i`` the mean of image i's q views, ``mu`` the mean of the ``mu_i``::

        S_b = 1/(n-1) sum_i (mu_i - mu)(mu_i - mu)^T
        S_w = 1/(n(q-1)) sum_i sum_j (e_ij - mu_i)(e_ij - mu_i)^T + delta I
        LiDAR = smooth_rank(eigenvalues of S_w^(-1/2) S_b S_w^(-1/2))

    Args:
        views: (n, q, D) embeddings, n >= 2 images, q >= 2 views each.

    Returns:
        () float32, between 1 and min(n - 1, D) (about).
    """
    if views.dim() != 3 or views.shape[0] < 2 or views.shape[1] < 2:
        raise ValueError(f"views must be (n >= 2, q >= 2, D), got {tuple(views.shape)}")
    x = views.double()
    n, q, dim = x.shape
    means = x.mean(dim=1)
    between = (means - means.mean(dim=0)).T @ (means - means.mean(dim=0)) / (n - 1)
    spread = (x - means[:, None]).reshape(n * q, dim)
    within = spread.T @ spread / (n * (q - 1)) + delta * torch.eye(dim, dtype=x.dtype, device=x.device)
    values, vectors = torch.linalg.eigh(within)
    inverse_root = vectors @ torch.diag(values.clamp_min(delta).rsqrt()) @ vectors.T
    lda = inverse_root @ between @ inverse_root
    return smooth_rank(torch.linalg.eigvalsh((lda + lda.T) / 2).float(), eps)


def alignment(a: Tensor, b: Tensor, alpha: float = ALIGN_ALPHA) -> Tensor:
    """Alignment (Wang & Isola, ICML 2020): the mean of ``||f(x) - f(y)||^alpha`` over positive pairs, on
    L2-normalised embeddings; lower is better.

    Args:
        a, b: (N, D), row i of each an embedding of two views of image i.

    Returns:
        () float32 in [0, 2^alpha].
    """
    a, b = nn.functional.normalize(a.float(), dim=1), nn.functional.normalize(b.float(), dim=1)
    return (a - b).norm(dim=1).pow(alpha).mean()


def uniformity(embeddings: Tensor, t: float = UNIFORM_T) -> Tensor:
    """Uniformity (Wang & Isola, ICML 2020): ``log`` of the mean over distinct pairs of ``exp(-t ||f(x) - f(y)||^2)``,
    on L2-normalised embeddings (a float32 log-sum-exp); lower is better.

    Args:
        embeddings: (N, D), N >= 2.

    Returns:
        () float32 in [-4t, 0].
    """
    z = nn.functional.normalize(embeddings.float(), dim=1)
    squared = torch.pdist(z).pow(2)
    return torch.logsumexp(-t * squared, dim=0) - math.log(squared.numel())


def twonn_dimension(embeddings: Tensor) -> Tensor:
    """The intrinsic dimension by TwoNN (Facco, d'Errico, Rodriguez & Laio, Sci. Rep. 2017), as a maximum-likelihood
    estimate: with ``mu_i = r2_i / r1_i`` the ratio of each point's second to first nearest-neighbour distance
    (cosine geometry: the embeddings are L2-normalised), ``d = N / sum_i log mu_i``. Points with a duplicate
    (``r1 = 0``) are left out.

    Args:
        embeddings: (N, D), N >= 3.

    Returns:
        () float32, positive.
    """
    z = nn.functional.normalize(embeddings.double(), dim=1)
    distances = torch.cdist(z, z)
    distances.fill_diagonal_(float("inf"))
    nearest = distances.topk(2, dim=1, largest=False).values
    keep = nearest[:, 0] > 0
    ratios = nearest[keep, 1] / nearest[keep, 0]
    return (keep.sum() / torch.log(ratios).sum().clamp_min(torch.finfo(torch.float64).tiny)).float()


def cluster_learnability(
    embeddings: Tensor,
    clusters: int,
    generator: torch.Generator,
    k: int = CL_KNN_K,
    sigma: float = CL_KNN_SIGMA,
    iterations: int = CL_KMEANS_ITERATIONS,
) -> Tensor:
    """Cluster learnability (Lu, Liu, Baratin, Laroche, Courville & Sordoni, TMLR 2023): k-means splits the
    L2-normalised embeddings into ``clusters`` pseudo-classes; a weighted kNN fitted on a random half predicts the
    pseudo-class of the other half; CL is its accuracy (how learnable the representation's own clusters are).

    Args:
        embeddings: (N, D), N >= 2 x clusters.
        clusters: k-means' k (the paper's choice unconfirmed; the caller's).
        generator: draws the initial centres and the halves.

    Returns:
        () float32 in [0, 1].
    """
    z = nn.functional.normalize(embeddings.float(), dim=1)
    labels = kmeans(z, initial_centroids(z, clusters, generator), iterations, generator).assignments
    order = torch.randperm(z.shape[0], generator=generator).to(z.device)
    fit, held = order[: z.shape[0] // 2], order[z.shape[0] // 2 :]
    scores = knn_class_scores(z[fit], labels[fit], z[held], clusters, k=k, sigma=sigma)
    return (scores.argmax(dim=1) == labels[held]).float().mean()


__all__ = [
    "COLLAPSED_RANK",
    "alignment",
    "cluster_learnability",
    "lidar",
    "rankme",
    "smooth_rank",
    "twonn_dimension",
    "uniformity",
]
