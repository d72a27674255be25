"""The reconstruction and adversarial objectives against their formulas written out per sample, and on known
answers: a perfect reconstruction, a discriminator at chance."""

from __future__ import annotations

import math

import pytest
import torch

from invprop.core.reconstruction_losses import (
    discriminator_loss,
    generator_adversarial_loss,
    reconstruction_cross_entropy,
    weighted_squared_error,
)


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_the_reconstruction_cross_entropy_is_its_formula_per_component() -> None:
    torch.manual_seed(0)
    logits, clean = torch.randn(2, 1, 3, 3) * 2, torch.rand(2, 1, 3, 3)
    terms = [
        -(x * math.log(_sigmoid(z)) + (1 - x) * math.log(1 - _sigmoid(z)))
        for z, x in zip(logits.flatten().tolist(), clean.flatten().tolist())
    ]
    assert float(reconstruction_cross_entropy(logits, clean)) == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_a_perfect_reconstruction_of_binary_pixels_costs_nothing() -> None:
    clean = (torch.rand(2, 1, 4, 4) > 0.5).float()
    logits = (clean * 2 - 1) * 50  # sigmoid 0 or 1
    assert float(reconstruction_cross_entropy(logits, clean)) == pytest.approx(0.0, abs=1e-6)
    assert float(weighted_squared_error(clean, clean, torch.ones(1, 1, 4, 4))) == 0.0


def test_the_weighted_squared_error_is_the_regions_mean_with_each_pixel_weighted() -> None:
    torch.manual_seed(1)
    made, clean = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    weights = torch.zeros(2, 1, 4, 4)
    weights[0, 0, 1, 2], weights[1, 0, 3, 0], weights[1, 0, 0, 0] = 10.0, 1.0, 1.0
    total, predicted = 0.0, 0
    for b in range(2):
        for h in range(4):
            for w in range(4):
                wt = float(weights[b, 0, h, w])
                predicted += wt > 0
                total += wt * sum((float(made[b, c, h, w]) - float(clean[b, c, h, w])) ** 2 for c in range(3))
    assert float(weighted_squared_error(made, clean, weights)) == pytest.approx(total / (3 * predicted), rel=1e-5)
    changed = made.clone()
    changed[weights.expand_as(made) == 0] += 100  # pixels of weight 0 do not count
    assert torch.allclose(weighted_squared_error(changed, clean, weights), weighted_squared_error(made, clean, weights))


def test_the_adversarial_losses_are_their_formulas_and_known_at_chance() -> None:
    real, made = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    expected = (
        -sum(math.log(_sigmoid(x)) for x in real.tolist()) / 2
        - sum(math.log(1 - _sigmoid(x)) for x in made.tolist()) / 2
    )
    assert float(discriminator_loss(real, made)) == pytest.approx(expected, rel=1e-6)
    assert float(generator_adversarial_loss(made)) == pytest.approx(
        -sum(math.log(_sigmoid(x)) for x in made.tolist()) / 2, rel=1e-6
    )
    assert float(discriminator_loss(torch.zeros(4), torch.zeros(4))) == pytest.approx(2 * math.log(2))
    assert float(generator_adversarial_loss(torch.zeros(4))) == pytest.approx(math.log(2))
    sure = discriminator_loss(torch.full((3,), 30.0), torch.full((3,), -30.0))  # a discriminator that is right
    assert float(sure) == pytest.approx(0.0, abs=1e-6)
