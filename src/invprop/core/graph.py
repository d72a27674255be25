"""The kNN graph over the bank and positive-sample discovery by propagation (Wang et al., 2020, Sec. 3.1, Eq. 3).

All functions are vectorised over the batch: no Python loop runs per anchor. Negative entries in a neighbour table
mean "no neighbour known yet" and are never followed. The graph of rows split over processes
(:func:`sharded_knn_graph`) and the recall of an approximate graph (:func:`graph_recall`) live here too.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from invprop.distributed.collectives import ProcessGroup, all_gather_tensor, rank, world_size
from invprop.distributed.partition import RowPartition, block_bounds
from invprop.distributed.rows import LocalSearch, exact_search, merge_topk, to_global
from invprop.distributed.similarity import similarity_block, topk_similarities

#: Rows of the bank compared at once by :func:`knn_graph`; memory is O(chunk_size x N).
DEFAULT_CHUNK_SIZE = 4096


def knn_graph(features: Tensor, k: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Tensor:
    """Exact directed kNN graph of unit rows by cosine similarity, each node excluding itself.

    Args:
        features: (N, D) unit rows (float32, or a half-precision bank).
        k: neighbours per node, ``1 <= k < N``.
        chunk_size: rows per block; peak memory is ``chunk_size x N`` similarities.

    Returns:
        (N, k) int64 neighbour indices, most similar first.
    """
    n = features.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, N - 1] = [1, {n - 1}], got {k}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    out = torch.empty(n, k, dtype=torch.long, device=features.device)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        sims = similarity_block(features[start:stop].float(), features)
        rows = torch.arange(stop - start, device=features.device)
        sims[rows, rows + start] = float("-inf")
        out[start:stop] = sims.topk(k, dim=1).indices
    return out


def nearest_columns(candidates: Tensor, anchors: Tensor, k: int) -> Tensor:
    """Columns of the first k candidates that are not the anchor itself (the (k+1)-th fills the anchor's place).

    Args:
        candidates: (B, >= k+1) bank indices sorted by decreasing similarity to each anchor.
        anchors: (B,) the anchors' own bank indices.
        k: neighbours to keep.

    Returns:
        (B, k) int64 column positions into ``candidates``.
    """
    if candidates.shape[1] < k + 1:
        raise ValueError(f"need k + 1 = {k + 1} candidates per anchor, got {candidates.shape[1]}")
    is_self = candidates[:, : k + 1] == anchors.unsqueeze(1)
    positions = torch.arange(k + 1, device=candidates.device).expand_as(is_self)
    return torch.where(is_self, torch.full_like(positions, k), positions)[:, :k]


def online_neighbors(candidates: Tensor, anchors: Tensor, k: int) -> Tensor:
    """The authors' online neighbour rule: the first k candidates that are not the anchor itself.

    Args:
        candidates: (B, k+1) bank indices sorted by decreasing similarity to each anchor's current embedding.
        anchors: (B,) the anchors' own bank indices.
        k: neighbours to keep.

    Returns:
        (B, k) int64 neighbours; if the anchor is among the first k candidates, the (k+1)-th fills its place.
    """
    return candidates.gather(1, nearest_columns(candidates, anchors, k))


def drop_anchor(candidates: Tensor, anchors: Tensor, k: int) -> Tensor:
    """The first k candidates that are not the anchor itself, in their order (for a full graph rebuild).

    Args:
        candidates: (B, >= k+1) indices sorted by decreasing similarity.
        anchors: (B,) the anchors' own indices.
        k: neighbours to keep.

    Returns:
        (B, k) int64, most similar first.
    """
    is_self = (candidates == anchors.unsqueeze(1)).to(torch.uint8)
    order = torch.sort(is_self, dim=1, stable=True).indices[:, :k]
    return candidates.gather(1, order)


def _dedup_rows(values: Tensor, valid: Tensor, first_block: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Per row: keep the first occurrence of each valid value, sorted ascending and left-aligned.

    ``first_block`` columns at the start of each row take precedence when the same value occurs later, which
    lets callers tell "already known" values (the first block) from new ones via the returned ``from_tail`` mask.

    Returns:
        (values, keep, from_tail), each (B, W'): the de-duplicated values (padding ``-1``), a mask of kept entries,
        and a mask of kept entries that came from beyond ``first_block``.
    """
    b, width = values.shape
    sentinel = torch.iinfo(torch.long).max
    keys = torch.where(valid, values, torch.full_like(values, sentinel))
    sorted_keys, order = torch.sort(keys, dim=1, stable=True)
    first = torch.ones_like(valid)
    first[:, 1:] = sorted_keys[:, 1:] != sorted_keys[:, :-1]
    keep = first & (sorted_keys != sentinel)
    from_tail = keep & (order >= first_block)
    # Left-align kept entries (a stable sort on ~keep moves them to the front in ascending value order).
    shift = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices
    width_out = max(int(keep.sum(dim=1).max().item()) if b else 0, 1)
    shift = shift[:, :width_out]
    kept = torch.gather(keep, 1, shift)
    out = torch.where(kept, torch.gather(sorted_keys, 1, shift), torch.full_like(shift, -1))
    return out, kept, torch.gather(from_tail, 1, shift)


def outside_sets(rows: Tensor, members: Tensor) -> Tensor:
    """Which ``rows`` are NOT members of their anchor's set (e.g. M_i minus P_i), by sorted search.

    Args:
        rows: (B, M) or (1, M) bank indices (a (1, M) row is shared by every anchor).
        members: (B, S) bank indices of each anchor's set, ``-1`` padding.

    Returns:
        (B, M) bool, True where ``rows[b, m]`` is not in ``members[b]``. Memory O(B x (M + S)).

    Example:
        >>> outside_sets(torch.tensor([[3, 5, 7]]), torch.tensor([[5, -1], [7, 3]])).tolist()
        [[True, False, True], [False, True, False]]
    """
    rows = rows.expand(members.shape[0], -1)
    if members.shape[1] == 0:
        return torch.ones(rows.shape, dtype=torch.bool, device=rows.device)
    ordered = members.sort(dim=1).values
    at = torch.searchsorted(ordered, rows.contiguous()).clamp_(max=ordered.shape[1] - 1)
    return ordered.gather(1, at) != rows


def propagate(neighbors: Tensor, anchors: Tensor, steps: int, exact: bool = True) -> tuple[Tensor, Tensor]:
    """Positive-sample discovery by invariance propagation (Wang et al., 2020, Eq. 3).

    ``P_i^(1) = N_k(i)``, ``P_i^(s+1) = P_i^(s) U N_k(P_i^(s))``, positives ``P_i = P_i^(l)`` with ``l = steps``.

    Args:
        neighbors: (N, k) int64 neighbour table; negative entries are unknown and never followed.
        anchors: (B,) int64 anchor indices.
        steps: l >= 1, the number of hops.
        exact: True gives the paper's set -- every node at graph distance 1..l from the anchor, de-duplicated,
            anchor excluded, sorted by index and padded with ``-1``. False gives the authors' approximation: the
            hop-by-hop concatenation ``N_k(i), N_k(N_k(i)), ...`` with duplicates (and the anchor) kept,
            ``k + k^2 + ... + k^l`` columns, in the authors' column order.

    Returns:
        ``(positives, mask)``, both (B, M): node indices and a bool mask of valid entries. With ``exact=False`` every
        entry is valid unless it descends from an unknown (negative) table entry.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    anchors = anchors.to(neighbors.device).long()
    b = anchors.shape[0]
    hop = neighbors[anchors]
    hop_valid = hop >= 0
    if not exact:
        hops, masks = [hop], [hop_valid]
        for _ in range(steps - 1):
            nxt = neighbors[hop.clamp_min(0)].reshape(b, -1)
            nxt_valid = hop_valid.repeat_interleave(neighbors.shape[1], dim=1) & (nxt >= 0)
            hops.append(nxt)
            masks.append(nxt_valid)
            hop, hop_valid = nxt, nxt_valid
        positives = torch.cat(hops, dim=1)
        mask = torch.cat(masks, dim=1)
        return torch.where(mask, positives, torch.full_like(positives, -1)), mask

    # Exact breadth-first search, one hop at a time, on padded per-row sets. ``visited`` includes the anchor so
    # that it is never re-added; the frontier holds only nodes first reached at the previous hop.
    visited, visited_valid, _ = _dedup_rows(
        anchors.unsqueeze(1), torch.ones(b, 1, dtype=torch.bool, device=anchors.device)
    )
    frontier, frontier_valid = hop, hop_valid
    for step in range(steps):
        width = visited.shape[1]
        merged = torch.cat([visited, frontier], dim=1)
        merged_valid = torch.cat([visited_valid, frontier_valid], dim=1)
        new_visited, new_valid, is_new = _dedup_rows(merged, merged_valid, first_block=width)
        visited, visited_valid = new_visited, new_valid
        if step == steps - 1 or not bool(is_new.any()):
            break
        fresh = torch.where(is_new, visited, torch.full_like(visited, -1))
        nxt = neighbors[fresh.clamp_min(0)].reshape(b, -1)
        nxt_valid = (fresh >= 0).repeat_interleave(neighbors.shape[1], dim=1) & (nxt >= 0)
        frontier, frontier_valid = nxt, nxt_valid
    not_anchor = visited_valid & (visited != anchors.unsqueeze(1))
    positives, mask, _ = _dedup_rows(visited, not_anchor)
    return positives, mask


@torch.no_grad()
def sharded_knn_graph(
    rows: Tensor,
    part: RowPartition,
    k: int,
    chunk_size: int = 4096,
    search: LocalSearch | None = None,
    local_only: bool = False,
) -> Tensor:
    """The directed kNN graph of all N rows (self excluded), on every rank.

    Split rows: each block of each rank's rows is broadcast in turn, every rank searches its own rows, and the
    candidates are merged -- exact, O(N^2 D / W) work per rank. Whole rows with several processes: each rank searches
    the neighbours of its block of rows against all of them and the tables are all-gathered.

    Args:
        rows: (R, D) this rank's unit rows.
        part: the partition (its group is the set of processes sharing the work).
        k: neighbours per row, ``1 <= k < N``.
        chunk_size: query rows per block (memory O(chunk_size x R)).
        search: local search over ``rows`` (default exact; see :class:`invprop.core.faiss_search.FaissSearch`).
        local_only: return only the neighbours of this process's rows (R, k) -- N x k memory is never held.

    Returns:
        (N, k) int64 global neighbour indices, most similar first (or (R, k) with ``local_only``).
    """
    if not 1 <= k < part.total:
        raise ValueError(f"k must be in [1, N - 1] = [1, {part.total - 1}], got {k}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    search = search or exact_search(rows)
    me = rank(part.group) if part.parallel else 0
    parts = world_size(part.group) if part.parallel else 1
    local_only = local_only and part.is_split  # a whole matrix's "own rows" are all rows
    offset = part.start if local_only else 0
    table = torch.empty(part.rows if local_only else part.total, k, dtype=torch.long, device=rows.device)

    def neighbours_of(first: int, queries: Tensor) -> Tensor:
        values, indices = search(queries.float(), min(k + 1, part.rows))
        if part.is_split:
            values, indices = merge_topk(values, to_global(indices, part), k + 1, part.group, part.total)
        anchors = torch.arange(first, first + queries.shape[0], device=rows.device)
        return drop_anchor(indices, anchors, k)

    if part.is_split:
        for owner in range(parts):
            start, stop = part.bounds(owner)
            for first in range(start, stop, chunk_size):
                last = min(first + chunk_size, stop)
                if owner == me:
                    queries = rows[first - part.start : last - part.start].contiguous()
                else:
                    queries = rows.new_empty(last - first, rows.shape[1])
                dist.broadcast(
                    queries, src=dist.get_global_rank(part.group, owner) if part.group else owner, group=part.group
                )
                found = neighbours_of(first, queries)
                if owner == me or not local_only:
                    table[first - offset : last - offset] = found
        return table
    start, stop = block_bounds(part.total, parts, me)
    for first in range(start, stop, chunk_size):
        last = min(first + chunk_size, stop)
        table[first:last] = neighbours_of(first, rows[first:last])
    if local_only:
        return table
    if parts > 1:
        table = _all_gather_blocks(table[start:stop], part.total, parts, part.group)
    return table


def _all_gather_blocks(block: Tensor, total: int, parts: int, group: ProcessGroup | None) -> Tensor:
    """Concatenate per-rank blocks of :func:`block_bounds` sizes (padded to equal size for the collective)."""
    longest = block_bounds(total, parts, 0)[1]
    padded = block.new_zeros(longest, *block.shape[1:])
    padded[: block.shape[0]] = block
    gathered = all_gather_tensor(padded, group).view(parts, longest, *block.shape[1:])
    return torch.cat(
        [gathered[i, : block_bounds(total, parts, i)[1] - block_bounds(total, parts, i)[0]] for i in range(parts)]
    )


def graph_recall(approximate: Tensor, exact: Tensor) -> float:
    """Mean fraction of each row's exact neighbours found by the approximate table (both (Q, k))."""
    hits = (approximate.unsqueeze(2) == exact.unsqueeze(1)).any(dim=1)
    return float(hits.float().mean())


@torch.no_grad()
def exact_neighbors_of(queries: Tensor, anchors: Tensor, keys: Tensor, k: int) -> Tensor:
    """The exact k nearest ``keys`` rows of each query, the anchor's own row excluded: (Q, k) indices."""
    _, candidates = topk_similarities(queries.float(), keys, k + 1)
    return drop_anchor(candidates, anchors, k)
