"""Layer 5: evaluation protocols on trained checkpoints, and the ablation tool."""

from typing import Any, Callable

from invprop.evaluation.ablation import parse_variants, run_ablation
from invprop.evaluation.dense import evaluate_dense
from invprop.evaluation.distill import evaluate_distill
from invprop.evaluation.finetune import evaluate_semi, evaluate_transfer
from invprop.evaluation.knn import evaluate_knn
from invprop.evaluation.label_free import evaluate_label_free
from invprop.evaluation.linear import evaluate_linear

#: ``invprop eval PROTOCOL``: each takes (checkpoint or None, dataset=None, overrides=None) and returns its results.
PROTOCOLS: dict[str, Callable[..., dict[str, Any]]] = {
    "dense": evaluate_dense,
    "distill": evaluate_distill,
    "knn": evaluate_knn,
    "label-free": evaluate_label_free,
    "linear": evaluate_linear,
    "semi": evaluate_semi,
    "transfer": evaluate_transfer,
}

__all__ = [
    "PROTOCOLS",
    "evaluate_dense",
    "evaluate_distill",
    "evaluate_knn",
    "evaluate_label_free",
    "evaluate_linear",
    "evaluate_semi",
    "evaluate_transfer",
    "parse_variants",
    "run_ablation",
]
