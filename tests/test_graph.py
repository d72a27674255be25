from __future__ import annotations

import pytest
import torch

from conftest import random_graph
from invprop.core.graph import knn_graph, online_neighbors, outside_sets, propagate


def bfs(table: torch.Tensor, anchor: int, steps: int) -> set[int]:
    """Plain breadth-first search: nodes at graph distance 1..steps, anchor excluded."""
    seen, frontier, found = {anchor}, [anchor], set()
    for _ in range(steps):
        nxt = []
        for node in frontier:
            for nb in table[node].tolist():
                if nb >= 0 and nb not in seen:
                    seen.add(nb)
                    found.add(nb)
                    nxt.append(nb)
        frontier = nxt
    return found


def concatenation(table: torch.Tensor, anchor: int, steps: int) -> list[int]:
    """The authors' definition: hop lists concatenated, each node's neighbours in table order, duplicates kept."""
    hop = table[anchor].tolist()
    out = list(hop)
    for _ in range(steps - 1):
        hop = [nb for node in hop for nb in table[node].tolist()]
        out += hop
    return out


@pytest.mark.parametrize(
    "n,k,steps,invalid", [(30, 3, 3, 0.0), (200, 4, 3, 0.0), (50, 2, 5, 0.0), (60, 4, 2, 0.2), (10, 9, 2, 0.0)]
)
def test_exact_propagation_matches_bfs(n: int, k: int, steps: int, invalid: float) -> None:
    g = torch.Generator().manual_seed(n * 10 + k)
    table = random_graph(n, k, g, invalid)
    anchors = torch.randint(0, n, (16,), generator=g)
    positives, mask = propagate(table, anchors, steps, exact=True)
    assert positives.shape == mask.shape
    for row, anchor in enumerate(anchors.tolist()):
        got = positives[row][mask[row]].tolist()
        assert len(got) == len(set(got)), "positives must be de-duplicated"
        assert set(got) == bfs(table, anchor, steps)
        assert anchor not in got
        assert (positives[row][~mask[row]] == -1).all()


def test_exact_propagation_one_step_is_the_neighbour_set() -> None:
    table = random_graph(40, 4, torch.Generator().manual_seed(1))
    anchors = torch.arange(40)
    positives, mask = propagate(table, anchors, 1)
    for i in range(40):
        assert set(positives[i][mask[i]].tolist()) == set(table[i].tolist())


def test_concatenation_matches_definition() -> None:
    g = torch.Generator().manual_seed(3)
    table = random_graph(25, 4, g)
    anchors = torch.tensor([0, 7, 24])
    positives, mask = propagate(table, anchors, 3, exact=False)
    assert positives.shape == (3, 4 + 16 + 64)
    assert mask.all()
    for row, anchor in enumerate(anchors.tolist()):
        assert positives[row].tolist() == concatenation(table, anchor, 3)


def test_concatenation_never_follows_unknown_entries() -> None:
    table = torch.tensor([[1, -1], [2, 0], [0, 1]])
    positives, mask = propagate(table, torch.tensor([0]), 2, exact=False)
    # hop 1: [1, -1]; hop 2: neighbours of 1 = [2, 0], of -1 = nothing
    assert positives[0].tolist() == [1, -1, 2, 0, -1, -1]
    assert mask[0].tolist() == [True, False, True, True, False, False]


def test_propagation_rejects_zero_steps() -> None:
    with pytest.raises(ValueError, match="steps"):
        propagate(torch.zeros(3, 1, dtype=torch.long), torch.tensor([0]), 0)


def test_knn_graph_matches_brute_force_and_is_chunk_independent() -> None:
    feats = torch.nn.functional.normalize(torch.randn(97, 8), dim=1)
    sims = feats @ feats.T
    sims.fill_diagonal_(-2)
    expected = sims.topk(5, dim=1).indices
    assert torch.equal(knn_graph(feats, 5, chunk_size=10), expected)
    assert torch.equal(knn_graph(feats, 5, chunk_size=1000), expected)
    assert not (knn_graph(feats, 5) == torch.arange(97)[:, None]).any()


def test_online_neighbors_skips_the_anchor() -> None:
    candidates = torch.tensor([[5, 3, 9, 1, 2], [0, 1, 2, 3, 4], [4, 3, 2, 1, 8]])
    anchors = torch.tensor([3, 9, 8])
    out = online_neighbors(candidates, anchors, 4)
    assert out.tolist() == [[5, 2, 9, 1], [0, 1, 2, 3], [4, 3, 2, 1]]
    with pytest.raises(ValueError, match="candidates"):
        online_neighbors(candidates[:, :4], anchors, 4)


def test_outside_sets_matches_python_membership() -> None:
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(0, 30, (5, 12), generator=g)
    members = torch.randint(-1, 30, (5, 7), generator=g)
    expected = [[int(r) not in set(m.tolist()) for r in row] for row, m in zip(rows, members)]
    assert outside_sets(rows, members).tolist() == expected
    shared = torch.arange(30).unsqueeze(0)  # one row of candidates for every anchor
    assert outside_sets(shared, members).sum(dim=1).tolist() == [30 - len(set(m.tolist()) - {-1}) for m in members]
    assert outside_sets(rows, members[:, :0]).all()
