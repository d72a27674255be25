"""A batch of queries against N rows held whole or split over processes: top-k, logits of chosen rows, background.

One primitive serves every "batch against a huge row matrix" computation of the library: InvP's memory bank (rows =
bank embeddings, not differentiated) and the parametric instance classifier's weight matrix (rows = class weights,
differentiated). A process holds the rows ``[start, stop)`` of a :class:`~invprop.distributed.partition.RowPartition`
-- all of them for a whole (or replicated) matrix, a block of them for a split one -- and the queries are the same on
every process (all-gathered by the caller with :func:`invprop.distributed.collectives.all_gather_rows`). Each process
scores the queries against its own rows, and the partial results are merged over ``part.reduce_group``, which is
:data:`~invprop.distributed.collectives.LOCAL` unless the rows are split, so a whole matrix is simply a partition of
one part:

* :func:`sharded_topk` -- local top-k, then a top-k of the W candidate lists (exact: the global top-k is always among
  the union of the local ones);
* :func:`sharded_row_logits` -- logits of chosen global rows: each process fills the entries it owns, an all-reduce
  sum makes them whole (each entry has exactly one owner);
* :func:`sharded_background_logits` -- the N_b rows nearest each query with differentiable logits, by one
  dense-vs-gathered rule (:func:`invprop.distributed.similarity.gather_is_cheaper`);
* :func:`invprop.distributed.collectives.masked_logsumexp` -- softmax denominators over all N rows without moving a
  B x N tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from invprop.distributed.collectives import ProcessGroup, all_gather_tensor, all_reduce_sum, is_distributed, world_size
from invprop.distributed.partition import RowPartition
from invprop.distributed.similarity import gather_is_cheaper, gathered_dot, topk_similarities

#: A local search: ``(queries (Q, D), k) -> (values, row indices)``, both (Q, k), indices local to this rank's rows.
LocalSearch = Callable[[Tensor, int], "tuple[Tensor, Tensor]"]
_INT32_LIMIT = 2**31 - 1


def exact_search(rows: Tensor) -> LocalSearch:
    """The exact local search over ``rows`` (blocked dot products, see :func:`topk_similarities`)."""

    def search(queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        return topk_similarities(queries.float(), rows, min(k, rows.shape[0]))

    return search


@torch.no_grad()
def merge_topk(
    values: Tensor, indices: Tensor, k: int, group: ProcessGroup | None = None, total: int | None = None
) -> tuple[Tensor, Tensor]:
    """Merge every rank's (B, k_r) candidates into the global top-k, most similar first.

    Args:
        values: (B, k_r) candidate scores on this rank, k_r <= k (padded here to k with ``-inf``).
        indices: (B, k_r) their global row indices.
        k: entries to keep.
        group: process group.
        total: number of rows the indices point into, if known (saves a device sync to size the message).

    Returns:
        ``(values, indices)``, both (B, k), the same on every rank (``-1`` where fewer than k candidates exist).
    """
    if values.shape[1] < k:
        pad = k - values.shape[1]
        values = torch.cat([values, values.new_full((values.shape[0], pad), float("-inf"))], dim=1)
        indices = torch.cat([indices, indices.new_full((indices.shape[0], pad), -1)], dim=1)
    if not is_distributed(group):
        order = values.argsort(dim=1, descending=True)[:, :k]
        return values.gather(1, order), indices.gather(1, order)
    parts = world_size(group)
    all_values = all_gather_tensor(values.float().contiguous(), group).view(parts, *values.shape)
    # Row indices travel as int32 when they fit (half the bytes of the largest message of a sharded step).
    if total is not None:
        narrow = total <= _INT32_LIMIT
    else:
        narrow = indices.numel() == 0 or int(indices.max()) < _INT32_LIMIT
    sent = indices.int() if narrow else indices
    all_indices = all_gather_tensor(sent.contiguous(), group).view(parts, *indices.shape).long()
    merged_values = all_values.permute(1, 0, 2).reshape(values.shape[0], -1)
    merged_indices = all_indices.permute(1, 0, 2).reshape(values.shape[0], -1)
    best, order = merged_values.topk(k, dim=1, sorted=True)
    return best, merged_indices.gather(1, order)


def to_global(indices: Tensor, part: RowPartition) -> Tensor:
    """Local row indices from a search as global ones; ``-1`` (a slot an approximate search left empty) stays."""
    return torch.where(indices >= 0, indices + part.start, indices)


@torch.no_grad()
def sharded_topk(
    query: Tensor, rows: Tensor, part: RowPartition, k: int, search: LocalSearch | None = None
) -> tuple[Tensor, Tensor]:
    """The k rows (of all N, on every rank) most similar to each query, most similar first.

    Args:
        query: (B, D) float32, the same on every rank.
        rows: (R, D) this rank's rows ``[part.start, part.stop)``.
        part: the partition.
        k: ``1 <= k <= N``.
        search: local search (default :func:`exact_search` over ``rows``).

    Returns:
        ``(values, indices)``, both (B, k): float32 similarities and global int64 row indices; identical on all ranks.
    """
    if not 1 <= k <= part.total:
        raise ValueError(f"k must be in [1, N] = [1, {part.total}], got {k}")
    search = search or exact_search(rows)
    values, indices = search(query, min(k, part.rows))
    if not part.is_split:
        return values, indices
    return merge_topk(values, to_global(indices, part), k, part.group, part.total)


def owned_entries(logits: Tensor, part: RowPartition, columns: Tensor) -> Tensor:
    """Complete per-query entries of global rows ``columns`` from each process's share: ``logits`` holds this
    process's value where it owns the row (anything elsewhere); an all-reduce sum over ``part.reduce_group`` fills
    the rest (differentiable; each entry has exactly one owner)."""
    if not part.is_split:
        return logits
    return all_reduce_sum(logits.masked_fill(~part.owns(columns), 0.0), part.reduce_group)


def sharded_row_logits(query: Tensor, rows: Tensor, part: RowPartition, columns: Tensor) -> Tensor:
    """``query[b] . row[columns[b, m]]`` for global row indices, complete on every process.

    Gradients flow to ``query`` and, if ``rows`` requires grad (a classifier's weights), to this process's rows.

    Args:
        query: (B, D) float32, the same on every process.
        rows: (R, D) this process's rows.
        part: the partition.
        columns: (B, C) int64 global row indices, valid (in [0, N)).

    Returns:
        (B, C) float32.
    """
    local = part.local(columns)
    if rows.requires_grad:
        logits = torch.einsum("bd,bcd->bc", query, rows[local].to(query.dtype))
    else:
        logits = gathered_dot(query, rows, local)
    return owned_entries(logits, part, columns)


@dataclass
class ShardedBackground:
    """The N_b rows most similar to each query, scored by the process that holds them (see
    :func:`sharded_background_logits`).

    Attributes:
        background: (B, N_b) global row indices, most similar first; the same on every process.
        logits: (B, M) differentiable similarities of this process's share of the background (all of it, M = N_b,
            unless the rows are split).
        members: (B, M) bool, True where an entry of ``logits`` is a real background member (the rest is padding);
            None when every entry is one (rows not split).
        rows: (B, M) global row index of each entry of ``logits``.
        column_logits: (B, C) differentiable similarities of the requested extra columns, complete on every process.
    """

    background: Tensor
    logits: Tensor
    members: Tensor | None
    rows: Tensor
    column_logits: Tensor


def sharded_background_logits(
    query: Tensor, rows: Tensor, part: RowPartition, n_background: int, columns: Tensor, dense: bool | None = None
) -> ShardedBackground:
    """The background of each query among the rows, with differentiable logits for each process's share.

    The softmax denominator over the background is then ``masked_logsumexp(logits, members, part.reduce_group)``;
    the similarities of a few extra rows per query (the anchor's own row, its positives) come back complete on every
    process. Selection runs without autograd; only the chosen logits are differentiated.

    Args:
        query: (B, D) float32 unit queries, the same on every process (gathered with
            :func:`invprop.distributed.collectives.all_gather_rows` when the rows are split, so that gradients return
            to their process).
        rows: (R, D) this process's rows (not differentiated; float32 or a half-precision bank).
        part: the partition.
        n_background: N_b, ``1 <= N_b <= N``.
        columns: (B, C) global indices of the extra rows (valid).
        dense: differentiate the (B, R) product of the local rows (True) or gather only the chosen rows (False);
            None decides by :func:`invprop.distributed.similarity.gather_is_cheaper`.
    """
    if not 1 <= n_background <= part.total:
        raise ValueError(f"n_background must be in [1, N] = [1, {part.total}], got {n_background}")
    if dense is None:
        dense = not gather_is_cheaper(part.rows, n_background + columns.shape[1])
    if dense:
        local_sim = query @ rows.to(query.dtype).T  # (B, R), differentiable w.r.t. the query
        values, local = local_sim.detach().topk(min(n_background, part.rows), dim=1, sorted=True)
        background = (
            merge_topk(values, local + part.start, n_background, part.group, part.total)[1] if part.is_split else local
        )
        logits = local_sim.gather(1, part.local(background))
        column_sim = local_sim.gather(1, part.local(columns))
        members = part.owns(background) if part.is_split else None
        member_rows = background
    else:
        background = sharded_topk(query, rows, part, n_background)[1]
        members, member_rows = None, background
        if part.is_split:
            # Keep only the entries held here (about N_b / W per query), left-aligned, so that the gathered products
            # cost this process its share of the background, not all of it.
            owned = part.owns(background)
            width = max(int(owned.sum(dim=1).max()), 1)
            order = torch.sort((~owned).to(torch.uint8), dim=1, stable=True).indices[:, :width]
            member_rows, members = background.gather(1, order), owned.gather(1, order)
        chosen = gathered_dot(query, rows, part.local(torch.cat([member_rows, columns], dim=1)))
        logits, column_sim = chosen[:, : member_rows.shape[1]], chosen[:, member_rows.shape[1] :]
    return ShardedBackground(background, logits, members, member_rows, owned_entries(column_sim, part, columns))


__all__ = [
    "LocalSearch",
    "ShardedBackground",
    "exact_search",
    "merge_topk",
    "owned_entries",
    "sharded_background_logits",
    "sharded_row_logits",
    "sharded_topk",
    "to_global",
]
