"""Objectives of the clustering methods, as pure functions: SwAV's swapped prediction, PCL's prototype term of
ProtoNCE and DeeperCluster's hierarchical loss. The assignments they are given (Sinkhorn codes, k-means clusters) come from :mod:`invprop.core.clustering`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from invprop.settings import POSITIVE, require


def swapped_prediction_loss(scores: list[Tensor], codes: list[Tensor], temperature: float) -> Tensor:
    """SwAV's swapped prediction (Caron et al., 2020, Eq. 1-2) over multi-crop views.

    For each view i that has codes q_i and every other view v: ``l(z_v, q_i) = -sum_k q_i[k] log p_v[k]``, with
    ``p_v = softmax(z_v . c / tau)``. The loss is the mean over the (i, v != i) pairs and over the batch.

    Args:
        scores: per view (B, K) scores z_v . c_k of the normalised embeddings against the normalised prototypes.
        codes: per view that is assigned (the first ``len(codes)`` views, SwAV's two large crops), (B, K) codes.
        temperature: tau.

    Returns:
        The 0-d mean loss.
    """
    require("temperature", temperature, POSITIVE)
    if not 1 <= len(codes) <= len(scores) or len(scores) < 2:
        raise ValueError(f"swapped prediction needs at least 2 views and 1 to {len(scores)} assigned ones")
    log_p = [F.log_softmax(s.float() / temperature, dim=1) for s in scores]
    terms = [
        -(q.float() * log_p[v]).sum(dim=1).mean() for i, q in enumerate(codes) for v in range(len(scores)) if v != i
    ]
    return torch.stack(terms).mean()


def proto_nce_loss(embeddings: Tensor, centroids: Tensor, concentration: Tensor, assignments: Tensor) -> Tensor:
    """The prototype term of ProtoNCE for one clustering (Li et al., 2021, PCL, Eq. 11), averaged over the batch.

    ``-log exp(v . c_s / phi_s) / sum_j exp(v . c_j / phi_j)`` where c_s is the prototype of the sample's cluster and
    the sum runs over the given prototypes (the sample's own among them).

    Args:
        embeddings: (B, D) normalised embeddings v.
        centroids: (K, D) normalised prototypes c.
        concentration: (K,) their concentrations phi.
        assignments: (B,) index of each sample's prototype among the K.

    Returns:
        The 0-d mean loss.
    """
    logits = (embeddings.float() @ centroids.float().T) / concentration.float().unsqueeze(0)
    return F.cross_entropy(logits, assignments)


def hierarchical_cluster_loss(
    super_logits: Tensor, sub_logits: Tensor, super_labels: Tensor, sub_labels: Tensor
) -> Tensor:
    """DeeperCluster's loss (Caron et al., 2019, Eq. 3): ``l(V f(x_n), y_n) + sum_s 1[y_n = s] l(W_s f(x_n), z_n)``,
    the cross-entropy of the super-class plus that of the sub-class under the sample's own super-class head; the
    mean over the batch, in float32 with autocast off.

    Args:
        super_logits: (B, S), ``V f(x)`` over the S super-classes.
        sub_logits: (B, K_s), ``W_{y_n} f(x_n)``: each sample's logits from the head of its own super-class.
        super_labels: (B,) long, y_n in ``[0, S)``.
        sub_labels: (B,) long, z_n in ``[0, K_s)``.

    Returns:
        The 0-d mean loss.
    """
    with torch.autocast(device_type=super_logits.device.type, enabled=False):
        return F.cross_entropy(super_logits.float(), super_labels) + F.cross_entropy(sub_logits.float(), sub_labels)


__all__ = ["hierarchical_cluster_loss", "proto_nce_loss", "swapped_prediction_loss"]
