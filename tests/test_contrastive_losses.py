"""The field's contrastive losses against their formulas written out per sample, and on inputs with known answers."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from invprop.core.contrastive_losses import (
    full_graph_loss,
    info_nce_queue_loss,
    invariant_spreading_loss,
    log_nce_normaliser,
    log_one_minus_exp,
    nearest_neighbours,
    nnclr_loss,
    nt_xent_loss,
    pirl_nce_loss,
)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a.double() @ b.double() / (a.double().norm() * b.double().norm()))


def nt_xent_oracle(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> float:
    """SimCLR, Eq. 1, one anchor at a time over the 2B embeddings."""
    z = torch.cat([z1, z2])
    n = z1.shape[0]
    total = 0.0
    for i in range(2 * n):
        j = i + n if i < n else i - n
        denominator = sum(math.exp(_cos(z[i], z[k]) / tau) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(_cos(z[i], z[j]) / tau) / denominator)
    return total / (2 * n)


def info_nce_oracle(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, tau: float) -> float:
    total = 0.0
    for b in range(q.shape[0]):
        positive = math.exp(_cos(q[b], k[b]) / tau)
        negatives = sum(math.exp(_cos(q[b], row) / tau) for row in queue)
        total += -math.log(positive / (positive + negatives))
    return total / q.shape[0]


def nnclr_oracle(support: torch.Tensor, z: torch.Tensor, p: torch.Tensor, tau: float) -> float:
    total = 0.0
    for i in range(z.shape[0]):
        best = max(range(support.shape[0]), key=lambda r: _cos(z[i], support[r]))
        nn_i = support[best]
        denominator = sum(math.exp(_cos(nn_i, p[k]) / tau) for k in range(p.shape[0]))
        total += -math.log(math.exp(_cos(nn_i, p[i]) / tau) / denominator)
    return total / z.shape[0]


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_nt_xent_matches_the_per_anchor_formula(tau: float) -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g) * 3
    assert float(nt_xent_loss(z1, z2, tau)) == pytest.approx(nt_xent_oracle(z1, z2, tau), rel=1e-5)


def test_nt_xent_known_answers() -> None:
    # Identical views of orthogonal images: each anchor's positive has similarity 1, its 2B - 2 negatives 0.
    z = torch.eye(4)
    tau = 0.5
    expected = -math.log(math.exp(2) / (math.exp(2) + 6))
    assert float(nt_xent_loss(z, z, tau)) == pytest.approx(expected, rel=1e-6)
    # Collapsed embeddings: all 2B - 1 candidates equally similar, the loss is log(2B - 1).
    same = torch.ones(4, 3)
    assert float(nt_xent_loss(same, same, 0.2)) == pytest.approx(math.log(7), rel=1e-6)
    # Scale does not matter (cosine similarities).
    z1, z2 = torch.randn(3, 4), torch.randn(3, 4)
    assert torch.allclose(nt_xent_loss(z1, z2, 0.2), nt_xent_loss(10 * z1, 0.1 * z2, 0.2))


def test_info_nce_with_a_queue_matches_the_formula_and_handles_an_empty_queue() -> None:
    g = torch.Generator().manual_seed(1)
    q, k, queue = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g), torch.randn(9, 6, generator=g)
    assert float(info_nce_queue_loss(q, k, queue, 0.2)) == pytest.approx(info_nce_oracle(q, k, queue, 0.2), rel=1e-5)
    assert float(info_nce_queue_loss(q, k, queue[:0], 0.2)) == pytest.approx(0.0, abs=1e-6)  # nothing to contrast
    # A key equal to the query and negatives orthogonal to it: -log(e^{1/tau} / (e^{1/tau} + K)).
    e = torch.eye(4)
    expected = -math.log(math.exp(5) / (math.exp(5) + 3))
    assert float(info_nce_queue_loss(e[:1], e[:1], e[1:], 0.2)) == pytest.approx(expected, rel=1e-6)


def test_info_nce_takes_no_gradient_through_keys_or_queue() -> None:
    q = torch.randn(3, 4, requires_grad=True)
    k = torch.randn(3, 4, requires_grad=True)
    queue = torch.randn(5, 4, requires_grad=True)
    info_nce_queue_loss(q, k, queue, 0.2).backward()
    assert q.grad is not None and k.grad is None and queue.grad is None


def test_nnclr_matches_the_formula_with_the_neighbour_as_positive() -> None:
    g = torch.Generator().manual_seed(2)
    support, z, p = torch.randn(8, 5, generator=g), torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    neighbours = nearest_neighbours(z, support)
    expected = nnclr_oracle(support, z, p, 0.1)
    assert float(nnclr_loss(neighbours, p, 0.1)) == pytest.approx(expected, rel=1e-5)
    # The neighbour of a support row is that row.
    assert torch.allclose(nearest_neighbours(support[[3, 5]] * 2, support), F.normalize(support[[3, 5]], dim=1))
    p.requires_grad_(True)
    nnclr_loss(neighbours, p, 0.1).backward()
    assert p.grad is not None


def pirl_nce_oracle(memory, x, negatives, tau: float, log_z: float, n: int) -> float:  # type: ignore[no-untyped-def]
    """PIRL Eq. 3-4 with Wu et al.'s normalised probability, one sample and one negative at a time."""
    m = negatives.shape[0]
    noise = m / n
    total = 0.0
    for b in range(x.shape[0]):
        p = math.exp(_cos(x[b], memory[b]) / tau - log_z)
        loss = -math.log(p / (p + noise))
        for row in negatives:
            q = math.exp(_cos(x[b], row) / tau - log_z)
            loss -= math.log(1 - q / (q + noise))
        total += loss
    return total / x.shape[0]


