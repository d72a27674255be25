"""Sinkhorn-Knopp, k-means, PCA-whitening and ProtoNCE's concentration against references written out here (and
scikit-learn's KMeans)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from invprop.core.clustering import (
    cluster_concentration,
    initial_centroids,
    kmeans,
    pca_whitening,
    self_labels,
    sinkhorn_knopp,
    split_empty_clusters,
)


def dense_sinkhorn(scores: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """SwAV's algorithm as written in the paper's appendix: exp, then alternate row and column scalings (float64)."""
    q = torch.exp(scores.double() / epsilon).T  # (K, B)
    q /= q.sum()
    k, b = q.shape
    for _ in range(iterations):
        q /= q.sum(dim=1, keepdim=True)
        q /= k
        q /= q.sum(dim=0, keepdim=True)
        q /= b
    return (q * b).T


@pytest.mark.parametrize("iterations", [1, 3, 10])
def test_sinkhorn_matches_the_dense_reference(iterations):
    scores = torch.randn(12, 5, generator=torch.Generator().manual_seed(0))
    got = sinkhorn_knopp(scores, epsilon=0.5, iterations=iterations)
    assert torch.allclose(got.double(), dense_sinkhorn(scores, 0.5, iterations), atol=1e-5)


def test_sinkhorn_marginals_after_enough_iterations():
    scores = torch.randn(64, 8, generator=torch.Generator().manual_seed(1)) * 3
    q = sinkhorn_knopp(scores, epsilon=0.5, iterations=200)
    assert torch.allclose(q.sum(dim=1), torch.ones(64), atol=1e-5)  # each sample's codes sum to 1
    assert torch.allclose(q.sum(dim=0), torch.full((8,), 64 / 8), atol=1e-3)  # prototypes used equally


def test_sinkhorn_is_stable_where_exp_overflows():
    scores = torch.tensor([[1.0, -1.0], [0.9, -1.0]])
    q = sinkhorn_knopp(scores, epsilon=0.001, iterations=3)  # exp(1000) overflows float32
    assert torch.isfinite(q).all()
    # Equipartition forces the second sample (the weaker claim on prototype 0) onto prototype 1.
    assert q[0].argmax() == 0 and q[1].argmax() == 1


def test_sinkhorn_does_not_track_gradients():
    scores = torch.randn(4, 3, requires_grad=True)
    assert not sinkhorn_knopp(scores, 0.05, 3).requires_grad


def blobs(n_per: int = 40, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0, 0.0], [4.0, 0.0, 1.0], [0.0, 5.0, -1.0], [3.0, 3.0, 3.0]])
    return torch.cat([c + torch.randn(n_per, 3, generator=g) for c in centres])


def test_kmeans_matches_scikit_learn_from_the_same_initial_centres():
    sklearn_cluster = pytest.importorskip("sklearn.cluster")
    x = blobs()
    for seed in range(5):
        start = initial_centroids(x, 4, torch.Generator().manual_seed(seed))
        ours = kmeans(x, start, iterations=100)
        ref = sklearn_cluster.KMeans(4, init=start.double().numpy(), n_init=1, max_iter=100, tol=0.0,
                                     algorithm="lloyd").fit(x.double().numpy())  # fmt: skip
        assert ours.splits == 0
        assert np.array_equal(ours.assignments.numpy(), ref.labels_)
        assert np.allclose(ours.centroids.numpy(), ref.cluster_centers_, atol=1e-5)


def test_kmeans_assigns_every_point_to_its_nearest_centroid():
    x = blobs(seed=3)
    result = kmeans(x, initial_centroids(x, 6, torch.Generator().manual_seed(0)), iterations=50)
    for i in range(x.shape[0]):
        d = [float(((x[i] - c) ** 2).sum()) for c in result.centroids]
        assert result.assignments[i] == int(np.argmin(d))
        assert math.isclose(float(result.distances[i]), min(d), rel_tol=1e-4, abs_tol=1e-5)


def test_an_empty_cluster_takes_half_of_the_largest_cluster():
    # Two groups; the third centroid is far from every point and would stay empty.
    x = torch.tensor([[0.0], [0.2], [0.4], [0.6], [10.0], [10.2]])
    start = torch.tensor([[0.3], [10.1], [100.0]])
    result = kmeans(x, start, iterations=20)
    assert result.splits >= 1
    counts = torch.bincount(result.assignments, minlength=3)
    assert (counts > 0).all()
    # One of the two groups was split between its centroid and the empty one; the other kept its own.
    groups = {frozenset(result.assignments[:4].tolist()), frozenset(result.assignments[4:].tolist())}
    assert groups in ({frozenset({0, 2}), frozenset({1})}, {frozenset({0}), frozenset({1, 2})})


def test_split_empty_clusters_draws_in_proportion_to_size():
    x = torch.cat([torch.zeros(30, 2), torch.ones(2, 2) * 5]) + torch.linspace(0, 0.1, 32).unsqueeze(1)
    labels = torch.tensor([0] * 30 + [1] * 2)
    centroids = torch.tensor([[0.05, 0.05], [5.0, 5.0], [99.0, 99.0]])
    picked_large = 0
    for seed in range(40):
        _, new_labels, splits = split_empty_clusters(x, centroids, labels, torch.Generator().manual_seed(seed))
        assert splits == 1 and (torch.bincount(new_labels, minlength=3) > 0).all()
        picked_large += int((new_labels[:30] == 2).any())
    assert picked_large > 30  # weights 29 : 1


def test_kmeans_refuses_more_centroids_than_points():
    with pytest.raises(ValueError, match="between 1 and 3"):
        kmeans(torch.zeros(3, 2), torch.zeros(4, 2), iterations=1)
    with pytest.raises(ValueError, match="lower the number of clusters"):
        initial_centroids(torch.zeros(3, 2), 4, torch.Generator())


def test_pca_whitening_gives_identity_covariance():
    g = torch.Generator().manual_seed(0)
    mixing = torch.randn(6, 6, generator=g)
    x = torch.randn(500, 6, generator=g) @ mixing + 3
    white = pca_whitening(x, 4)(x).double()
    assert torch.allclose(white.mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-5)
    cov = white.T @ white / (x.shape[0] - 1)
    assert torch.allclose(cov, torch.eye(4, dtype=torch.float64), atol=1e-4)


def test_pca_whitening_keeps_the_directions_of_largest_variance():
    x = torch.zeros(100, 3)
    x[:, 0] = torch.linspace(-1, 1, 100)  # small variance
    x[:, 2] = torch.linspace(-10, 10, 100).flip(0)  # large variance
    projection = pca_whitening(x, 1).projection
    assert abs(float(projection[2, 0])) > 0 and float(projection[1, 0]) == 0


def test_pca_whitening_maps_directions_without_variance_to_zero():
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    x = torch.cat([x, torch.zeros(50, 1)], dim=1)  # rank 2
    white = pca_whitening(x, 3)(x)
    assert torch.isfinite(white).all() and float(white[:, 2].abs().max()) == 0


def test_cluster_concentration_matches_the_formula_per_cluster():
    g = torch.Generator().manual_seed(0)
    assignments = torch.randint(0, 12, (300,), generator=g)
    assignments[:12] = torch.arange(12)
    assignments[assignments == 7] = 3
    assignments[0] = 7  # cluster 7 has one point
    distances = torch.rand(300, generator=g) * 2
    got = cluster_concentration(distances, assignments, 12, temperature=0.2)
    phi = []
    for c in range(12):
        members = [float(distances[i]) for i in range(300) if assignments[i] == c]
        z = len(members)
        phi.append(sum(members) / (z * math.log(z + 10)) if z > 1 else None)
    largest = max(p for p in phi if p is not None)
    phi = np.array([p if p is not None else largest for p in phi])
    phi = np.clip(phi, np.percentile(phi, 10), np.percentile(phi, 90))
    expected = 0.2 * phi / phi.mean()
    assert np.allclose(got.numpy(), expected, rtol=1e-5)
    assert math.isclose(float(got.mean()), 0.2, rel_tol=1e-5)


def test_cluster_concentration_refuses_empty_clusters():
    with pytest.raises(ValueError, match="at least one point"):
        cluster_concentration(torch.ones(3), torch.tensor([0, 0, 2]), 3, temperature=0.2)


def sela_oracle(probs: torch.Tensor, lam: float, iterations: int) -> list[int]:
    """SeLa's Sinkhorn-Knopp as the paper writes it, in the linear domain (float64), element by element:
    alpha_y = (1/K) / sum_i P_yi^lam beta_i, beta_i = (1/N) / sum_y alpha_y P_yi^lam; label_i = argmax_y Q_yi."""
    n, k = probs.shape
    p = [[float(probs[i, y]) ** lam for y in range(k)] for i in range(n)]
    alpha, beta = [1.0] * k, [1.0] * n
    for _ in range(iterations):
        alpha = [(1 / k) / sum(p[i][y] * beta[i] for i in range(n)) for y in range(k)]
        beta = [(1 / n) / sum(alpha[y] * p[i][y] for y in range(k)) for i in range(n)]
    return [max(range(k), key=lambda y: alpha[y] * p[i][y] * beta[i]) for i in range(n)]


@pytest.mark.parametrize("lam", [1.0, 5.0])
def test_self_labels_match_the_linear_domain_transport_written_out(lam: float) -> None:
    probs = torch.softmax(torch.randn(12, 3, generator=torch.Generator().manual_seed(4)), dim=1)
    solved = self_labels(probs.log(), lam, tolerance=0.0, max_iterations=500)
    assert solved.labels.tolist() == sela_oracle(probs, lam, 500) and solved.iterations == 500
    assert not solved.converged


def test_self_labels_share_the_images_equally_and_follow_the_predictions() -> None:
    g = torch.Generator().manual_seed(5)
    log_probs = torch.log_softmax(3 * torch.randn(600, 6, generator=g), dim=1)
    solved = self_labels(log_probs, lam=10.0)
    labels = solved.labels
    sizes = torch.bincount(labels, minlength=6)
    assert solved.converged and int(sizes.min()) >= 97 and int(sizes.max()) <= 103  # 100 each, the summed tolerance
    assert float((labels == log_probs.argmax(dim=1)).float().mean()) > 0.5  # mostly each image's own favourite
    # Every image preferring the same label: an equipartition still splits them, the most confident first.
    one_sided = torch.tensor([[0.95, 0.05], [0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4], [0.55, 0.45]]).log()
    assert self_labels(one_sided, lam=10.0).labels.tolist() == [0, 0, 0, 1, 1, 1]
