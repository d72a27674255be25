"""Approximate nearest-neighbour search with FAISS, for rebuilding the neighbour graph of banks with millions of rows.

FAISS is an optional dependency (``pip install 'invprop[faiss]'`` installs faiss-cpu; a faiss-gpu build is used on
CUDA when it is the one installed). The index is an inverted file over unit rows with inner-product scores
(``IndexIVFFlat``): ``lists`` k-means cells, of which ``probe`` are scanned per query. Exact search costs
O(N^2 D); the IVF index costs about O(N D (lists + N probe / lists)). Its recall against exact search is measured by
:meth:`invprop.core.bank.MemoryBank.sampled_recall` (logged after every rebuild) and by ``benchmarks/sharded_bank.py``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: k-means cells per sqrt(N) when ``lists`` is not given (FAISS's guideline is 4-16 x sqrt(N)).
LISTS_PER_SQRT_ROWS = 4
#: Training points per k-means cell (FAISS warns below 39).
TRAIN_POINTS_PER_LIST = 64
#: Cells scanned per query by default.
DEFAULT_PROBE = 32


def faiss_available() -> bool:
    """True when the ``faiss`` module can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _faiss():
    try:
        import faiss
    except ImportError:
        raise ImportError("FAISS search needs the faiss package: pip install 'invprop[faiss]' (or faiss-gpu)") from None
    return faiss


class FaissSearch:
    """An IVF inner-product index over ``rows``; call it like :func:`invprop.distributed.rows.exact_search`'s result.

    Args:
        rows: (N, D) unit rows (any float dtype, any device; the index holds a float32 copy).
        lists: k-means cells; None = ``4 sqrt(N)``, capped so each cell has enough training points.
        probe: cells scanned per query (more = slower, higher recall).
        seed: seed of the k-means training sample.

    Example:
        >>> rows = torch.nn.functional.normalize(torch.randn(2000, 16), dim=1)
        >>> values, indices = FaissSearch(rows, lists=8, probe=8)(rows[:3], 5)
        >>> indices.shape, int(indices[0, 0])
        (torch.Size([3, 5]), 0)
    """

    def __init__(self, rows: Tensor, lists: int | None = None, probe: int = DEFAULT_PROBE, seed: int = 0) -> None:
        faiss = _faiss()
        n, dim = rows.shape
        if probe < 1:
            raise ValueError(f"probe must be positive, got {probe}")
        if lists is None:
            lists = max(1, int(LISTS_PER_SQRT_ROWS * math.sqrt(n)))
        if lists < 1:
            raise ValueError(f"lists must be positive, got {lists}")
        lists = max(1, min(lists, n // TRAIN_POINTS_PER_LIST or 1))
        data = rows.detach().float().cpu().contiguous().numpy()
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
        sample = min(n, lists * TRAIN_POINTS_PER_LIST)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:sample].sort().values
        index.train(data[order.numpy()])
        index.add(data)
        index.nprobe = min(probe, lists)
        if rows.is_cuda and hasattr(faiss, "StandardGpuResources"):
            self._resources = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._resources, rows.device.index or 0, index)
        self.index = index
        self.lists = lists
        self.probe = index.nprobe
        self.rows = n

    def __call__(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """The (approximately) k most similar rows per query: ``(values, indices)``, (Q, k), most similar first.

        Entries FAISS could not fill (fewer than k rows in the probed cells) get score ``-inf`` and index ``-1``.
        """
        values, indices = self.index.search(queries.detach().float().cpu().contiguous().numpy(), k)
        values_t = torch.from_numpy(values).to(queries.device)
        indices_t = torch.from_numpy(indices).to(device=queries.device, dtype=torch.long)
        return values_t.masked_fill(indices_t < 0, float("-inf")), indices_t


def faiss_kmeans(points: Tensor, centroids: Tensor, iterations: int) -> tuple[Tensor, Tensor, Tensor]:
    """FAISS's k-means (``faiss.Kmeans``, the implementation DeepCluster and PCL use) from the given initial
    centroids; FAISS fills empty clusters by splitting large ones itself.

    Args:
        points: (N, D) points.
        centroids: (K, D) initial centroids.
        iterations: Lloyd iterations.

    Returns:
        ``(centroids (K, D), assignments (N,), squared distances (N,))`` on ``points``' device.
    """
    faiss = _faiss()
    data = points.detach().float().cpu().contiguous().numpy()
    k, dim = centroids.shape
    kmeans = faiss.Kmeans(dim, k, niter=iterations, min_points_per_centroid=1, max_points_per_centroid=points.shape[0])
    kmeans.train(data, init_centroids=centroids.detach().float().cpu().contiguous().numpy())
    distances, labels = kmeans.index.search(data, 1)
    device = points.device
    return (torch.from_numpy(kmeans.centroids).to(device), torch.from_numpy(labels[:, 0]).long().to(device),
            torch.from_numpy(distances[:, 0]).to(device))  # fmt: skip


__all__ = ["FaissSearch", "faiss_available", "faiss_kmeans"]