def test_pirl_nce_matches_the_formula_per_sample() -> None:
    g = torch.Generator().manual_seed(3)
    memory, x, negatives = (
        torch.randn(3, 5, generator=g),
        torch.randn(3, 5, generator=g),
        torch.randn(7, 5, generator=g),
    )
    tau, n = 0.5, 50
    sims = F.normalize(x, dim=1) @ F.normalize(negatives, dim=1).T
    log_z = log_nce_normaliser(sims, tau, n)
    expected_log_z = math.log(n * sum(math.exp(float(s) / tau) for s in sims.flatten()) / sims.numel())
    assert float(log_z) == pytest.approx(expected_log_z, rel=1e-6)
    expected = pirl_nce_oracle(memory, x, negatives, tau, float(log_z), n)
    assert float(pirl_nce_loss(memory, x, negatives, tau, log_z, n)) == pytest.approx(expected, rel=1e-5)
    # The positive close and the negatives far gives a lower loss than the reverse.
    e = torch.eye(4)
    close = pirl_nce_loss(e[:1], e[:1], e[1:], 0.2, torch.tensor(0.0), 100)
    far = pirl_nce_loss(e[1:2], e[:1], e[:1].repeat(3, 1), 0.2, torch.tensor(0.0), 100)
    assert float(close) < float(far)


def invariant_spreading_oracle(z1: torch.Tensor, z2: torch.Tensor, tau: float, m: float) -> float:
    """Ye et al. (2019), J per anchor: each of the 2B embeddings classified among the other 2B - 1, the negatives
    weighted by m in the denominator as the authors' BatchCriterion does."""
    z = torch.cat([z1, z2])
    n = z1.shape[0]
    total = 0.0
    for a in range(2 * n):
        pos = a + n if a < n else a - n
        negatives = [k for k in range(2 * n) if k not in (a, pos)]
        e_pos = math.exp(_cos(z[a], z[pos]) / tau)
        denominator = e_pos + m * sum(math.exp(_cos(z[a], z[k]) / tau) for k in negatives)
        loss = -math.log(e_pos / denominator)
        for j in negatives:
            loss -= m * math.log(1 - math.exp(_cos(z[a], z[j]) / tau) / denominator)
        total += loss
    return total / (2 * n)


@pytest.mark.parametrize(("tau", "m"), [(0.1, 1.0), (0.5, 1.0), (0.2, 1.5), (0.2, 2.0)])
def test_invariant_spreading_matches_the_per_anchor_formula(tau: float, m: float) -> None:
    g = torch.Generator().manual_seed(5)
    z1, z2 = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    expected = invariant_spreading_oracle(z1, z2, tau, m)
    assert float(invariant_spreading_loss(z1, z2, tau, m)) == pytest.approx(expected, rel=1e-5)


def test_invariant_spreading_known_answers() -> None:
    # Two images, each view equal to its pair and orthogonal to the other image: for an anchor, the positive has
    # similarity 1 and the two negatives 0, so P(pos) = e^(1/tau) / (e^(1/tau) + 2) and P(neg) = 1 / (e^(1/tau) + 2).
    tau = 0.5
    e = torch.eye(2)
    denominator = math.exp(1 / tau) + 2
    expected = -math.log(math.exp(1 / tau) / denominator) - 2 * math.log(1 - 1 / denominator)
    assert float(invariant_spreading_loss(e, e, tau)) == pytest.approx(expected, rel=1e-6)
    # m = 2 weighs the two negatives twice in the denominator and in the spreading term; scale does not matter.
    weighted = math.exp(1 / tau) + 2 * 2
    expected = -math.log(math.exp(1 / tau) / weighted) - 2 * 2 * math.log(1 - 1 / weighted)
    assert float(invariant_spreading_loss(e, 3 * e, tau, 2.0)) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="negative_weight"):
        invariant_spreading_loss(e, e, tau, 0.5)  # a P(j | a) above 1: the authors' other branch


