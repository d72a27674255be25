"""I-JEPA's target normalisation and Huber loss against their formulas written out per token and per value."""

from __future__ import annotations

import math

import pytest
import torch

from invprop.core.joint_embedding import jepa_loss, target_layer_norm


def test_each_target_token_is_normalised_over_its_features_without_scale_or_shift() -> None:
    torch.manual_seed(0)
    tokens = torch.randn(2, 3, 5) * 4 + 1
    out = target_layer_norm(tokens)
    for i in range(2):
        for j in range(3):
            values = tokens[i, j].tolist()
            mean = sum(values) / 5
            variance = sum((v - mean) ** 2 for v in values) / 5  # biased, as LayerNorm's
            expected = [(v - mean) / math.sqrt(variance + 1e-5) for v in values]
            assert out[i, j].tolist() == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_the_loss_is_the_mean_huber_distance_squared_below_one_linear_above() -> None:
    predictions = torch.tensor([[[0.0, 0.5], [3.0, -2.0]]])
    targets = torch.tensor([[[0.2, 0.5], [0.0, 0.0]]])
    by_value = [0.5 * 0.2**2, 0.0, 3.0 - 0.5, 2.0 - 0.5]
    assert float(jepa_loss(predictions, targets)) == pytest.approx(sum(by_value) / 4)
    assert float(jepa_loss(targets, targets)) == 0.0
    with pytest.raises(ValueError, match="must match"):
        jepa_loss(predictions, targets[:, :1])
