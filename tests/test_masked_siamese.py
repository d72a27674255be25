"""MSN's equations against the authors' formulas written out in the probability domain, per sample and per
prototype: the sharpened, Sinkhorn-balanced targets, the anchors' cross-entropy, and the mean-entropy term on known
answers."""

from __future__ import annotations

import math

import pytest
import torch

from invprop.core.masked_siamese import mean_entropy_penalty, msn_cross_entropy, msn_targets, prototype_scores


def _softmax(row: list[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(x - top) for x in row]
    return [e / sum(exps) for e in exps]


def _msn_targets_by_hand(scores: torch.Tensor, tau: float, t: float, iterations: int) -> list[list[float]]:
    """softmax(s / tau), each row to the power 1/T and renormalised, then the authors' Sinkhorn on Q = P^T: divide by
    the total; per round, each prototype's row by its sum and by K, each sample's column by its sum and by B; times
    B."""
    b, k = scores.shape
    probs = []
    for i in range(b):
        p = _softmax([float(x) / tau for x in scores[i]])
        powered = [v ** (1 / t) for v in p]
        probs.append([v / sum(powered) for v in powered])
    q = [[probs[i][j] for i in range(b)] for j in range(k)]  # K x B
    total = sum(sum(row) for row in q)
    q = [[v / total for v in row] for row in q]
    for _ in range(iterations):
        q = [[v / sum(row) / k for v in row] for row in q]
        columns = [sum(q[j][i] for j in range(k)) for i in range(b)]
        q = [[q[j][i] / columns[i] / b for i in range(b)] for j in range(k)]
    return [[q[j][i] * b for j in range(k)] for i in range(b)]


@pytest.mark.parametrize("iterations", [0, 1, 3])
def test_the_targets_are_the_sharpened_assignments_balanced_by_the_authors_sinkhorn(iterations: int) -> None:
    torch.manual_seed(0)
    scores = torch.randn(5, 4) * 0.3
    ours = msn_targets(scores, 0.1, 0.25, iterations)
    expected = _msn_targets_by_hand(scores, 0.1, 0.25, iterations)
    for i in range(5):
        assert ours[i].tolist() == pytest.approx(expected[i], rel=1e-4, abs=1e-7)
    assert torch.allclose(ours.sum(dim=1), torch.ones(5), atol=1e-5)


def test_the_cross_entropy_is_the_mean_over_anchors_of_the_target_against_the_anchors_softmax() -> None:
    torch.manual_seed(1)
    anchors, tau = torch.randn(6, 4), 0.1
    targets = torch.softmax(torch.randn(6, 4), dim=1)
    expected = 0.0
    for a in range(6):
        log_p = [math.log(p) for p in _softmax([float(x) / tau for x in anchors[a]])]
        expected -= sum(float(targets[a, k]) * log_p[k] for k in range(4))
    assert float(msn_cross_entropy(anchors, targets, tau)) == pytest.approx(expected / 6, rel=1e-5)


def test_the_mean_entropy_term_is_zero_when_every_prototype_is_used_equally_and_log_k_for_one() -> None:
    assert float(mean_entropy_penalty(torch.full((8,), 1 / 8))) == pytest.approx(0.0, abs=1e-6)
    assert float(mean_entropy_penalty(torch.eye(8)[2])) == pytest.approx(math.log(8), rel=1e-6)
    p = torch.tensor([0.5, 0.25, 0.25])
    assert float(mean_entropy_penalty(p)) == pytest.approx(math.log(3) - (-sum(v * math.log(v) for v in p.tolist())))


def test_prototype_scores_are_cosine_similarities() -> None:
    z, q = torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 0.0], [0.0, -2.0]])
    assert prototype_scores(z, q)[0].tolist() == pytest.approx([0.6, -0.8])


def test_anchors_and_targets_of_other_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="must match"):
        msn_cross_entropy(torch.randn(4, 3), torch.rand(2, 3), 0.1)
