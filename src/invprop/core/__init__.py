"""Layer 1: the methods' mathematics, pure tensors -- memory bank, kNN graph and propagation, the InvP objective, the
cosine instance classifier, the weighted kNN classifier, ramp-ups and propagation diagnostics.

The row-level machinery both objectives are built on (a batch against N rows, whole or split over processes) is the
package :mod:`invprop.distributed`.
"""

from invprop.core.bank import BANK_DTYPES, MemoryBank
from invprop.core.cosine_classifier import CosineInstanceClassifier
from invprop.core.graph import knn_graph, online_neighbors, propagate
from invprop.core.invp_losses import (
    InvariancePropagationLoss,
    InvPLossOutput,
    instance_log_probability,
    instance_loss,
    invariance_loss,
    select_positives,
    set_log_probability,
    total_loss,
)
from invprop.core.knn_classifier import knn_class_scores, topk_accuracy
from invprop.core.rampup import binary_rampup, gaussian_rampup, rampup_weight

__all__ = [
    "BANK_DTYPES",
    "CosineInstanceClassifier",
    "InvPLossOutput",
    "InvariancePropagationLoss",
    "MemoryBank",
    "binary_rampup",
    "gaussian_rampup",
    "instance_log_probability",
    "instance_loss",
    "invariance_loss",
    "knn_class_scores",
    "knn_graph",
    "online_neighbors",
    "propagate",
    "rampup_weight",
    "select_positives",
    "set_log_probability",
    "topk_accuracy",
    "total_loss",
]
