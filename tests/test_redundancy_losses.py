"""Barlow Twins' and VICReg's terms against their formulas written out entry by entry."""

from __future__ import annotations

import math

import pytest
import torch

from invprop.core.redundancy_losses import (
    BATCH_NORM_EPS,
    barlow_twins_loss,
    cross_correlation,
    vicreg_covariance,
    vicreg_loss,
    vicreg_variance,
)


def _standardise(column: list[float]) -> list[float]:
    mean = sum(column) / len(column)
    var = sum((x - mean) ** 2 for x in column) / len(column)
    return [(x - mean) / math.sqrt(var + BATCH_NORM_EPS) for x in column]


def barlow_oracle(z1: torch.Tensor, z2: torch.Tensor, lam: float) -> float:
    b, d = z1.shape
    a = [_standardise(z1[:, i].tolist()) for i in range(d)]
    c = [_standardise(z2[:, j].tolist()) for j in range(d)]
    total = 0.0
    for i in range(d):
        for j in range(d):
            cij = sum(a[i][n] * c[j][n] for n in range(b)) / b
            total += (1 - cij) ** 2 if i == j else lam * cij**2
    return total


def test_barlow_twins_matches_the_entrywise_formula() -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g) + 2
    assert float(barlow_twins_loss(z1, z2, 0.0051)) == pytest.approx(barlow_oracle(z1, z2, 0.0051), rel=1e-4)


def test_barlow_twins_known_answers() -> None:
    # Identical views with decorrelated dimensions: C is the identity, the loss is ~0.
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    assert torch.allclose(cross_correlation(z, z), torch.eye(2), atol=1e-4)
    assert float(barlow_twins_loss(z, z, 0.005)) == pytest.approx(0.0, abs=1e-4)
    # Views unrelated along the batch: the diagonal is 0, the invariance term is D.
    z2 = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])
    assert float(torch.diagonal(cross_correlation(z, z2)).abs().sum()) == pytest.approx(0.0, abs=1e-6)


def test_vicreg_terms_match_their_formulas() -> None:
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(6, 3, generator=g) * 0.5, torch.randn(6, 3, generator=g)
    b, d = z1.shape

    def variance(z: torch.Tensor) -> float:
        total = 0.0
        for j in range(d):
            col = z[:, j].tolist()
            mean = sum(col) / b
            var = sum((x - mean) ** 2 for x in col) / (b - 1)
            total += max(0.0, 1.0 - math.sqrt(var + 1e-4))
        return total / d

    def covariance(z: torch.Tensor) -> float:
        means = [sum(z[:, j].tolist()) / b for j in range(d)]
        total = 0.0
        for i in range(d):
            for j in range(d):
                if i != j:
                    cov = sum((z[n, i] - means[i]) * (z[n, j] - means[j]) for n in range(b)) / (b - 1)
                    total += float(cov) ** 2
        return total / d

    invariance = sum(float((z1[n, j] - z2[n, j]) ** 2) for n in range(b) for j in range(d)) / (b * d)
    assert float(vicreg_variance(z1)) == pytest.approx(variance(z1), rel=1e-5)
    assert float(vicreg_covariance(z2)) == pytest.approx(covariance(z2), rel=1e-5)
    terms = vicreg_loss(z1, z2, 25, 25, 1)
    assert float(terms.invariance) == pytest.approx(invariance, rel=1e-5)
    expected = 25 * invariance + 25 * (variance(z1) + variance(z2)) + (covariance(z1) + covariance(z2))
    assert float(terms.loss) == pytest.approx(expected, rel=1e-5)


def test_vicreg_known_answers() -> None:
    collapsed = torch.zeros(8, 4)
    assert float(vicreg_variance(collapsed)) == pytest.approx(1 - math.sqrt(1e-4))  # every dimension at std 0
    wide = torch.randn(4096, 4, generator=torch.Generator().manual_seed(0)) * 3
    assert float(vicreg_variance(wide)) == 0.0  # std above gamma: no penalty
    assert float(vicreg_covariance(torch.eye(4).repeat(2, 1) - 0.25)) > 0  # correlated dimensions are penalised
