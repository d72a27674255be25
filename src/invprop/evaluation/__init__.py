"""Layer 5: evaluation protocols on trained checkpoints, and the ablation tool."""

from invprop.evaluation.ablation import VARIANTS, parse_variants, run_ablation
from invprop.evaluation.knn import evaluate_knn

__all__ = ["VARIANTS", "evaluate_knn", "parse_variants", "run_ablation"]
