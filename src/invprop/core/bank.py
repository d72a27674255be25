"""The memory bank: one EMA embedding per training image, plus its kNN graph.

InvP (Wang et al., 2020, Sec. 3.3) keeps a bank ``bar v`` of N unit vectors. After each step every image ``i`` of the batch
moves its row towards its fresh embedding ``v_i``::

    bar v_i <- normalise(m * bar v_i + (1 - m) * v_i)

A bank may be split over the processes of a distributed run (``partition``, see :mod:`invprop.distributed.partition`): each
process then holds a contiguous block of rows of ``features`` and updates only the rows it owns, while the neighbour
table (k integers per row, a fraction of a D-dimensional row) stays whole on every process. Checkpoints always hold
the whole bank, so a run can resume with another number of processes.

The bank also holds the directed kNN graph ``N_k(i)`` used by positive discovery (Eq. 3). Unlike the authors' code,
whose table starts as all zeros (every early "neighbour" is image 0), the table here is built from the initial bank
(exact, chunked) when that is cheap, and otherwise marked invalid (``-1``) until a row is first refreshed; every
consumer (:func:`invprop.core.graph.propagate`) honours the invalid marker.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from invprop.core.faiss_search import FaissSearch
from invprop.core.graph import (
    drop_anchor,
    exact_neighbors_of,
    graph_recall,
    knn_graph,
    online_neighbors,
    sharded_knn_graph,
)
from invprop.distributed.collectives import all_reduce_sum
from invprop.distributed.partition import RowPartition, SplitRowsState, partition_randn
from invprop.distributed.rows import sharded_topk
from invprop.settings import AT_LEAST_ONE, AT_LEAST_TWO, UNIT_INTERVAL, require

#: Banks up to this many rows get an exact neighbour table at construction (an O(N^2 D) search, chunked).
#: Larger banks start with invalid rows, filled by the online rule or by :meth:`MemoryBank.rebuild_neighbors`.
EXACT_INIT_MAX_ROWS = 65_536

#: Marker for a neighbour-table entry that holds no neighbour yet.
INVALID_NEIGHBOR = -1

#: Storage dtypes a bank may use. Half precision halves the bank's memory (655 MB -> 328 MB at N = 1.28M, D = 128);
#: every similarity is still computed with float32 queries and accumulation, and EMA updates are mixed in float32.
BANK_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: Neighbour searches of a full graph rebuild: exact (chunked) or an approximate FAISS index.
REBUILD_SEARCHES = ("exact", "faiss")
#: Smallest norm divided by when normalising rows (torch.nn.functional.normalize's default).
_NORM_EPS = 1e-12


class MemoryBank(SplitRowsState, nn.Module):
    """Memory bank of unit embeddings with an EMA update and a kNN neighbour table.

    Both tensors are registered buffers, so ``state_dict()``/``load_state_dict()`` and ``.to(device)`` carry them.

    Args:
        size: number of rows N (one per training image); at least ``num_neighbors + 1``.
        dim: embedding dimension D.
        momentum: EMA momentum m in [0, 1); 0 overwrites rows with the fresh embeddings.
        num_neighbors: k, the out-degree of the neighbour graph.
        device: where the buffers live.
        generator: optional RNG for the random unit initialisation.
        dtype: storage dtype of ``features`` (float32, float16 or bfloat16; see :data:`BANK_DTYPES`).
        features: optional (size, dim) initial rows (L2-normalised here) instead of random unit vectors, e.g. the
            embeddings of a pretrained encoder.
        neighbors: optional (size, num_neighbors) initial neighbour table (``-1`` = unknown) instead of one built
            from the initial rows.
        partition: which rows this process holds (default: all of them, no collectives). With a split partition
            the random initial rows are the same as a whole bank's (drawn in the same order), and building the
            initial neighbour table, :meth:`refresh_neighbors` without candidates, :meth:`rebuild_neighbors`,
            :meth:`sampled_recall` and ``state_dict()`` are collectives that every process must call.

    Attributes:
        features: (R, D) tensor of unit rows in the storage dtype: rows ``[partition.start, partition.stop)``
            (all N rows unless the bank is split).
        neighbors: (N, k) int64 tensor; row i lists N_k(i) (self excluded) or ``-1`` where not yet known.

    Example:
        >>> bank = MemoryBank(size=100, dim=16, momentum=0.5, num_neighbors=4)
        >>> bank.features.shape, bank.neighbors.shape
        (torch.Size([100, 16]), torch.Size([100, 4]))
        >>> bank.update(torch.tensor([0, 1]), torch.randn(2, 16))
        >>> bool(torch.allclose(bank.features.norm(dim=1), torch.ones(100)))
        True
    """

    features: Tensor
    neighbors: Tensor
    split_rows = ("features",)

    def __init__(
        self,
        size: int,
        dim: int,
        momentum: float = 0.5,
        num_neighbors: int = 4,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        features: Tensor | None = None,
        neighbors: Tensor | None = None,
        partition: RowPartition | None = None,
    ) -> None:
        super().__init__()
        require("size", size, AT_LEAST_TWO)
        require("dim", dim, AT_LEAST_ONE)
        require("momentum", momentum, UNIT_INTERVAL)
        if not 1 <= num_neighbors < size:
            raise ValueError(f"num_neighbors must be in [1, size - 1] = [1, {size - 1}], got {num_neighbors}")
        if dtype not in BANK_DTYPES.values():
            raise ValueError(f"dtype must be one of {', '.join(BANK_DTYPES)}; got {dtype}")
        partition = partition if partition is not None else RowPartition.whole(size)
        if partition.total != size:
            raise ValueError(f"partition covers {partition.total} rows, but the bank has {size}")
        self.size = size
        self.dim = dim
        self.momentum = momentum
        self.num_neighbors = num_neighbors
        self.partition = partition
        if features is None:
            features = partition_randn(size, dim, partition, generator)
            features.div_(features.norm(dim=1, keepdim=True).clamp_min(_NORM_EPS))  # in place: no second N x D copy
        elif tuple(features.shape) != (size, dim):
            raise ValueError(f"initial features must be ({size}, {dim}), got {tuple(features.shape)}")
        else:
            features = nn.functional.normalize(features[partition.start : partition.stop].float(), dim=1, eps=_NORM_EPS)
        self.register_buffer("features", features.to(device=device, dtype=dtype))
        if neighbors is not None:
            if tuple(neighbors.shape) != (size, num_neighbors):
                raise ValueError(f"initial neighbors must be ({size}, {num_neighbors}), got {tuple(neighbors.shape)}")
            neighbors = neighbors.to(device=device, dtype=torch.long).clone()
        elif size <= EXACT_INIT_MAX_ROWS:
            if partition.is_split:
                neighbors = sharded_knn_graph(self.features, partition, num_neighbors)
            else:
                neighbors = knn_graph(self.features, num_neighbors)
        else:
            neighbors = torch.full((size, num_neighbors), INVALID_NEIGHBOR, dtype=torch.long, device=device)
        self.register_buffer("neighbors", neighbors)

    @torch.no_grad()
    def update(self, indices: Tensor, embeddings: Tensor) -> None:
        """EMA-update the rows ``indices`` (B,) towards ``embeddings`` (B, D), then renormalise them.

        ``embeddings`` need not be normalised; they are L2-normalised first, as in the paper.
        """
        fresh = nn.functional.normalize(embeddings.detach().float().to(self.features.device), dim=1)
        indices = indices.to(self.features.device)
        if self.partition.is_split:  # global row indices: update the rows held here
            owned = self.partition.owns(indices)
            indices, fresh = indices[owned] - self.partition.start, fresh[owned]
        mixed = self.momentum * self.features[indices].float() + (1.0 - self.momentum) * fresh
        self.features[indices] = nn.functional.normalize(mixed, dim=1).to(self.features.dtype)

    @torch.no_grad()
    def refresh_neighbors(self, indices: Tensor, embeddings: Tensor, candidates: Tensor | None = None) -> None:
        """Online graph upkeep: rows ``indices`` get the k bank rows nearest to ``embeddings``, self excluded.

        Args:
            indices: (B,) bank rows to refresh.
            embeddings: (B, D) current embeddings of those images (normalised here).
            candidates: optional (B, >= k+1) bank indices already sorted by decreasing similarity to
                ``embeddings`` (e.g. the head of the loss's background list); saves a B x N product.
        """
        k = self.num_neighbors
        if candidates is None or candidates.shape[1] < k + 1:
            query = nn.functional.normalize(embeddings.detach().float().to(self.features.device), dim=1)
            candidates = sharded_topk(query, self.features, self.partition, k + 1)[1]
        self.neighbors[indices] = online_neighbors(candidates[:, : k + 1], indices, k)

    @torch.no_grad()
    def rebuild_neighbors(
        self, chunk_size: int = 4096, search: str = "exact", faiss_lists: int | None = None, faiss_probe: int = 32
    ) -> None:
        """Full graph upkeep: recompute the whole table from the bank, ``chunk_size`` query rows at a time.

        Args:
            chunk_size: query rows per block (memory O(chunk_size x R)).
            search: ``exact`` (blocked dot products) or ``faiss`` (an IVF index over this process's rows, see
                :class:`invprop.core.faiss_search.FaissSearch`; approximate, for N in the millions).
            faiss_lists: k-means cells of the FAISS index (None = 4 sqrt(R)).
            faiss_probe: cells scanned per query.
        """
        if search not in REBUILD_SEARCHES:
            raise ValueError(f"search must be one of {', '.join(REBUILD_SEARCHES)}, got {search!r}")
        local = FaissSearch(self.features, faiss_lists, faiss_probe) if search == "faiss" else None
        if local is None and not self.partition.parallel:
            self.neighbors.copy_(knn_graph(self.features, self.num_neighbors, chunk_size=chunk_size))
            return
        self.neighbors.copy_(sharded_knn_graph(self.features, self.partition, self.num_neighbors, chunk_size, local))

    @torch.no_grad()
    def sampled_recall(self, rows: Tensor) -> float:
        """Recall of the neighbour table against exact search, measured on bank ``rows`` (Q,): the mean fraction of
        each row's k exact nearest rows that its table entry lists. Costs Q x N similarities (a collective when the
        bank is split; ``rows`` must then be the same on every process)."""
        rows = rows.to(self.features.device)
        owned = self.partition.owns(rows)
        queries = torch.zeros(rows.shape[0], self.dim, device=self.features.device)
        queries[owned] = self.features[self.partition.local(rows[owned])].float()
        if self.partition.is_split:
            queries = all_reduce_sum(queries, self.partition.group)
            _, candidates = sharded_topk(queries, self.features, self.partition, self.num_neighbors + 1)
            exact = drop_anchor(candidates, rows, self.num_neighbors)
        else:
            exact = exact_neighbors_of(queries, rows, self.features, self.num_neighbors)
        return graph_recall(self.neighbors[rows], exact)

    def extra_repr(self) -> str:
        rows = f", rows=[{self.partition.start}, {self.partition.stop})" if self.partition.is_split else ""
        return (
            f"size={self.size}, dim={self.dim}, momentum={self.momentum}, num_neighbors={self.num_neighbors}, "
            f"dtype={self.features.dtype}{rows}"
        )
