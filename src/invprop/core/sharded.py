"""Similarities of a batch against N rows split across ranks: top-k merge, logits of chosen rows, log-sum-exp.

One primitive serves every "batch against a huge row matrix" computation of the library: InvP's sharded memory bank
(rows = bank embeddings, not differentiated) and the parametric instance classifier's sharded weight matrix (rows =
class weights, differentiated). Rank r holds the contiguous block of rows ``[start, stop)`` described by a
:class:`RowPartition`; the queries are the same on every rank (all-gathered by the caller with
:func:`invprop.core.collectives.all_gather_rows`). Each rank scores the queries against its own rows only, and the
partial results are merged:

* :func:`sharded_topk` -- local top-k, then a top-k of the W candidate lists (exact: the global top-k is always among
  the union of the local ones);
* :func:`sharded_row_logits` -- logits of chosen global rows: each rank fills the entries it owns, an all-reduce sum
  makes them whole (each entry has exactly one owner);
* :func:`invprop.core.collectives.distributed_logsumexp` -- softmax denominators over all N rows without moving a
  B x N tensor;
* :func:`sharded_knn_graph` -- the exact (or FAISS) neighbour table of all N rows, chunk by chunk.

With a partition that holds every row (one process, or a replicated bank) each function is its plain local form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist
from torch import Tensor

from invprop.core.collectives import ProcessGroup, all_gather_tensor, all_reduce_sum, is_distributed, rank, world_size
from invprop.core.graph import drop_anchor
from invprop.core.similarity import GATHER_ROW_RATIO, gathered_dot, similarity_block, topk_similarities

#: A local search: ``(queries (Q, D), k) -> (values, row indices)``, both (Q, k), indices local to this rank's rows.
LocalSearch = Callable[[Tensor, int], "tuple[Tensor, Tensor]"]
#: Rows sent at once when gathering a split matrix onto one rank (bounds the transient device memory).
GATHER_CHUNK_ROWS = 65_536
_INT32_LIMIT = 2**31 - 1


def block_bounds(total: int, parts: int, index: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of block ``index`` when ``total`` rows are cut into ``parts`` contiguous blocks.

    The first ``total % parts`` blocks get one row more, so sizes differ by at most one.
    """
    if parts < 1 or not 0 <= index < parts:
        raise ValueError(f"block {index} of {parts} does not exist")
    base, extra = divmod(total, parts)
    start = index * base + min(index, extra)
    return start, start + base + (1 if index < extra else 0)


@dataclass(frozen=True)
class RowPartition:
    """Which rows of an N-row matrix this process holds: ``[start, stop)``.

    Attributes:
        total: N.
        start: first row held here.
        stop: one past the last row held here.
        group: the process group the rows are shared or split over (None = the default group).
        distributed: whether the processes of ``group`` cooperate (share work, exchange results) at all; False
            for a purely local matrix, whatever torch.distributed's state.

    Build one with :meth:`whole` (a local matrix), :meth:`replicated` (every process holds every row and they share
    the work of a graph rebuild) or :meth:`split` (contiguous blocks).

    Example:
        >>> part = RowPartition.whole(10)
        >>> part.rows, part.is_split
        (10, False)
    """

    total: int
    start: int
    stop: int
    group: ProcessGroup | None = None
    distributed: bool = False

    @classmethod
    def whole(cls, total: int) -> "RowPartition":
        """Every row, here, without any collective."""
        return cls(total, 0, total)

    @classmethod
    def replicated(cls, total: int, group: ProcessGroup | None = None) -> "RowPartition":
        """Every row on every process of ``group``, which share the work of :func:`sharded_knn_graph`."""
        return cls(total, 0, total, group, True)

    @classmethod
    def split(cls, total: int, group: ProcessGroup | None = None) -> "RowPartition":
        """This rank's contiguous block of ``total`` rows split over ``group``; every block holds at least one row."""
        parts = world_size(group)
        if total < parts:
            raise ValueError(f"cannot split {total} rows over {parts} processes: every process needs at least one row")
        start, stop = block_bounds(total, parts, rank(group))
        return cls(total, start, stop, group, True)

    @property
    def rows(self) -> int:
        return self.stop - self.start

    @property
    def is_split(self) -> bool:
        """True when other processes hold some of the rows (collectives are needed)."""
        return self.rows < self.total

    @property
    def parallel(self) -> bool:
        """True when several processes cooperate on this matrix."""
        return self.distributed and is_distributed(self.group)

    def bounds(self, index: int) -> tuple[int, int]:
        """Rows held by rank ``index`` of the group (the same rule as :meth:`split`)."""
        if not self.is_split:
            return 0, self.total
        return block_bounds(self.total, world_size(self.group), index)

    def owns(self, indices: Tensor) -> Tensor:
        """Bool mask: which global row ``indices`` are held here."""
        return (indices >= self.start) & (indices < self.stop)

    def local(self, indices: Tensor) -> Tensor:
        """Global row ``indices`` as positions in the local block, clamped into range (mask with :meth:`owns`)."""
        return (indices - self.start).clamp(0, self.rows - 1)


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


