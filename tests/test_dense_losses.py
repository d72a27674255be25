"""DenseCL's dense objective against its formula written out per image and location, and on known answers."""

from __future__ import annotations

import math

import torch

from invprop.core.dense_losses import dense_contrastive_loss, dense_correspondence


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a.double() @ b.double() / (a.double().norm() * b.double().norm()))


def test_each_query_location_matches_its_most_similar_key_location() -> None:
    torch.manual_seed(0)
    query, key = torch.randn(3, 5, 2, 3), torch.randn(3, 5, 3, 2)  # the grids may differ
    found = dense_correspondence(query, key)
    assert found.shape == (3, 6)
    for b in range(3):
        for s in range(6):
            q = query[b, :, s // 3, s % 3]
            scores = [_cos(q, key[b, :, t // 2, t % 2]) for t in range(6)]
            assert int(found[b, s]) == max(range(6), key=scores.__getitem__)


def test_the_dense_loss_is_infonce_per_location_against_the_matched_key() -> None:
    torch.manual_seed(1)
    b, d, side, k, tau = 2, 4, 2, 5, 0.3
    query, key, queue = torch.randn(b, d, side, side), torch.randn(b, d, side, side), torch.randn(k, d)
    match = torch.randint(side * side, (b, side * side))
    total = 0.0
    for i in range(b):
        for s in range(side * side):
            r = query[i, :, s // side, s % side]
            t = match[i, s]
            positive = math.exp(_cos(r, key[i, :, t // side, t % side]) / tau)
            negatives = sum(math.exp(_cos(r, queue[n]) / tau) for n in range(k))
            total += -math.log(positive / (positive + negatives))
    expected = total / (b * side * side)
    assert abs(float(dense_contrastive_loss(query, key, match, queue, tau)) - expected) < 1e-5


def test_known_answers_a_lone_positive_and_one_orthogonal_negative() -> None:
    e1 = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    match = torch.zeros(1, 1, dtype=torch.long)
    assert float(dense_contrastive_loss(e1, 3 * e1, match, torch.zeros(0, 2), 0.2)) == 0.0  # nothing to tell apart
    loss = dense_contrastive_loss(e1, e1, match, torch.tensor([[0.0, 1.0]]), 0.5)
    assert abs(float(loss) - math.log(1 + math.exp(-2.0))) < 1e-6


def test_gradients_reach_the_queries_only() -> None:
    query = torch.randn(2, 3, 2, 2, requires_grad=True)
    key = torch.randn(2, 3, 2, 2, requires_grad=True)
    dense_contrastive_loss(query, key, dense_correspondence(query, key), torch.randn(4, 3), 0.2).backward()
    assert query.grad is not None and query.grad.abs().sum() > 0 and key.grad is None
