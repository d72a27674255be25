"""Joint-embedding predictive architectures (Assran et al., 2023, I-JEPA): a predictor, from a context block's
representation, regresses a momentum target encoder's representation of target blocks of the same image.

The equations follow the authors' code (facebookresearch/ijepa ``src/train.py``), restated in
``../shared/docs/vit-methods.md`` Sec. 5.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

#: The Huber loss's threshold between its squared and linear parts (``F.smooth_l1_loss``'s default beta).
SMOOTH_L1_BETA = 1.0


def target_layer_norm(tokens: Tensor) -> Tensor:
    """``s_y = LN(f_theta_bar(x))`` (Assran et al., 2023, Sec. 3; the authors' ``F.layer_norm(h, (h.size(-1),))``): each
    (..., D) target token normalised over its features, without a learned scale or shift; float32."""
    return F.layer_norm(tokens.float(), (tokens.shape[-1],))


def jepa_loss(predictions: Tensor, targets: Tensor) -> Tensor:
    """``L = mean_{i, j in B_i} SmoothL1(s_hat_y(i)_j, s_y,j)`` (Assran et al., 2023, Eq. 1 with the authors' Huber
    loss, beta = 1, in place of the paper's squared L2): the mean over every target block's tokens and features.

    Args:
        predictions: (M B, K_t, D) the predictor's outputs at each target block's positions.
        targets: (M B, K_t, D) :func:`target_layer_norm` of the target encoder's tokens there.
    """
    if predictions.shape != targets.shape:
        raise ValueError(f"predictions {tuple(predictions.shape)} and targets {tuple(targets.shape)} must match")
    return F.smooth_l1_loss(predictions.float(), targets.float(), beta=SMOOTH_L1_BETA)


__all__ = ["SMOOTH_L1_BETA", "jepa_loss", "target_layer_norm"]
