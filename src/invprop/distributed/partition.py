"""Which rows of an N-row matrix a process holds, and the state of a module whose rows are split over processes.

Rank r of a group holds the contiguous block ``[start, stop)`` of :func:`block_bounds`. A :class:`RowPartition`
describes one process's block; :func:`partition_randn` draws a split matrix with the same values for any number of
processes; :class:`SplitRowsState` checkpoints a split module whole; :func:`gather_partition` assembles the whole
matrix on one process.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from invprop.distributed.collectives import LOCAL, ProcessGroup, is_distributed, rank, world_size

#: Rows sent at once when gathering a split matrix onto one rank (bounds the transient device memory).
GATHER_CHUNK_ROWS = 65_536


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
        group: the process group the rows are shared or split over (None = the default group; :data:`LOCAL` for a
            matrix of this process alone).
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
    group: ProcessGroup | None = LOCAL
    distributed: bool = False

    @classmethod
    def whole(cls, total: int) -> "RowPartition":
        """Every row, here, without any collective."""
        return cls(total, 0, total, LOCAL)

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

    @property
    def reduce_group(self) -> ProcessGroup:
        """The processes a reduction over the rows spans: ``group`` when the rows are split, else :data:`LOCAL`
        (every row is here, even when the matrix is replicated on other processes)."""
        return self.group if self.is_split else LOCAL

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

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)  # type: ignore[misc]
        if self.partition.is_split:
            for name in self.split_rows:
                whole = gather_partition(getattr(self, name).detach(), self.partition)
                if whole is not None:
                    destination[prefix + name] = whole

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in self.split_rows:
            saved = state_dict.get(prefix + name)
            if saved is not None and self.partition.is_split and saved.shape[0] == self.partition.total:
                state_dict[prefix + name] = saved[self.partition.start : self.partition.stop]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)  # type: ignore[misc]


@torch.no_grad()
def gather_partition(
    rows: Tensor, part: RowPartition, dst: int = 0, chunk_rows: int = GATHER_CHUNK_ROWS
) -> Tensor | None:
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


__all__ = ["GATHER_CHUNK_ROWS", "RowPartition", "SplitRowsState", "block_bounds", "gather_partition", "partition_randn"]
