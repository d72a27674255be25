"""The memory bank: one EMA embedding per training image, plus its kNN graph.

InvP (seed 000, Sec. 3.3) keeps a bank ``bar v`` of N unit vectors. After each step every image ``i`` of the batch
moves its row towards its fresh embedding ``v_i``::

    bar v_i <- normalise(m * bar v_i + (1 - m) * v_i)

The bank also holds the directed kNN graph ``N_k(i)`` used by positive discovery (Eq. 3). Unlike the authors' code,
whose table starts as all zeros (every early "neighbour" is image 0), the table here is built from the initial bank
(exact, chunked) when that is cheap, and otherwise marked invalid (``-1``) until a row is first refreshed; every
consumer (:func:`invprop.core.graph.propagate`) honours the invalid marker.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from invprop.core.graph import knn_graph, online_neighbors
from invprop.core.similarity import topk_similarities

#: Banks up to this many rows get an exact neighbour table at construction (an O(N^2 D) search, chunked).
#: Larger banks start with invalid rows, filled by the online rule or by :meth:`MemoryBank.rebuild_neighbors`.
EXACT_INIT_MAX_ROWS = 65_536

#: Marker for a neighbour-table entry that holds no neighbour yet.
INVALID_NEIGHBOR = -1

#: Storage dtypes a bank may use. Half precision halves the bank's memory (655 MB -> 328 MB at N = 1.28M, D = 128);
#: every similarity is still computed with float32 queries and accumulation, and EMA updates are mixed in float32.
BANK_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class MemoryBank(nn.Module):
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

    Attributes:
        features: (N, D) tensor of unit rows in the storage dtype.
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
    ) -> None:
        super().__init__()
        if size < 2:
            raise ValueError(f"MemoryBank size must be at least 2, got {size}")
        if dim < 1:
            raise ValueError(f"MemoryBank dim must be positive, got {dim}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"MemoryBank momentum must be in [0, 1), got {momentum}")
        if not 1 <= num_neighbors < size:
            raise ValueError(f"num_neighbors must be in [1, size - 1] = [1, {size - 1}], got {num_neighbors}")
        if dtype not in BANK_DTYPES.values():
            raise ValueError(f"MemoryBank dtype must be one of float32, float16, bfloat16; got {dtype}")
        self.size = size
        self.dim = dim
        self.momentum = momentum
        self.num_neighbors = num_neighbors
        if features is None:
            features = torch.randn(size, dim, generator=generator)
        elif tuple(features.shape) != (size, dim):
            raise ValueError(f"initial features must be ({size}, {dim}), got {tuple(features.shape)}")
        features = nn.functional.normalize(features.float(), dim=1)
        self.register_buffer("features", features.to(device=device, dtype=dtype))
        if neighbors is not None:
            if tuple(neighbors.shape) != (size, num_neighbors):
                raise ValueError(f"initial neighbors must be ({size}, {num_neighbors}), got {tuple(neighbors.shape)}")
            neighbors = neighbors.to(device=device, dtype=torch.long).clone()
        elif size <= EXACT_INIT_MAX_ROWS:
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
            candidates = topk_similarities(query, self.features, k + 1)[1]
        self.neighbors[indices] = online_neighbors(candidates[:, : k + 1], indices, k)

    @torch.no_grad()
    def rebuild_neighbors(self, chunk_size: int = 4096) -> None:
        """Exact graph upkeep: recompute the whole table from the bank, chunk_size rows at a time."""
        self.neighbors.copy_(knn_graph(self.features, self.num_neighbors, chunk_size=chunk_size))

    def extra_repr(self) -> str:
        return (
            f"size={self.size}, dim={self.dim}, momentum={self.momentum}, num_neighbors={self.num_neighbors}, "
            f"dtype={self.features.dtype}"
        )
