"""Layer 1: pure tensor code -- memory bank, kNN graph and propagation, the InvP objective, kNN classification."""

from invprop.core.bank import BANK_DTYPES, MemoryBank
from invprop.core.graph import knn_graph, online_neighbors, propagate
from invprop.core.knn_classifier import knn_class_scores, topk_accuracy
from invprop.core.losses import (
    InvariancePropagationLoss,
    InvPLossOutput,
    instance_log_probability,
    instance_loss,
    invariance_loss,
    masked_logsumexp,
    select_positives,
    set_log_probability,
    total_loss,
)
from invprop.core.rampup import binary_rampup, gaussian_rampup, rampup_weight
from invprop.core.similarity import background_logits, gathered_dot, topk_similarities

__all__ = [
    "BANK_DTYPES",
    "InvPLossOutput",
    "InvariancePropagationLoss",
    "MemoryBank",
    "background_logits",
    "binary_rampup",
    "gathered_dot",
    "gaussian_rampup",
    "instance_log_probability",
    "instance_loss",
    "invariance_loss",
    "knn_class_scores",
    "knn_graph",
    "masked_logsumexp",
    "online_neighbors",
    "propagate",
    "rampup_weight",
    "select_positives",
    "set_log_probability",
    "topk_accuracy",
    "topk_similarities",
    "total_loss",
]
