"""DINO's weight-normalised last layer: rows of norm g, gradients to the direction only when the norm is fixed, and
nothing at all when detached."""

from __future__ import annotations

import pytest
import torch

from invprop.models.weight_norm import WeightNormLinear


def test_the_rows_have_norm_one_when_fixed_and_the_scores_are_the_inputs_times_them() -> None:
    torch.manual_seed(0)
    layer = WeightNormLinear(4, 6)
    weight = layer.weight()
    assert weight.norm(dim=1).tolist() == pytest.approx([1.0] * 6, rel=1e-6)
    x = torch.randn(3, 4)
    scores = layer(x).detach()
    for i in range(3):
        for k in range(6):
            expected = sum(float(x[i, d]) * float(layer.direction[k, d].detach()) for d in range(4))
            expected /= float(layer.direction[k].detach().norm())
            assert float(scores[i, k]) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_a_fixed_norm_takes_no_gradient_and_a_free_one_does() -> None:
    x = torch.randn(3, 4)
    fixed, free = WeightNormLinear(4, 6, fixed_norm=True), WeightNormLinear(4, 6, fixed_norm=False)
    fixed(x).square().sum().backward()
    free(x).square().sum().backward()
    assert fixed.norm.grad is None and fixed.direction.grad is not None
    assert free.norm.grad is not None and free.norm.grad.abs().sum() > 0


def test_a_detached_layer_gives_the_same_scores_and_no_gradient() -> None:
    layer = WeightNormLinear(4, 6, fixed_norm=False)
    x = torch.randn(3, 4, requires_grad=True)
    out = layer(x, detached=True)
    assert torch.equal(out, layer(x))
    out.sum().backward()
    assert layer.direction.grad is None and layer.norm.grad is None and x.grad is not None
