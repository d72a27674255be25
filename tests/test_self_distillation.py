"""DINO's and iBOT's equations against their formulas written out per sample, per token and per pair of views, and on
known answers."""

from __future__ import annotations

import math

import pytest
import torch

from invprop.core.self_distillation import (
    balanced_teacher_distribution,
    dino_loss,
    koleo_loss,
    masked_token_loss,
    next_center,
    teacher_distribution,
    teacher_temperature,
)


def _softmax(row: list[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(x - top) for x in row]
    return [e / sum(exps) for e in exps]


@pytest.mark.parametrize("tau", [0.04, 0.07, 1.0])
def test_the_teacher_distribution_is_the_centred_sharpened_softmax_of_each_row(tau: float) -> None:
    torch.manual_seed(0)
    logits, center = torch.randn(3, 5), torch.randn(5)
    probs = teacher_distribution(logits.clone().requires_grad_(), center, tau)
    assert not probs.requires_grad
    for i in range(3):
        expected = _softmax([(float(logits[i, k]) - float(center[k])) / tau for k in range(5)])
        assert probs[i].tolist() == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_the_loss_is_the_mean_cross_entropy_over_every_pair_of_a_teacher_view_and_another_student_view() -> None:
    torch.manual_seed(1)
    b, k, tau_s = 4, 6, 0.1
    student = [torch.randn(b, k) for _ in range(5)]  # 2 global views, then 3 small crops
    teacher = [torch.softmax(torch.randn(b, k) / 0.04, dim=1) for _ in range(2)]
    total, pairs = 0.0, 0
    for t in range(2):
        for v in range(5):
            if v == t:
                continue
            per_sample = []
            for i in range(b):
                q = _softmax([float(x) / tau_s for x in student[v][i]])
                per_sample.append(-sum(float(teacher[t][i, j]) * math.log(q[j]) for j in range(k)))
            total += sum(per_sample) / b
            pairs += 1
    assert pairs == 8
    assert float(dino_loss(student, teacher, tau_s)) == pytest.approx(total / pairs, rel=1e-5)


def test_a_student_equal_to_a_one_hot_teacher_has_a_loss_near_zero_and_a_wrong_one_a_large_loss() -> None:
    one_hot = torch.eye(4)
    right = [one_hot * 100.0, one_hot * 100.0]
    wrong = [one_hot.roll(1, dims=1) * 100.0, one_hot.roll(1, dims=1) * 100.0]
    assert float(dino_loss(right, [one_hot, one_hot], 1.0)) < 1e-6
    assert float(dino_loss(wrong, [one_hot, one_hot], 1.0)) == pytest.approx(100.0, rel=1e-4)


def test_scores_far_from_zero_give_a_finite_loss_in_half_precision() -> None:
    student = [torch.full((2, 3), 6e4, dtype=torch.float16), torch.tensor([[6e4, -6e4, 0.0]] * 2, dtype=torch.float16)]
    teacher = [torch.tensor([[0.0, 1.0, 0.0]] * 2)]
    assert torch.isfinite(dino_loss(student, teacher, 0.1))


def test_one_view_alone_is_refused() -> None:
    with pytest.raises(ValueError, match="two views"):
        dino_loss([torch.zeros(2, 3)], [torch.zeros(2, 3)], 0.1)
    with pytest.raises(ValueError, match="teacher views"):
        dino_loss([torch.zeros(2, 3)], [torch.zeros(2, 3), torch.zeros(2, 3)], 0.1)


def test_the_centre_moves_towards_the_batch_mean_by_one_minus_the_momentum() -> None:
    center, mean = torch.tensor([1.0, -1.0]), torch.tensor([3.0, 1.0])
    assert next_center(center, mean, 0.9).tolist() == pytest.approx([1.2, -0.8])
    assert next_center(center, mean, 0.0).tolist() == pytest.approx([3.0, 1.0])


@pytest.mark.parametrize(
    ("epoch", "warmup", "expected"),
    [(1, 0, 0.07), (1, 1, 0.04), (2, 1, 0.07), (1, 30, 0.04), (30, 30, 0.07), (16, 31, 0.055), (100, 30, 0.07)],
)
def test_the_teacher_temperature_warms_up_linearly_per_epoch_as_numpy_linspace_does(
    epoch: int, warmup: int, expected: float
) -> None:
    assert teacher_temperature(epoch, warmup, 0.04, 0.07) == pytest.approx(expected)


def test_the_masked_token_loss_averages_each_images_hidden_tokens_then_the_images() -> None:
    torch.manual_seed(2)
    b, n, k, tau_s = 3, 5, 4, 0.1
    student = torch.randn(b, n, k)
    teacher = torch.softmax(torch.randn(b, n, k) / 0.07, dim=-1)
    hidden = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 0, 0, 0], [0, 1, 0, 0, 0]], dtype=torch.bool)
    per_image = []
    for i in range(b):
        tokens = [j for j in range(n) if hidden[i, j]]
        terms = []
        for j in tokens:
            log_p = [math.log(p) for p in _softmax([float(x) / tau_s for x in student[i, j]])]
            terms.append(-sum(float(teacher[i, j, c]) * log_p[c] for c in range(k)))
        per_image.append(sum(terms) / len(tokens) if tokens else 0.0)  # an image with nothing hidden counts as 0
    expected = sum(per_image) / b
    assert float(masked_token_loss(student, teacher, hidden, tau_s)) == pytest.approx(expected, rel=1e-5)


