"""Layer 5: evaluation protocols on trained checkpoints."""

from invprop.evaluation.knn import evaluate_knn

__all__ = ["evaluate_knn"]