def test_invariant_spreading_gradient_flows_through_the_anchors_only() -> None:
    # The other embeddings are the classifier's weights, constants (the authors' feat.data): the gradient of the
    # loss at z equals that of the same loss with the keys replaced by detached copies.
    g = torch.Generator().manual_seed(6)
    z1 = torch.randn(3, 4, generator=g, requires_grad=True)
    z2 = torch.randn(3, 4, generator=g, requires_grad=True)
    invariant_spreading_loss(z1, z2, 0.2).backward()
    assert z1.grad is not None and z2.grad is not None
    q1, q2 = z1.detach().clone().requires_grad_(), z2.detach().clone().requires_grad_()
    keys = F.normalize(torch.cat([z1, z2]).detach(), dim=1)
    queries = F.normalize(torch.cat([q1, q2]), dim=1)
    logits = (queries @ keys.T / 0.2).masked_fill(torch.eye(6, dtype=torch.bool), float("-inf"))
    log_p = logits.log_softmax(dim=1)
    partner = torch.tensor([3, 4, 5, 0, 1, 2])
    mask = ~torch.eye(6, dtype=torch.bool)
    mask[torch.arange(6), partner] = False
    loss = (-log_p[torch.arange(6), partner] - torch.log1p(-log_p.exp()[mask].view(6, 4)).sum(dim=1)).mean()
    loss.backward()
    assert torch.allclose(z1.grad, q1.grad, atol=1e-6) and torch.allclose(z2.grad, q2.grad, atol=1e-6)


def test_invariant_spreading_stays_finite_when_a_negative_takes_all_the_mass() -> None:
    # An anchor identical to a negative and opposite to its positive, at a low temperature: P(neg) rounds to 1.
    z1 = torch.tensor([[1.0, 0.0], [1.0, 0.0]], requires_grad=True)
    z2 = torch.tensor([[-1.0, 0.0], [-1.0, 0.0]], requires_grad=True)
    loss = invariant_spreading_loss(z1, z2, 0.01)
    loss.backward()
    assert torch.isfinite(loss) and z1.grad is not None and torch.isfinite(z1.grad).all()


@pytest.mark.parametrize("x", [-1e-8, -1e-3, -0.5, -math.log(2.0), -3.0, -40.0])
def test_log_one_minus_exp_matches_the_formula(x: float) -> None:
    expected = math.log(-math.expm1(x))
    assert float(log_one_minus_exp(torch.tensor(x, dtype=torch.float64))) == pytest.approx(expected, rel=1e-9)


def test_invariant_spreading_is_computed_in_float32_under_autocast() -> None:
    g = torch.Generator().manual_seed(7)
    z1, z2 = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    exact = invariant_spreading_loss(z1, z2, 0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = invariant_spreading_loss(z1, z2, 0.1)
    assert mixed.dtype == torch.float32 and float(mixed) == pytest.approx(float(exact), rel=1e-6)


def _softmax_pair(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, tau: float) -> float:
    """One anchor's softmax loss, written out with Python floats."""
    a = anchor / anchor.norm()
    p = positive / positive.norm()
    scores = [float(a @ p) / tau] + [float(a @ (n / n.norm())) / tau for n in negatives]
    return -scores[0] + math.log(sum(math.exp(s) for s in scores))


def test_cmcs_objective_sums_both_directions_of_two_views_per_sample() -> None:
    g = torch.Generator().manual_seed(3)
    views = [torch.randn(4, 5, generator=g) for _ in range(2)]
    memories = [torch.randn(4, 5, generator=g) for _ in range(2)]
    negatives = [torch.randn(6, 5, generator=g) for _ in range(2)]
    got = full_graph_loss(views, memories, negatives, partial(info_nce_queue_loss, temperature=0.1))
    expected = 0.0
    for i, j in ((0, 1), (1, 0)):  # view i anchored against view j's memory
        expected += sum(_softmax_pair(views[i][b], memories[j][b], negatives[j], 0.1) for b in range(4)) / 4
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_cmcs_full_graph_takes_every_ordered_pair_and_refuses_one_view() -> None:
    pairs: list[tuple[int, int]] = []
    views = [torch.full((1, 1), float(v)) for v in range(3)]

    def record(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        pairs.append((int(anchor), int(positive)))
        return anchor.sum() * 0 + 1

    assert float(full_graph_loss(views, views, views, record)) == 6.0
    assert sorted(pairs) == [(i, j) for i in range(3) for j in range(3) if i != j]
    with pytest.raises(ValueError, match="two or more views"):
        full_graph_loss(views[:1], views[:1], views[:1], record)
