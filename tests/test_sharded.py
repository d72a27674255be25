from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from gloo import run_gloo
from invprop.core.graph import knn_graph
from invprop.core.sharded import (
    RowPartition,
    block_bounds,
    gather_partition,
    merge_topk,
    sharded_knn_graph,
    sharded_row_logits,
    sharded_topk,
)
from invprop.core.similarity import topk_similarities

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
    from invprop.core.sharded import _to_global

    part = RowPartition(100, 40, 70)
    assert _to_global(torch.tensor([[0, 29, -1]]), part).tolist() == [[40, 69, -1]]