def test_the_masked_token_loss_ignores_the_visible_tokens_and_is_the_entropy_at_a_perfect_student() -> None:
    torch.manual_seed(3)
    teacher = torch.softmax(torch.randn(2, 4, 6), dim=-1)
    hidden = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 1]], dtype=torch.bool)
    student = teacher.log() * 0.1  # softmax(student / 0.1) == teacher
    noisy = student.clone()
    noisy[~hidden] += torch.randn(4, 6)  # changing visible tokens changes nothing
    entropy = -(teacher * teacher.log()).sum(dim=-1)
    expected = ((entropy * hidden).sum(dim=1) / 2).mean()
    assert float(masked_token_loss(student, teacher, hidden, 0.1)) == pytest.approx(float(expected), rel=1e-5)
    assert float(masked_token_loss(noisy, teacher, hidden, 0.1)) == pytest.approx(float(expected), rel=1e-5)


def test_the_masked_token_loss_refuses_shapes_that_do_not_match() -> None:
    with pytest.raises(ValueError, match="must be"):
        masked_token_loss(torch.randn(2, 4, 3), torch.rand(2, 4, 3), torch.zeros(2, 5, dtype=torch.bool), 0.1)


def test_the_koleo_term_is_minus_the_mean_log_distance_to_each_rows_nearest_other_row() -> None:
    torch.manual_seed(4)
    x = torch.randn(6, 3) * 2
    unit = [[float(v) / math.sqrt(sum(float(w) ** 2 for w in row)) for v in row] for row in x]
    expected = 0.0
    for i in range(6):
        nearest = min(math.dist(unit[i], unit[j]) for j in range(6) if j != i)
        expected -= math.log(nearest + 1e-8)
    assert float(koleo_loss(x)) == pytest.approx(expected / 6, rel=1e-5)
    with pytest.raises(ValueError, match="two rows"):
        koleo_loss(x[:1])


def test_the_balanced_teacher_is_dinov2s_sinkhorn_on_the_exponentiated_outputs() -> None:
    torch.manual_seed(5)
    b, k, tau = 4, 3, 0.5
    logits = torch.randn(b, k)
    q = [[math.exp(float(logits[i, j]) / tau) for i in range(b)] for j in range(k)]  # K x B
    total = sum(map(sum, q))
    q = [[v / total for v in row] for row in q]
    for _ in range(3):  # the authors' sinkhorn_knopp_teacher: rows (outputs) / sum / K, columns / sum / B
        q = [[v / sum(row) / k for v in row] for row in q]
        columns = [sum(q[j][i] for j in range(k)) for i in range(b)]
        q = [[q[j][i] / columns[i] / b for i in range(b)] for j in range(k)]
    ours = balanced_teacher_distribution(logits, torch.zeros(k), tau)
    for i in range(b):
        assert ours[i].tolist() == pytest.approx([q[j][i] * b for j in range(k)], rel=1e-5)


def test_the_koleo_term_keeps_near_duplicates_apart_in_a_batch_past_cdists_shortcut() -> None:
    torch.manual_seed(6)
    x = torch.randn(64, 8)
    x[1] = x[0] + 1e-4 * torch.randn(8)  # a near-duplicate pair, 64 rows (cdist's matrix shortcut starts past 25)
    x.requires_grad_(True)
    loss = koleo_loss(x)
    unit = torch.nn.functional.normalize(x.detach().double(), dim=1)
    nearest = [min(float((unit[i] - unit[j]).norm()) for j in range(64) if j != i) for i in range(64)]
    assert nearest[0] > 0
    assert float(loss) == pytest.approx(-sum(math.log(d + 1e-8) for d in nearest) / 64, rel=1e-3)
    loss.backward()
    assert float(x.grad[0].norm()) > 1.0 and float(x.grad[1].norm()) > 1.0
