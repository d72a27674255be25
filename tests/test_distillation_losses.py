"""BYOL's and SimSiam's losses against their formulas per sample; the stop-gradient; the collapse indicator."""

from __future__ import annotations

import math

import pytest
import torch

from invprop.core.distillation_losses import byol_loss, negative_cosine, normalised_output_std


def test_byol_loss_is_the_normalised_squared_distance_per_sample() -> None:
    g = torch.Generator().manual_seed(0)
    p, z = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    expected = sum(float(((p[b] / p[b].norm() - z[b] / z[b].norm()) ** 2).sum()) for b in range(6)) / 6
    assert float(byol_loss(p, z)) == pytest.approx(expected, rel=1e-5)
    assert float(byol_loss(z, 3 * z)) == pytest.approx(0.0, abs=1e-6)  # identical directions
    assert float(byol_loss(torch.eye(2), torch.eye(2).flip(0))) == pytest.approx(2.0)  # orthogonal
    assert float(byol_loss(z, -z)) == pytest.approx(4.0, rel=1e-6)  # opposite


def test_negative_cosine_per_sample_and_stop_gradient() -> None:
    g = torch.Generator().manual_seed(1)
    p = torch.randn(4, 3, generator=g, requires_grad=True)
    z = torch.randn(4, 3, generator=g, requires_grad=True)
    pd, zd = p.detach(), z.detach()
    expected = -sum(float(pd[b] @ zd[b] / (pd[b].norm() * zd[b].norm())) for b in range(4)) / 4
    loss = negative_cosine(p, z)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert p.grad is not None and z.grad is None  # sg(z)


def test_collapse_indicator() -> None:
    collapsed = torch.ones(16, 8) * torch.randn(1, 8)
    assert float(normalised_output_std(collapsed)) == pytest.approx(0.0, abs=1e-6)
    spread = torch.randn(20000, 64, generator=torch.Generator().manual_seed(0))
    assert float(normalised_output_std(spread)) == pytest.approx(1 / math.sqrt(64), rel=0.02)
