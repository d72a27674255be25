"""Masked image modelling's pixel objective (He et al., 2022, MAE): images cut into patch vectors, the per-patch
normalised pixels as targets, and the mean squared error over the hidden patches only."""

from __future__ import annotations

from torch import Tensor

#: MAE's epsilon in the per-patch normalisation of the targets (the authors' ``forward_loss``: ``var + 1.e-6``).
TARGET_EPS = 1e-6


def patchify(images: Tensor, patch: int) -> Tensor:
    """(B, C, H, W) -> (B, N, p p C): each p x p patch in row-major order, its pixels row by row with the channels
    last (the authors' ``patchify``: ``nchpwq -> nhwpqc``).

    Example:
        >>> import torch
        >>> patchify(torch.arange(16.0).view(1, 1, 4, 4), 2)[0, 1].tolist()
        [2.0, 3.0, 6.0, 7.0]
    """
    b, c, h, w = images.shape
    if h % patch or w % patch:
        raise ValueError(f"{patch}-pixel patches do not divide {h}x{w} images")
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def normalised_targets(patches: Tensor, eps: float = TARGET_EPS) -> Tensor:
    """``t_i = (x_i - mean(x_i)) / sqrt(var(x_i) + eps)`` over each patch's values (He et al., 2022, Sec. 3, the
    normalised-pixel target; the unbiased variance, as the authors' ``var(dim=-1)``)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


def masked_patch_loss(predictions: Tensor, targets: Tensor, hidden: Tensor) -> Tensor:
    """``L = sum_i m_i mean_j (y_ij - t_ij)^2 / sum_i m_i`` (He et al., 2022, Sec. 3): each patch's mean squared
    error, averaged over the hidden patches (``hidden`` True) of the batch only.

    Args:
        predictions: (B, N, P) the decoder's pixel predictions of every patch.
        targets: (B, N, P) the targets.
        hidden: (B, N) bool, True where the patch was hidden from the encoder.

    Returns:
        0-d float32 loss.
    """
    per_patch = (predictions.float() - targets.float()).pow(2).mean(dim=-1)
    weights = hidden.to(per_patch.dtype)
    return (per_patch * weights).sum() / weights.sum().clamp_min(1.0)


__all__ = ["TARGET_EPS", "masked_patch_loss", "normalised_targets", "patchify"]
