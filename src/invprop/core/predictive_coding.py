"""Contrastive predictive coding over a grid of patch embeddings (van den Oord, Li & Vinyals, 2018; Henaff et al.,
2019, CPC v2): a prediction made from the context of rows above is scored against every patch embedding of the
batch, the patch ``offset`` rows below being the positive."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def cpc_infonce_loss(predictions: Tensor, targets: Tensor, offset: int) -> Tensor:
    """InfoNCE of CPC (van den Oord et al., 2018, Eq. 4; Henaff et al., 2019, Eq. 1 and App. A.2's pseudo-code):
    the prediction at grid location (i, j) of image b -- made from rows up to i -- should pick the target at
    (i + offset, j) of the same image among every target of the batch (every image, every location); float32
    log-sum-exp, averaged over the B x (R - offset) x C predictions.

    Args:
        predictions: (B, T, R, C) one prediction per location (rows ``R - offset`` and below are not scored).
        targets: (B, T, R, C) the patch embeddings' targets.
        offset: rows between a prediction and its target, 1 <= offset < R.

    Returns:
        The 0-d mean loss.

    Example:
        >>> round(float(cpc_infonce_loss(torch.zeros(2, 3, 2, 2), torch.zeros(2, 3, 2, 2), 1)), 4)  # ln 8 targets
        2.0794
    """
    b, t, rows, cols = targets.shape
    if not 1 <= offset < rows:
        raise ValueError(f"offset must be between 1 and the grid's {rows} rows minus 1, got {offset}")
    scored = predictions[:, :, : rows - offset].float()  # (B, T, R - offset, C)
    queries = scored.permute(0, 2, 3, 1).reshape(-1, t)  # (B (R - offset) C, T), image-major, row by row
    candidates = targets.float().permute(0, 2, 3, 1).reshape(-1, t)  # (B R C, T)
    logits = queries @ candidates.T
    image = torch.arange(b, device=targets.device).view(b, 1, 1)
    row = torch.arange(rows - offset, device=targets.device).view(1, -1, 1) + offset
    col = torch.arange(cols, device=targets.device).view(1, 1, -1)
    labels = (image * rows * cols + row * cols + col).reshape(-1)
    return F.cross_entropy(logits, labels)


__all__ = ["cpc_infonce_loss"]
