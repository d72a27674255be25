"""Deep InfoMax's critic and estimators against their formulas written out per image and location, and on known
answers (a critic at chance, a perfect critic)."""

from __future__ import annotations

import math

import pytest
import torch

from invprop.core.mutual_information import jsd_mutual_information, local_global_scores, local_infonce_loss


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_every_global_vector_is_scored_against_every_location_of_every_image() -> None:
    torch.manual_seed(0)
    g, local = torch.randn(3, 4), torch.randn(3, 4, 2, 3)
    scores = local_global_scores(g, local)
    assert scores.shape == (3, 3, 6)
    for i in range(3):
        for j in range(3):
            for s in range(6):
                expected = sum(float(g[i, u]) * float(local[j, u, s // 3, s % 3]) for u in range(4))
                assert float(scores[i, j, s]) == pytest.approx(expected, abs=1e-5)


def test_the_jsd_estimate_is_its_formula_written_out() -> None:
    torch.manual_seed(1)
    scores = torch.randn(3, 3, 2) * 2
    positive = [float(scores[i, i, s]) for i in range(3) for s in range(2)]
    negative = [float(scores[i, j, s]) for i in range(3) for j in range(3) if j != i for s in range(2)]
    expected = sum(math.log(2) - _softplus(-t) for t in positive) / len(positive) - sum(
        _softplus(t) - math.log(2) for t in negative
    ) / len(negative)
    assert float(jsd_mutual_information(scores)) == pytest.approx(expected, rel=1e-5)


def test_the_jsd_estimate_is_zero_at_chance_and_reaches_2_log_2_for_a_perfect_critic() -> None:
    assert float(jsd_mutual_information(torch.zeros(4, 4, 3))) == 0.0
    perfect = (torch.eye(4) * 2 - 1).unsqueeze(2).expand(4, 4, 3) * 50  # +50 on positives, -50 on negatives
    assert float(jsd_mutual_information(perfect)) == pytest.approx(2 * math.log(2), abs=1e-6)


def test_infonce_contrasts_each_location_with_every_location_of_the_other_images() -> None:
    torch.manual_seed(2)
    b, s = 3, 2
    scores = torch.randn(b, b, s)
    total = 0.0
    for i in range(b):
        for loc in range(s):
            positive = math.exp(float(scores[i, i, loc]))
            negatives = sum(math.exp(float(scores[i, j, t])) for j in range(b) if j != i for t in range(s))
            total += -math.log(positive / (positive + negatives))
    assert float(local_infonce_loss(scores)) == pytest.approx(total / (b * s), rel=1e-5)
    assert float(local_infonce_loss(torch.zeros(2, 2, 3))) == pytest.approx(math.log(4))  # 1 positive, 3 negatives


def test_amdim_nce_is_soft_clipped_infonce_of_scaled_scores_plus_the_squared_score_penalty() -> None:
    from invprop.core.mutual_information import amdim_nce_loss, soft_clip

    torch.manual_seed(3)
    b, u, side, clip, penalty = 3, 4, 2, 1.5, 0.05
    sources, targets = torch.randn(b, u) * 3, torch.randn(b, u, side, side) * 3
    raw = [[[float(sources[i] @ targets[j, :, s // side, s % side]) / math.sqrt(u) for s in range(side * side)]
            for j in range(b)] for i in range(b)]  # fmt: skip
    clipped = [[[clip * math.tanh(v / clip) for v in row] for row in block] for block in raw]
    total = 0.0
    for i in range(b):
        for s in range(side * side):
            negatives = sum(math.exp(v) for j in range(b) if j != i for v in clipped[i][j])
            total += -math.log(math.exp(clipped[i][i][s]) / (math.exp(clipped[i][i][s]) + negatives))
    squares = [v * v for block in raw for row in block for v in row]
    expected = total / (b * side * side) + penalty * sum(squares) / len(squares)
    assert float(amdim_nce_loss(sources, targets, clip, penalty)) == pytest.approx(expected, rel=1e-5)
    assert float(soft_clip(torch.tensor(1e6), clip)) == pytest.approx(clip)


def test_a_random_location_is_one_of_each_maps_own() -> None:
    from invprop.methods.infomax.amdim import random_location

    torch.manual_seed(4)
    maps = torch.randn(5, 3, 2, 3)
    picked = random_location(maps)
    for b in range(5):
        assert any(torch.equal(picked[b], maps[b, :, y, x]) for y in range(2) for x in range(3))


def test_infonce_stays_finite_and_exact_on_scores_far_beyond_exps_range() -> None:
    torch.manual_seed(4)
    scores = torch.randn(4, 4, 5, dtype=torch.float64) * 500
    b, s = 4, 5
    expected = 0.0
    for i in range(b):
        negatives = torch.cat([scores[i, j] for j in range(b) if j != i])
        for k in range(s):
            expected -= float(scores[i, i, k] - torch.logsumexp(torch.cat([scores[i, i, k : k + 1], negatives]), 0))
    loss = local_infonce_loss(scores.float())
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert float(loss) == pytest.approx(expected / (b * s), rel=1e-4)