def _to_global(indices: Tensor, part: RowPartition) -> Tensor:
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
    return merge_topk(values, _to_global(indices, part), k, part.group, part.total)


def sharded_row_logits(query: Tensor, rows: Tensor, part: RowPartition, columns: Tensor) -> Tensor:
    """``query[b] . row[columns[b, m]]`` for global row indices, complete on every rank.

    Each rank computes the entries whose row it holds; an all-reduce sum (differentiable, see
    :mod:`invprop.core.collectives`) completes them. Gradients flow to ``query`` and, if ``rows`` requires grad (a
    classifier's weights), to this rank's rows.

    Args:
        query: (B, D) float32, the same on every rank.
        rows: (R, D) this rank's rows.
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
    if not part.is_split:
        return logits
    return all_reduce_sum(logits.masked_fill(~part.owns(columns), 0.0), part.group)


@dataclass
class ShardedBackground:
    """The N_b rows most similar to each query, scored by the process that holds them (see
    :func:`sharded_background_logits`).

    Attributes:
        background: (B, N_b) global row indices, most similar first; the same on every process.
        logits: (B, M) differentiable similarities of this process's share of the background.
        members: (B, M) bool, True where an entry of ``logits`` is a real background member (the rest is padding).
        rows: (B, M) global row index of each entry of ``logits``.
        column_logits: (B, C) differentiable similarities of the requested extra columns, complete on every process.
    """

    background: Tensor
    logits: Tensor
    members: Tensor
    rows: Tensor
    column_logits: Tensor


def sharded_background_logits(
    query: Tensor, rows: Tensor, part: RowPartition, n_background: int, columns: Tensor, dense: bool | None = None
) -> ShardedBackground:
    """The background of each query among rows split over processes, with logits for each process's share.

    The softmax denominator over the background is then ``distributed_logsumexp(logits, members)``; the similarities
    of a few extra rows per query (the anchor's own row, its positives) come back complete on every process.

    Args:
        query: (B, D) float32, the same on every process (gathered with
            :func:`invprop.core.collectives.all_gather_rows`, so that gradients return to their process).
        rows: (R, D) this process's rows (not differentiated).
        part: the partition.
        n_background: N_b, ``1 <= N_b <= N``.
        columns: (B, C) global indices of the extra rows.
        dense: differentiate the (B, R) product of the local rows (True) or gather only this process's background
            entries (False); None decides as :func:`invprop.core.similarity.background_logits` does, on R.
    """
    if dense is None:
        dense = part.rows < GATHER_ROW_RATIO * (n_background + columns.shape[1])
    owned_columns = part.owns(columns)
    if dense:
        local_sim = similarity_block(query, rows)  # (B, R), differentiable w.r.t. the query
        values, local = local_sim.detach().topk(min(n_background, part.rows), dim=1, sorted=True)
        background = merge_topk(values, local + part.start, n_background, part.group, part.total)[1] if part.is_split else local
        owned = part.owns(background)
        logits = local_sim.gather(1, part.local(background))
        column_sim = local_sim.gather(1, part.local(columns))
        member_rows = background
    else:
        background = sharded_topk(query, rows, part, n_background)[1]
        owned = part.owns(background)
        # Keep only the entries held here (about N_b / W per query), left-aligned, so that the gathered products
        # cost this process its share of the background, not all of it.
        width = max(int(owned.sum(dim=1).max()), 1)
        order = torch.sort((~owned).to(torch.uint8), dim=1, stable=True).indices[:, :width]
        member_rows = background.gather(1, order)
        owned = owned.gather(1, order)
        logits = gathered_dot(query, rows, part.local(member_rows))
        column_sim = gathered_dot(query, rows, part.local(columns))
    if part.is_split:
        column_sim = all_reduce_sum(column_sim.masked_fill(~owned_columns, 0.0), part.group)
    return ShardedBackground(background, logits, owned, member_rows, column_sim)


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
            values, indices = merge_topk(values, _to_global(indices, part), k + 1, part.group, part.total)
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
                dist.broadcast(queries, src=dist.get_global_rank(part.group, owner) if part.group else owner, group=part.group)
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
    return torch.cat([gathered[i, : block_bounds(total, parts, i)[1] - block_bounds(total, parts, i)[0]] for i in range(parts)])


def partition_randn(total: int, dim: int, part: RowPartition, generator: torch.Generator | None = None) -> Tensor:
    """The rows ``[part.start, part.stop)`` of ``torch.randn(total, dim)``: the same values for any partition.

    The other rows are drawn too (in chunks, then dropped), so that every process leaves the RNG in the same state.
    """
    if not part.is_split:
        return torch.randn(total, dim, generator=generator)
    kept = []
    for first in range(0, total, GATHER_CHUNK_ROWS):
        last = min(first + GATHER_CHUNK_ROWS, total)
        draw = torch.randn(last - first, dim, generator=generator)
        lo, hi = max(first, part.start), min(last, part.stop)
        if lo < hi:
            kept.append(draw[lo - first : hi - first])
    return torch.cat(kept)


class SplitRowsState:
    """Mixin for an ``nn.Module`` whose tensors named in ``split_rows`` hold rows ``[partition.start,
    partition.stop)`` of N: its state dict holds them whole (gathered on rank 0; a collective), and a whole state
    loads into any partition, each process keeping its rows. The module sets ``self.partition``."""

    split_rows: tuple[str, ...] = ()
    partition: RowPartition

    def _save_to_state_dict(self, destination, prefix, keep_vars):  # type: ignore[no-untyped-def]
        super()._save_to_state_dict(destination, prefix, keep_vars)  # type: ignore[misc]
        if self.partition.is_split:
            for name in self.split_rows:
                whole = gather_partition(getattr(self, name).detach(), self.partition)
                if whole is not None:
                    destination[prefix + name] = whole

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        for name in self.split_rows:
            saved = state_dict.get(prefix + name)
            if saved is not None and self.partition.is_split and saved.shape[0] == self.partition.total:
                state_dict[prefix + name] = saved[self.partition.start : self.partition.stop]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)  # type: ignore[misc]


@torch.no_grad()
def gather_partition(rows: Tensor, part: RowPartition, dst: int = 0, chunk_rows: int = GATHER_CHUNK_ROWS) -> Tensor | None:
    """The whole (N, D) matrix on rank ``dst`` (in CPU memory), from every rank's block; None on other ranks.

    A collective: every rank of the group must call it. Rows travel in chunks of ``chunk_rows`` per rank, so the
    device memory used is bounded whatever N.
    """
    if not part.is_split:
        return rows.cpu()
    parts = world_size(part.group)
    me = rank(part.group)
    longest = block_bounds(part.total, parts, 0)[1]
    out = torch.empty(part.total, *rows.shape[1:], dtype=rows.dtype) if me == dst else None
    for offset in range(0, longest, chunk_rows):
        size = min(chunk_rows, longest - offset)
        piece = rows.new_zeros(size, *rows.shape[1:])
        mine = rows[offset : offset + size]
        piece[: mine.shape[0]] = mine
        pieces = [torch.empty_like(piece) for _ in range(parts)] if me == dst else None
        dst_global = dist.get_global_rank(part.group, dst) if part.group else dst
        dist.gather(piece, pieces, dst=dst_global, group=part.group)
        if out is not None and pieces is not None:
            for owner, received in enumerate(pieces):
                start, stop = block_bounds(part.total, parts, owner)
                take = max(0, min(size, stop - start - offset))
                out[start + offset : start + offset + take] = received[:take].cpu()
    return out


__all__ = [
    "LocalSearch",
    "RowPartition",
    "ShardedBackground",
    "SplitRowsState",
    "block_bounds",
    "exact_search",
    "gather_partition",
    "merge_topk",
    "partition_randn",
    "sharded_background_logits",
    "sharded_knn_graph",
    "sharded_row_logits",
    "sharded_topk",
]
