from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from gloo import run_gloo
from invprop.core.graph import knn_graph, sharded_knn_graph
from invprop.distributed.partition import RowPartition, block_bounds, gather_partition
from invprop.distributed.rows import merge_topk, sharded_background_logits, sharded_row_logits, sharded_topk, to_global
from invprop.distributed.similarity import topk_similarities

WORLD = 2
N, D, B = 101, 8, 6  # an odd N: the blocks differ in size


def test_block_bounds_tile_the_rows() -> None:
    for total, parts in [(10, 3), (7, 7), (100, 4), (5, 2)]:
        blocks = [block_bounds(total, parts, i) for i in range(parts)]
        assert blocks[0][0] == 0 and blocks[-1][1] == total
        assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
        sizes = [stop - start for start, stop in blocks]
        assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError):
        block_bounds(10, 2, 2)


def test_whole_partition_is_the_local_computation() -> None:
    rows = F.normalize(torch.randn(N, D), dim=1)
    query = F.normalize(torch.randn(B, D), dim=1).requires_grad_(True)
    part = RowPartition.whole(N)
    assert not part.is_split and not part.parallel and part.rows == N
    values, indices = sharded_topk(query.detach(), rows, part, 5)
    expected = topk_similarities(query.detach(), rows, 5)
    assert torch.equal(indices, expected[1])
    columns = torch.randint(0, N, (B, 3))
    torch.testing.assert_close(sharded_row_logits(query, rows, part, columns), (query[:, None] * rows[columns]).sum(-1))
    assert torch.equal(sharded_knn_graph(rows, part, 4), knn_graph(rows, 4))
    assert torch.equal(gather_partition(rows, part), rows)
    with pytest.raises(ValueError, match="k must be"):
        sharded_topk(query.detach(), rows, part, N + 1)


def test_merge_topk_pads_short_candidate_lists() -> None:
    values, indices = merge_topk(torch.tensor([[0.5, 0.9]]), torch.tensor([[3, 7]]), 3)
    assert indices.tolist() == [[7, 3, -1]] and values[0, 2] == float("-inf")


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return F.normalize(torch.randn(N, D, generator=g), dim=1), F.normalize(torch.randn(B, D, generator=g), dim=1)


def _sharded_primitives(rank: int, world: int) -> dict[str, object]:
    rows, query = _data()
    part = RowPartition.split(N)
    local = rows[part.start : part.stop].clone()
    values, indices = sharded_topk(query, local, part, 10)
    columns = torch.tensor([[0, N - 1, 50, 51]] * B)
    q = query.clone().requires_grad_(True)
    logits = sharded_row_logits(q, local, part, columns)
    (logits * torch.arange(1.0, 5.0)).sum().div(world).backward()
    weights = local.clone().requires_grad_(True)  # a classifier's rows: differentiated too
    (sharded_row_logits(query, weights, part, columns) ** 2).sum().div(world).backward()
    replicated = RowPartition.replicated(N)
    return {
        "bounds": (part.start, part.stop),
        "values": values, "indices": indices, "logits": logits.detach(), "query_grad": q.grad,
        "weight_grad": weights.grad,
        "graph": sharded_knn_graph(local, part, 5, chunk_size=16),
        "replicated_graph": sharded_knn_graph(rows, replicated, 5, chunk_size=16),
        "whole": gather_partition(local, part, chunk_rows=7),
    }  # fmt: skip


def test_sharded_primitives_equal_the_unsharded_computation(tmp_path: Path) -> None:
    results = run_gloo(_sharded_primitives, WORLD, tmp_path)
    rows, query = _data()
    expected_values, expected_indices = topk_similarities(query, rows, 10)
    columns = torch.tensor([[0, N - 1, 50, 51]] * B)
    q = query.clone().requires_grad_(True)
    logits = (q[:, None] * rows[columns]).sum(-1)
    (logits * torch.arange(1.0, 5.0)).sum().backward()
    weights = rows.clone().requires_grad_(True)
    ((query[:, None] * weights[columns]).sum(-1) ** 2).sum().backward()
    graph = knn_graph(rows, 5)
    assert [r["bounds"] for r in results] == [(0, 51), (51, N)]
    for r, out in enumerate(results):
        assert torch.equal(out["indices"], expected_indices)
        torch.testing.assert_close(out["values"], expected_values)
        torch.testing.assert_close(out["logits"], logits.detach(), rtol=1e-5, atol=1e-6)
        start, stop = out["bounds"]
        torch.testing.assert_close(out["weight_grad"], weights.grad[start:stop], rtol=1e-5, atol=1e-6)
        assert torch.equal(out["graph"], graph)
        assert torch.equal(out["replicated_graph"], graph)
    # Each process's copy of the queries gets its rows' share of the gradient; the shares add up to the whole one
    # (callers gather their queries with all_gather_rows, whose backward does that sum).
    torch.testing.assert_close(sum(out["query_grad"] for out in results), q.grad, rtol=1e-5, atol=1e-6)
    assert torch.equal(results[0]["whole"], rows) and results[1]["whole"] is None


def test_empty_slots_of_an_approximate_search_stay_empty_when_made_global() -> None:

    part = RowPartition(100, 40, 70)
    assert to_global(torch.tensor([[0, 29, -1]]), part).tolist() == [[40, 69, -1]]


@pytest.mark.parametrize("dense", [True, False])
def test_background_of_a_whole_matrix_has_the_dense_values_and_gradients(dense: bool) -> None:
    keys = F.normalize(torch.randn(200, 8, dtype=torch.float64), dim=1)
    base = F.normalize(torch.randn(5, 8, dtype=torch.float64), dim=1)
    columns = torch.randint(0, 200, (5, 7))
    query = base.clone().requires_grad_()
    shard = sharded_background_logits(query, keys, RowPartition.whole(200), 30, columns, dense)
    assert shard.members is None and torch.equal(shard.rows, shard.background)  # one part: nothing to mask
    (shard.logits.exp().sum() + (2 * shard.column_logits).sum()).backward()
    reference = base.clone().requires_grad_()
    sims = reference @ keys.T
    expected, expected_rows = sims.topk(30, dim=1)
    (expected.exp().sum() + (2 * sims.gather(1, columns)).sum()).backward()
    assert torch.equal(shard.background, expected_rows)
    torch.testing.assert_close(shard.logits, expected)
    torch.testing.assert_close(shard.column_logits, sims.gather(1, columns))
    torch.testing.assert_close(query.grad, reference.grad)


def test_background_gathers_rows_only_for_large_matrices(monkeypatch: pytest.MonkeyPatch) -> None:
    from invprop.distributed import rows as rows_module
    from invprop.distributed.similarity import GATHER_ROW_RATIO

    calls: list[int] = []
    real = rows_module.gathered_dot
    monkeypatch.setattr(rows_module, "gathered_dot", lambda *a, **k: calls.append(1) or real(*a, **k))
    query, columns = F.normalize(torch.randn(2, 4), dim=1), torch.zeros(2, 1, dtype=torch.long)
    for n in (GATHER_ROW_RATIO * (4 + 1), GATHER_ROW_RATIO * (4 + 1) - 1):
        sharded_background_logits(query, F.normalize(torch.randn(n, 4), dim=1), RowPartition.whole(n), 4, columns)
    assert calls == [1]  # the first size gathers, the second is one below the threshold: dense
    with pytest.raises(ValueError, match="n_background"):
        sharded_background_logits(query, torch.randn(10, 4), RowPartition.whole(10), 11, columns)
