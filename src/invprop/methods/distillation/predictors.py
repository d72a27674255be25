"""The predictor of the non-contrastive methods, learned or set directly (DirectPred: Tian, Chen & Ganguli, 2021):
the settings BYOL and SimSiam share for it, the module they build, and the correlation a step hands to its update.

``predictor: direct`` replaces the learned MLP by :class:`invprop.models.direct_predictor.DirectPredictor`: after
each optimiser step the running correlation of the online projections of both views -- over the global batch in a
distributed run, as the authors' single-process batch -- is updated and the predictor set from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
from torch import Tensor, nn

from invprop.core.direct_prediction import correlation_sum
from invprop.distributed.collectives import all_reduce_sum
from invprop.models.direct_predictor import DirectPredictor
from invprop.models.heads import predictor
from invprop.settings import FRACTION, NON_NEGATIVE, Reference, setting

#: The predictors, by the value of the ``predictor`` setting.
PREDICTORS = {
    "mlp": "learned: Linear -> BatchNorm -> ReLU -> Linear",
    "direct": "DirectPred: linear, set from the eigen-decomposition of the projections' running correlation",
}
_TIAN = "Tian et al. (2021)"
#: The published values of the DirectPred settings (dotted under a method's section).
DIRECT_REFERENCES = {
    "direct_rho": Reference(0.3, f"{_TIAN}, Eq. 19 and the authors' README command (dyn_lambda)"),
    "direct_eps": Reference(0.1, f"{_TIAN}, Tables 6 and 8 (their best; the README command uses 0.01)"),
}


@dataclass
class PredictorSettings:
    """The predictor settings of BYOL's and SimSiam's sections (first in each)."""

    predictor: str = setting("mlp", "the predictor: mlp (learned) or direct (DirectPred, Tian et al. 2021)",
                             choices=PREDICTORS)  # fmt: skip
    direct_rho: float = setting(
        0.3, "with predictor=direct: the running correlation's weight of its old estimate (rho)", bounds=FRACTION
    )
    direct_eps: float = setting(
        0.1, "with predictor=direct: the boost of the correlation's weak directions (epsilon)", bounds=NON_NEGATIVE
    )


def build_predictor(settings: PredictorSettings, dim: int, hidden_dim: int) -> nn.Module:
    """The learned MLP predictor (``dim -> hidden_dim -> dim``) or DirectPred's."""
    if settings.predictor == "direct":
        return DirectPredictor(dim, settings.direct_rho, settings.direct_eps)
    return predictor(dim, hidden_dim)


class StepCorrelation(NamedTuple):
    """One training step's share of the correlation: the sum of its rows' outer products, and the rows."""

    total: Tensor
    rows: float


def step_correlation(projections: Tensor, distributed: bool) -> StepCorrelation:
    """The correlation of one step's online projections (both views' rows), summed over processes."""
    total = correlation_sum(projections)
    rows = torch.tensor(float(projections.shape[0]), device=total.device)
    if distributed:
        total, rows = all_reduce_sum(total), all_reduce_sum(rows)
    return StepCorrelation(total, float(rows))


def update_direct_predictor(module: nn.Module, steps: Sequence[StepCorrelation | None]) -> None:
    """After an optimiser step: a DirectPred predictor takes the correlation of all the step's batches (every row
    counted once, however the batches were split under gradient accumulation); a learned one is left to the
    optimiser."""
    known = [s for s in steps if s is not None]
    if isinstance(module, DirectPredictor) and known:
        module.update_(sum((s.total for s in known[1:]), known[0].total) / sum(s.rows for s in known))


__all__ = [
    "DIRECT_REFERENCES",
    "PREDICTORS",
    "PredictorSettings",
    "StepCorrelation",
    "build_predictor",
    "step_correlation",
    "update_direct_predictor",
]
