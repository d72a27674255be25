"""invprop.core.margin_losses against the formulas written out per pair and per anchor, and on known answers."""

from __future__ import annotations

import math

import pytest
import torch

from invprop.core.margin_losses import batch_hard_triplet_loss, drlim_loss, pairwise_distances


def drlim_oracle(z1: torch.Tensor, z2: torch.Tensor, margin: float) -> float:
    """Hadsell et al. (2006), Eq. 4, pair by pair: views of one image are neighbours (Y = 0)."""
    z = torch.cat([z1, z2]).double()
    n = z1.shape[0]
    image = [i % n for i in range(2 * n)]
    total, count = 0.0, 0
    for a in range(2 * n):
        for b in range(a + 1, 2 * n):
            d = math.sqrt(sum((float(x) - float(y)) ** 2 for x, y in zip(z[a], z[b])))
            total += 0.5 * d * d if image[a] == image[b] else 0.5 * max(0.0, margin - d) ** 2
            count += 1
    return total / count


@pytest.mark.parametrize("margin", [0.5, 1.0, 3.0])
def test_drlim_matches_the_per_pair_formula(margin: float) -> None:
    torch.manual_seed(0)
    z1, z2 = torch.randn(5, 3), torch.randn(5, 3)
    assert float(drlim_loss(z1, z2, margin)) == pytest.approx(drlim_oracle(z1, z2, margin), rel=1e-5)


def test_drlim_known_answers() -> None:
    # Two images, views identical, the images 2 apart: no pull, and no push beyond a margin of 1.
    z1 = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    assert float(drlim_loss(z1, z1.clone(), 1.0)) == 0.0
    # With a margin of 3 each of the 4 cross pairs costs 1/2 (3 - 2)^2 = 0.5; 6 pairs in all.
    assert float(drlim_loss(z1, z1.clone(), 3.0)) == pytest.approx(4 * 0.5 / 6)
    # Second views shifted up by 1: the two neighbour pairs cost 1/2 each; of the four others two sit 2 apart, two
    # sqrt 5.
    z2 = z1 + torch.tensor([0.0, 1.0])
    expected = (2 * 0.5 + 0.5 * max(0.0, 2.5 - 2.0) ** 2 * 2 + 0.5 * (2.5 - math.sqrt(5)) ** 2 * 2) / 6
    assert float(drlim_loss(z1, z2, 2.5)) == pytest.approx(expected, rel=1e-6)


def test_drlim_gradient_is_finite_when_embeddings_coincide() -> None:
    z1 = torch.zeros(4, 3, requires_grad=True)
    z2 = torch.zeros(4, 3, requires_grad=True)
    loss = drlim_loss(z1, z2, 1.0)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(0.5 * 24 / 28)  # 24 non-neighbour pairs at distance 0, of 28
    assert torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()


def test_drlim_pulls_neighbours_and_pushes_the_rest() -> None:
    z1 = torch.tensor([[0.0, 0.0], [0.5, 0.0]], requires_grad=True)
    z2 = torch.tensor([[0.0, 1.0], [0.5, 1.0]])
    drlim_loss(z1, z2, 1.0).backward()
    assert z1.grad[0, 1] < 0  # towards its other view, above it
    assert z1.grad[0, 0] > 0  # away from image 1's first view, to its right (gradient descent moves it left)


def test_drlim_is_computed_in_float32_under_autocast() -> None:
    torch.manual_seed(1)
    z1, z2 = torch.randn(6, 4), torch.randn(6, 4)
    exact = drlim_loss(z1, z2, 1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = drlim_loss(z1, z2, 1.0)
    assert mixed.dtype == torch.float32 and float(mixed) == pytest.approx(float(exact), rel=1e-6)


def test_pairwise_distances_match_the_definition() -> None:
    torch.manual_seed(2)
    z = torch.randn(5, 3)
    expected = torch.tensor([[float((a - b).norm()) for b in z] for a in z])
    torch.testing.assert_close(pairwise_distances(z), expected, rtol=1e-5, atol=1e-6)


def triplet_oracle(embeddings: torch.Tensor, groups: list[int]) -> float:
    """Batch-hard triplet loss with a soft margin, anchor by anchor on normalised rows."""
    e = torch.nn.functional.normalize(embeddings.double(), dim=1)
    losses = []
    for a in range(len(groups)):
        d = [float((e[a] - e[b]).norm()) for b in range(len(groups))]
        positive = max(d[b] for b in range(len(groups)) if groups[b] == groups[a])
        negative = min(d[b] for b in range(len(groups)) if groups[b] != groups[a])
        losses.append(math.log1p(math.exp(positive - negative)))
    return sum(losses) / len(losses)


def test_batch_hard_triplet_matches_the_per_anchor_formula() -> None:
    torch.manual_seed(3)
    groups = [0, 0, 0, 1, 1, 2, 2, 2]
    embeddings = torch.randn(8, 5) * 3
    loss = batch_hard_triplet_loss(embeddings, torch.tensor(groups))
    assert float(loss) == pytest.approx(triplet_oracle(embeddings, groups), rel=1e-5)


def test_batch_hard_triplet_known_answer() -> None:
    # Two images, their views at one point each, the points orthogonal: d(a, p) = 0, d(a, n) = sqrt 2.
    embeddings = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 5.0]])
    loss = batch_hard_triplet_loss(embeddings, torch.tensor([0, 0, 1, 1]))
    assert float(loss) == pytest.approx(math.log1p(math.exp(-math.sqrt(2))), rel=1e-6)
