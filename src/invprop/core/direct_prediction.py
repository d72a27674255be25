"""DirectPred (Tian, Chen & Ganguli, ICML 2021): the linear predictor of a non-contrastive method set directly from
the eigen-decomposition of the embeddings' correlation instead of learned, as pure functions.

The authors' code (facebookresearch/luckmatters, ``ssl/real-dataset/byol_trainer.py``) fixes what the paper leaves
open: the correlation is of the online projector's outputs, un-normalised and uncentred, over both views; its
running estimate starts at the first batch's; the predictor built from it is used from the next step on.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: The smallest eigenvalue scale of the predictor (the authors' clamp after adding eps).
MIN_SCALE = 1e-4


def correlation_sum(features: Tensor) -> Tensor:
    """The uncentred sum of outer products ``sum_b f_b f_b^T`` of a batch of embeddings, in float32 with autocast
    off (divided by the rows, over one or several batches, it is the correlation F of Tian et al., 2021, Sec. 5).

    Args:
        features: (B, D) embeddings (both views' rows together), any scale; used as constants.

    Returns:
        (D, D) float32, symmetric.
    """
    with torch.autocast(device_type=features.device.type, enabled=False):
        f = features.detach().float()
        return f.T @ f


def batch_correlation(features: Tensor) -> Tensor:
    """The uncentred correlation ``E_B[f f^T]`` of one batch: :func:`correlation_sum` over its B rows."""
    return correlation_sum(features) / features.shape[0]


def correlation_update(running: Tensor | None, batch: Tensor, rho: float) -> Tensor:
    """The running correlation ``F <- rho F + (1 - rho) E_B[f f^T]`` (Tian et al., 2021, Eq. 19); the first batch's
    correlation starts it (``running`` None), as in the authors' Accumulator.

    Args:
        running: (D, D) the estimate so far, or None before the first batch.
        batch: (D, D) this batch's correlation (:func:`batch_correlation`).
        rho: the weight of the old estimate, in [0, 1).

    Returns:
        (D, D) the new estimate.
    """
    return batch.clone() if running is None else rho * running + (1.0 - rho) * batch


def direct_predictor_weight(correlation: Tensor, eps: float) -> Tensor:
    """The predictor ``W_p = U diag(p) U^T`` from ``F = U diag(s) U^T`` (Tian et al., 2021, Eq. 18), as the authors'
    code computes it (``boost_scale``): ``p_j = sqrt(max(s_j, 0) / max_j s_j) + eps``, at least :data:`MIN_SCALE`.
    (Eq. 18 writes ``sqrt(s_j) + eps max_j s_j``; the two differ in how large eps is relative to the top
    eigenvalue, and the losses normalise the prediction, so only that ratio matters.)

    Args:
        correlation: (D, D) positive semi-definite estimate of the correlation (symmetrised before the
            decomposition: rounding can leave it a little asymmetric).
        eps: the boost of the weak directions, >= 0.

    Returns:
        (D, D) float32, symmetric.
    """
    values, vectors = torch.linalg.eigh((correlation.double() + correlation.double().T) / 2)
    top = values.max().clamp_min(torch.finfo(torch.float64).tiny)
    scales = ((values.clamp_min(0.0) / top).sqrt() + eps).clamp_min(MIN_SCALE)
    return ((vectors * scales) @ vectors.T).float()


__all__ = ["MIN_SCALE", "batch_correlation", "correlation_sum", "correlation_update", "direct_predictor_weight"]
