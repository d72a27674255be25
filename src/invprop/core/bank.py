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

#: Banks up to this many rows get an exact neighbour table at construction (an O(N^2 D) search, chunked).
#: Larger banks start with invalid rows, filled by the online rule or by :meth:`MemoryBank.rebuild_neighbors`.
EXACT_INIT_MAX_ROWS = 65_536

#: Marker for a neighbour-table entry that holds no neighbour yet.
INVALID_NEIGHBOR = -1


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

    Attributes:
        features: (N, D) float tensor of unit rows.
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
        self.size = size
        self.dim = dim
        self.momentum = momentum
        self.num_neighbors = num_neighbors
        features = torch.randn(size, dim, generator=generator)
        features = nn.functional.normalize(features, dim=1)
        self.register_buffer("features", features.to(device))
        if size <= EXACT_INIT_MAX_ROWS:
            neighbors = knn_graph(self.features, num_neighbors)
        else:
            neighbors = torch.full((size, num_neighbors), INVALID_NEIGHBOR, dtype=torch.long, device=device)
        self.register_buffer("neighbors", neighbors)

    @torch.no_grad()
    def update(self, indices: Tensor, embeddings: Tensor) -> None:
        """EMA-update the rows ``indices`` (B,) towards ``embeddings`` (B, D), then renormalise them.

        ``embeddings`` need not be normalised; they are L2-normalised first, as in the paper.
        """
        fresh = nn.functional.normalize(embeddings.detach().to(self.features), dim=1)
        mixed = self.momentum * self.features[indices] + (1.0 - self.momentum) * fresh
        self.features[indices] = nn.functional.normalize(mixed, dim=1)

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
            query = nn.functional.normalize(embeddings.detach().to(self.features), dim=1)
            candidates = (query @ self.features.T).topk(k + 1, dim=1).indices
        self.neighbors[indices] = online_neighbors(candidates[:, : k + 1], indices, k)

    @torch.no_grad()
    def rebuild_neighbors(self, chunk_size: int = 4096) -> None:
        """Exact graph upkeep: recompute the whole table from the bank, chunk_size rows at a time."""
        self.neighbors.copy_(knn_graph(self.features, self.num_neighbors, chunk_size=chunk_size))

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}, momentum={self.momentum}, num_neighbors={self.num_neighbors}"
