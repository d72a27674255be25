"""SwAV's swapped prediction and PCL's prototype term against the formulas written out per sample."""

from __future__ import annotations

import math

import pytest
import torch

from invprop.core.clustering_losses import proto_nce_loss, swapped_prediction_loss


def per_sample_swapped(scores, codes, tau):
    total, pairs = 0.0, 0
    b, k = scores[0].shape
    for i, q in enumerate(codes):
        for v, s in enumerate(scores):
            if v == i:
                continue
            term = 0.0
            for n in range(b):
                norm = math.log(sum(math.exp(float(s[n, j]) / tau) for j in range(k)))
                term += -sum(float(q[n, j]) * (float(s[n, j]) / tau - norm) for j in range(k))
            total += term / b
            pairs += 1
    return total / pairs


def test_swapped_prediction_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    scores = [torch.randn(5, 4, generator=g) for _ in range(4)]  # 2 large + 2 small crops
    codes = [torch.softmax(torch.randn(5, 4, generator=g), dim=1) for _ in range(2)]
    got = swapped_prediction_loss(scores, codes, 0.1)
    assert math.isclose(float(got), per_sample_swapped(scores, codes, 0.1), rel_tol=1e-5)


def test_swapped_prediction_is_lowest_when_views_predict_each_others_codes():
    codes = [torch.eye(3), torch.eye(3)]
    agree = swapped_prediction_loss([torch.eye(3), torch.eye(3)], codes, 0.1)
    disagree = swapped_prediction_loss([torch.eye(3).roll(1, 0), torch.eye(3).roll(1, 0)], codes, 0.1)
    assert float(agree) < 1e-3 < float(disagree)


def test_swapped_prediction_codes_are_constants():
    scores = [torch.randn(3, 4, requires_grad=True) for _ in range(2)]
    codes = [torch.softmax(torch.randn(3, 4), 1) for _ in range(2)]
    swapped_prediction_loss(scores, codes, 0.1).backward()
    assert all(s.grad is not None for s in scores)


def test_swapped_prediction_needs_two_views():
    with pytest.raises(ValueError, match="at least 2 views"):
        swapped_prediction_loss([torch.zeros(2, 2)], [torch.zeros(2, 2)], 0.1)


def test_proto_nce_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(6, 3, generator=g), dim=1)
    c = torch.nn.functional.normalize(torch.randn(4, 3, generator=g), dim=1)
    phi = torch.rand(4, generator=g) + 0.1
    s = torch.randint(0, 4, (6,), generator=g)
    expected = 0.0
    for n in range(6):
        logits = [float(v[n] @ c[j]) / float(phi[j]) for j in range(4)]
        expected += -(logits[int(s[n])] - math.log(sum(math.exp(x) for x in logits)))
    assert math.isclose(float(proto_nce_loss(v, c, phi, s)), expected / 6, rel_tol=1e-5)


def test_proto_nce_is_low_for_tight_clusters_around_their_prototype():
    c = torch.eye(3)
    near = proto_nce_loss(c.clone(), c, torch.full((3,), 0.05), torch.arange(3))
    far = proto_nce_loss(c.roll(1, 0), c, torch.full((3,), 0.05), torch.arange(3))
    assert float(near) < 1e-6 and float(far) > 10
