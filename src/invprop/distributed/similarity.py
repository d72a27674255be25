"""The local kernels of a batch of queries against many rows, without a dense B x N matrix in the autograd graph.

The InvP objective needs, per anchor, the N_b bank rows most similar to it and the logits of a few hundred chosen
rows (its own row, M_i, its positives). The selection needs no gradient, so :func:`topk_similarities` runs without
autograd, in blocks of rows that bound its memory. The chosen logits are then recomputed with :func:`gathered_dot`,
whose backward pass touches only the chosen rows: ``O(B x M x D)`` instead of a dense ``B x N`` gradient and a
``B x N x D`` product. :func:`gather_is_cheaper` is the one rule that picks between the two forms.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Upper bound on B x (bank rows) similarities held at once by :func:`topk_similarities` (256 MiB in float32).
TOPK_BLOCK_ELEMENTS = 1 << 26
#: Upper bound on B x M x D gathered bank values held at once by :func:`gathered_dot` (64 MiB in float32).
GATHER_BLOCK_ELEMENTS = 1 << 24
#: Gathering the chosen rows beats differentiating the dense B x N product once there are this many times more rows
#: than are chosen per anchor (:func:`gather_is_cheaper`). Gathering a bank row costs about as much as 80 dense
#: columns of a matmul, forward and backward (measured on a 2-core CPU: 0.21 us vs 2.4 ns per row and column; the
#: estimate for an H100 from its bandwidth and fp32 throughput is similar), so the dense form wins below ~330k rows
#: at the default N_b = 4096. The gathered form also never holds more than a bounded block of similarities.
GATHER_ROW_RATIO = 80


def similarity_block(query: Tensor, keys: Tensor) -> Tensor:
    """``query @ keys.T``; half-precision keys stay half on CUDA (fp32 accumulation), are upcast on CPU."""
    if keys.dtype != query.dtype:
        if keys.is_cuda:
            return (query.to(keys.dtype) @ keys.T).float()
        keys = keys.float()
    return query @ keys.T


@torch.no_grad()
def topk_similarities(
    query: Tensor, keys: Tensor, k: int, block_elements: int = TOPK_BLOCK_ELEMENTS
) -> tuple[Tensor, Tensor]:
    """The k keys most similar to each query by dot product, most similar first.

    Args:
        query: (B, D) float32.
        keys: (N, D), float32 or a half-precision bank.
        k: ``1 <= k <= N``.
        block_elements: at most this many similarities are held at once (blocks of keys are merged).

    Returns:
        ``(values, indices)``, both (B, k): float32 similarities and int64 key indices.
    """
    n = keys.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, N] = [1, {n}], got {k}")
    if block_elements < 1:
        raise ValueError(f"block_elements must be positive, got {block_elements}")
    block = max(k, block_elements // max(query.shape[0], 1))
    if block >= n:
        return similarity_block(query, keys).topk(k, dim=1, sorted=True)
    best_values: Tensor | None = None
    best_indices: Tensor | None = None
    for start in range(0, n, block):
        sims = similarity_block(query, keys[start : start + block])
        values, indices = sims.topk(min(k, sims.shape[1]), dim=1, sorted=False)
        indices = indices + start
        if best_values is not None and best_indices is not None:
            values = torch.cat([best_values, values], dim=1)
            indices = torch.cat([best_indices, indices], dim=1)
            values, order = values.topk(k, dim=1, sorted=False)
            indices = indices.gather(1, order)
        best_values, best_indices = values, indices
    assert best_values is not None and best_indices is not None
    values, order = best_values.sort(dim=1, descending=True)
    return values, best_indices.gather(1, order)


class _GatheredDot(torch.autograd.Function):
    """``out[b, m] = query[b] . keys[columns[b, m]]``; gradient for ``query`` only (the bank is a buffer)."""

    @staticmethod
    def forward(ctx, query: Tensor, keys: Tensor, columns: Tensor, block_elements: int) -> Tensor:
        ctx.save_for_backward(keys, columns)
        ctx.block_elements = block_elements
        out = query.new_empty(columns.shape)
        for rows in _row_blocks(columns, keys.shape[1], block_elements):
            gathered = keys[columns[rows]].to(query.dtype)  # (b, M, D)
            out[rows] = torch.bmm(gathered, query[rows].unsqueeze(2)).squeeze(2)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, None, None, None]:
        keys, columns = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        grad_query = grad_out.new_empty(columns.shape[0], keys.shape[1])
        for rows in _row_blocks(columns, keys.shape[1], ctx.block_elements):
            gathered = keys[columns[rows]].to(grad_out.dtype)
            grad_query[rows] = torch.bmm(grad_out[rows].unsqueeze(1), gathered).squeeze(1)
        return grad_query, None, None, None


def _row_blocks(columns: Tensor, dim: int, block_elements: int) -> list[slice]:
    per_row = max(columns.shape[1] * dim, 1)
    step = max(1, block_elements // per_row)
    return [slice(start, start + step) for start in range(0, columns.shape[0], step)]


def gathered_dot(query: Tensor, keys: Tensor, columns: Tensor, block_elements: int = GATHER_BLOCK_ELEMENTS) -> Tensor:
    """Dot products of each query with its own list of keys, differentiable w.r.t. ``query``.

    Memory is bounded: blocks of queries are processed so that at most ``block_elements`` gathered key values exist
    at once, in the forward and in the backward pass (nothing of size B x M x D is saved for backward).

    Args:
        query: (B, D) float32.
        keys: (N, D) bank rows (any float dtype; upcast to ``query``'s dtype per block). Not differentiated.
        columns: (B, M) int64 indices into ``keys`` (must be valid, i.e. in [0, N)).
        block_elements: bound on gathered values held at once.

    Returns:
        (B, M) in ``query``'s dtype.

    Example:
        >>> q, keys = torch.randn(2, 4, requires_grad=True), torch.randn(10, 4)
        >>> cols = torch.tensor([[0, 3], [9, 9]])
        >>> bool(torch.allclose(gathered_dot(q, keys, cols), (q[:, None] * keys[cols]).sum(-1)))
        True
    """
    if columns.dim() != 2 or columns.shape[0] != query.shape[0]:
        raise ValueError(f"columns must be (B, M) with B = {query.shape[0]}, got {tuple(columns.shape)}")
    return _GatheredDot.apply(query, keys.detach(), columns, block_elements)


def gather_is_cheaper(rows: int, chosen: int) -> bool:
    """Whether differentiating only the ``chosen`` rows per query (:func:`gathered_dot`) beats differentiating the
    dense product with all ``rows``: once ``rows >= GATHER_ROW_RATIO x chosen``.

    Example:
        >>> gather_is_cheaper(50_000, 4096 + 51), gather_is_cheaper(1_281_167, 4096 + 51)
        (False, True)
    """
    return rows >= GATHER_ROW_RATIO * chosen
