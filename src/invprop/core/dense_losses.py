"""Dense contrastive learning's objective over feature maps (Wang, Zhang, Shen, Kong & Li, 2021, DenseCL): each
location of one view's map is matched to its most similar location of the other view's, and the matched pair is
a positive of an InfoNCE whose negatives are a queue of pooled dense keys."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from invprop.core.contrastive_losses import info_nce_queue_loss


def dense_correspondence(query_map: Tensor, key_map: Tensor) -> Tensor:
    """Each query location's most similar key location by cosine similarity of backbone features (Wang et al.,
    2021, Sec. 3.3: ``t* = argmax_t cos(f^1_s, f^2_t)``, computed on the backbone's maps, not the projections).

    Args:
        query_map: (B, C, h, w) the first view's backbone map.
        key_map: (B, C, h', w') the second view's backbone map (any grid size).

    Returns:
        (B, h*w) long: for each query location s (row by row), the index of its key location (row by row, < h'*w').

    Example:
        >>> q = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # (1, 2, 1, 2): location 0 points along x, 1 along y
        >>> dense_correspondence(q, q.flip(-1)).tolist()
        [[1, 0]]
    """
    with torch.no_grad():
        q = F.normalize(query_map.float().flatten(2), dim=1)  # (B, C, S)
        k = F.normalize(key_map.float().flatten(2), dim=1)  # (B, C, S')
        return torch.einsum("bcs,bct->bst", q, k).argmax(dim=2)


def dense_contrastive_loss(
    query_dense: Tensor, key_dense: Tensor, correspondence: Tensor, queue: Tensor, temperature: float
) -> Tensor:
    """DenseCL's dense loss (Wang et al., 2021, Eq. 2): per query location s, InfoNCE of its dense projection r_s
    against the key projection at its corresponding location t* (positive) and the queue (negatives), averaged
    over the S locations and the B images.

    Args:
        query_dense: (B, D, h, w) the first view's dense projections (gradients flow).
        key_dense: (B, D, h', w') the second view's dense projections from the momentum encoder (constants).
        correspondence: (B, h*w) indices into the h'*w' key locations (:func:`dense_correspondence`).
        queue: (K, D) negatives: pooled dense keys of earlier batches.
        temperature: tau > 0.

    Returns:
        The 0-d mean loss.
    """
    b, d = query_dense.shape[:2]
    queries = query_dense.flatten(2).transpose(1, 2).reshape(-1, d)  # (B*S, D), image-major
    keys = key_dense.flatten(2).transpose(1, 2)  # (B, S', D)
    matched = torch.gather(keys, 1, correspondence.unsqueeze(2).expand(-1, -1, d)).reshape(-1, d)
    return info_nce_queue_loss(queries, matched, queue, temperature)


__all__ = ["dense_contrastive_loss", "dense_correspondence"]
