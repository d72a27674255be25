"""invprop.core.label_free against the papers' formulas written out per sample (numpy loops) and known geometries."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from invprop.core.label_free import (
    alignment,
    cluster_learnability,
    lidar,
    rankme,
    smooth_rank,
    twonn_dimension,
    uniformity,
)


def _entropy_rank(values: np.ndarray, eps: float) -> float:
    total = sum(values)
    p = [v / total + eps for v in values]
    return math.exp(-sum(pk * math.log(pk) for pk in p))


def test_rankme_is_the_smooth_rank_of_the_singular_values() -> None:
    z = torch.randn(50, 8, generator=torch.Generator().manual_seed(0)) * torch.arange(1, 9)
    sigma = np.linalg.svd(z.numpy().astype(np.float64), compute_uv=False)
    assert rankme(z).item() == pytest.approx(_entropy_rank(sigma, 1e-7), rel=1e-5)
    assert rankme(torch.eye(6)).item() == pytest.approx(6.0, rel=1e-5)  # every direction used equally
    rank_one = torch.randn(40, 1) @ torch.randn(1, 16)
    assert rankme(rank_one).item() == pytest.approx(1.0, abs=1e-3)  # collapsed to a line
    assert rankme(5 * z).item() == pytest.approx(rankme(z).item(), rel=1e-5)  # scale-free


def test_smooth_rank_of_zeros_and_a_single_value() -> None:
    assert smooth_rank(torch.tensor([3.0, 0.0, 0.0]), 0.0).item() == pytest.approx(1.0)
    assert smooth_rank(torch.ones(5), 0.0).item() == pytest.approx(5.0, rel=1e-6)


def test_lidar_is_the_smooth_rank_of_the_lda_matrix() -> None:
    views = torch.randn(12, 4, 5, generator=torch.Generator().manual_seed(1))
    views += torch.randn(12, 1, 5, generator=torch.Generator().manual_seed(2)) * 3  # images apart
    x = views.numpy().astype(np.float64)
    n, q, d = x.shape
    mu_i = [x[i].mean(axis=0) for i in range(n)]
    mu = sum(mu_i) / n
    s_b = sum(np.outer(m - mu, m - mu) for m in mu_i) / (n - 1)
    s_w = sum(np.outer(x[i, j] - mu_i[i], x[i, j] - mu_i[i]) for i in range(n) for j in range(q)) / (n * (q - 1))
    s_w = s_w + 1e-4 * np.eye(d)
    root = np.real(scipy.linalg.inv(scipy.linalg.sqrtm(s_w)))
    eigen = np.linalg.eigvalsh(root @ s_b @ root)
    assert lidar(views).item() == pytest.approx(_entropy_rank(np.clip(eigen, 0, None), 1e-8), rel=1e-4)
    with pytest.raises(ValueError, match="n >= 2, q >= 2"):
        lidar(views[:, :1])


def test_lidar_ignores_directions_that_only_the_augmentations_move() -> None:
    g = torch.Generator().manual_seed(3)
    images = torch.randn(200, 1, 2, generator=g) * 5  # images differ in 2 directions
    noise = torch.randn(200, 8, 6, generator=g)  # views differ in 6 others
    views = torch.cat([images.expand(200, 8, 2), noise], dim=2)
    views[..., :2] += 0.1 * torch.randn(200, 8, 2, generator=g)
    assert lidar(views).item() < 2.5  # two discriminative directions; RankMe would count all eight
    assert rankme(views.reshape(-1, 8)).item() > 5


def test_alignment_and_uniformity_against_the_pairs_written_out() -> None:
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(7, 3, generator=g), torch.randn(7, 3, generator=g)
    an = [v / np.linalg.norm(v) for v in a.numpy().astype(np.float64)]
    bn = [v / np.linalg.norm(v) for v in b.numpy().astype(np.float64)]
    assert alignment(a, b).item() == pytest.approx(np.mean([np.linalg.norm(x - y) ** 2 for x, y in zip(an, bn)]))
    assert alignment(a, a).item() == pytest.approx(0.0, abs=1e-6)
    pairs = [math.exp(-2 * np.linalg.norm(an[i] - an[j]) ** 2) for i, j in itertools.combinations(range(7), 2)]
    assert uniformity(a).item() == pytest.approx(math.log(np.mean(pairs)), rel=1e-5)
    assert uniformity(torch.ones(5, 3)).item() == pytest.approx(0.0, abs=1e-6)  # collapsed: the worst value


def test_twonn_against_each_points_ratio_and_the_dimension_of_a_sphere() -> None:
    g = torch.Generator().manual_seed(5)
    z = torch.randn(30, 4, generator=g)
    zn = z.numpy().astype(np.float64)
    zn = zn / np.linalg.norm(zn, axis=1, keepdims=True)
    logs = []
    for i in range(30):
        d = sorted(np.linalg.norm(zn[i] - zn[j]) for j in range(30) if j != i)
        logs.append(math.log(d[1] / d[0]))
    assert twonn_dimension(z).item() == pytest.approx(30 / sum(logs), rel=1e-5)
    sphere = torch.zeros(3000, 12)
    sphere[:, :4] = torch.randn(3000, 4, generator=g)  # normalised: the 3-sphere, in 12 dimensions
    assert twonn_dimension(sphere).item() == pytest.approx(3.0, abs=0.3)


def test_clusters_that_are_there_are_learnable_and_noise_is_not() -> None:
    g = torch.Generator().manual_seed(6)
    centres = torch.nn.functional.normalize(torch.randn(10, 32, generator=g), dim=1) * 10
    grouped = centres.repeat_interleave(40, dim=0) + torch.randn(400, 32, generator=g)
    assert cluster_learnability(grouped, 10, torch.Generator().manual_seed(0)).item() == 1.0
    noise = torch.randn(400, 32, generator=g)
    assert cluster_learnability(noise, 10, torch.Generator().manual_seed(0)).item() < 0.6
