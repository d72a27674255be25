"""DirectPred's mathematics (Tian et al., 2021, Eqs. 18-19, as the authors' code computes them) against the formulas
written out, and on inputs with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from invprop.core.direct_prediction import (
    MIN_SCALE,
    batch_correlation,
    correlation_update,
    direct_predictor_weight,
)
from invprop.models.direct_predictor import DirectPredictor


def _rotation(seed: int, dim: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def test_the_batch_correlation_is_the_mean_outer_product_per_sample() -> None:
    f = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    expected = [[sum(float(f[b, i]) * float(f[b, j]) for b in range(5)) / 5 for j in range(3)] for i in range(3)]
    assert torch.allclose(batch_correlation(f), torch.tensor(expected), atol=1e-6)


def test_the_running_correlation_starts_at_the_first_batch_and_keeps_rho_of_the_old() -> None:
    first, second = torch.eye(2), torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    running = correlation_update(None, first, 0.3)
    assert torch.equal(running, first) and running is not first
    assert torch.allclose(correlation_update(running, second, 0.3), torch.tensor([[0.3, 0.7], [0.7, 0.3]]))


def test_the_predictor_scales_each_eigendirection_by_the_root_of_its_share_plus_eps() -> None:
    values = torch.tensor([4.0, 1.0, 0.0, -1e-6], dtype=torch.float64)  # a tiny negative eigenvalue counts as 0
    rotation = _rotation(1, 4)
    correlation = rotation @ torch.diag(values) @ rotation.T
    eps = 0.1
    expected_scales = torch.tensor([math.sqrt(4 / 4) + eps, math.sqrt(1 / 4) + eps, eps, eps], dtype=torch.float64)
    expected = rotation @ torch.diag(expected_scales) @ rotation.T
    assert torch.allclose(direct_predictor_weight(correlation, eps).double(), expected, atol=1e-5)
    # Without eps the null directions get the floor, not 0.
    floored = direct_predictor_weight(correlation, 0.0).double()
    assert torch.allclose(rotation.T @ floored @ rotation,
                          torch.diag(torch.tensor([1.0, 0.5, MIN_SCALE, MIN_SCALE], dtype=torch.float64)), atol=1e-5)  # fmt: skip


def test_the_predictor_does_not_depend_on_the_correlation_s_scale() -> None:
    f = torch.randn(50, 6, generator=torch.Generator().manual_seed(2))
    c = batch_correlation(f)
    assert torch.allclose(direct_predictor_weight(c, 0.1), direct_predictor_weight(100 * c, 0.1), atol=1e-5)


def test_the_module_uses_its_weight_until_a_step_then_the_one_set_from_the_running_correlation() -> None:
    torch.manual_seed(0)
    module = DirectPredictor(3, rho=0.5, eps=0.1)
    initial = module.weight.clone()
    z = torch.randn(4, 3)
    assert torch.allclose(module(z), z @ initial.T)
    assert not list(module.parameters())  # nothing for the optimiser
    first, second = batch_correlation(torch.randn(8, 3)), batch_correlation(torch.randn(8, 3))
    module.update_(first)
    assert torch.allclose(module.correlation, first) and bool(module.started)
    module.update_(second)
    running = 0.5 * first + 0.5 * second
    assert torch.allclose(module.correlation, running, atol=1e-6)
    assert torch.allclose(module.weight, direct_predictor_weight(running, 0.1), atol=1e-6)
    restored = DirectPredictor(3, rho=0.5, eps=0.1)
    restored.load_state_dict(module.state_dict())  # the state is in buffers: a checkpoint holds it
    assert torch.equal(restored.weight, module.weight) and bool(restored.started)


@pytest.mark.parametrize("eps", [0.0, 0.01, 0.5])
def test_the_predictor_is_symmetric_and_commutes_with_the_correlation(eps: float) -> None:
    c = batch_correlation(torch.randn(40, 5, generator=torch.Generator().manual_seed(3)))
    w = direct_predictor_weight(c, eps)
    assert torch.allclose(w, w.T, atol=1e-6) and torch.allclose(w @ c, c @ w, atol=1e-5)
