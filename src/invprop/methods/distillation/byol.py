"""BYOL (Grill et al., 2020) as a training method: ``method: byol``.

An online network (backbone + projector, then a predictor) and a target network, the momentum copy of backbone +
projector. The online prediction of each view regresses the target projection of the other view
(:func:`invprop.core.distillation_losses.byol_loss`), summed over both directions as in the paper. After each
optimiser step the target follows the online network with a momentum raised from ``byol.base_momentum`` towards
``byol.final_momentum`` on a cosine schedule over the run's steps (:func:`invprop.core.momentum.cosine_momentum`).
``byol.predictor=direct`` sets the predictor directly instead of learning it (DirectPred; ``method: directpred`` is
BYOL so, with its authors' recipe).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
from torch import nn

from invprop.core.crop_pairs import mean_over_pairs, target_pairs
from invprop.core.distillation_losses import byol_loss
from invprop.core.momentum import ema_update_, frozen_copy
from invprop.methods.citations import DIGITS_WIDTH, SOLO
from invprop.methods.distillation.predictors import (
    DIRECT_REFERENCES,
    PredictorSettings,
    StepCorrelation,
    build_predictor,
    step_correlation,
    update_direct_predictor,
)
from invprop.methods.method import Batch, BuildContext, StepOutput
from invprop.methods.recipes import paper_lars, solo_lars
from invprop.methods.spec import Curve, MethodSpec, register_method
from invprop.methods.two_views import TwoViewMethod, halves, momentum_schedule, split_views
from invprop.settings import AT_LEAST_ONE, FRACTION, Reference, setting


@dataclass
class BYOLSettings(PredictorSettings):
    """The ``byol`` section."""

    base_momentum: float = setting(0.99, "tau_base, the target's momentum at the first step", bounds=FRACTION)
    final_momentum: float = setting(1.0, "the target's momentum at the last step (cosine schedule)", bounds=FRACTION)
    predictor_hidden_dim: int = setting(4096, "hidden width of the predictor (D -> hidden -> D)", bounds=AT_LEAST_ONE)


class BYOLUpdate(NamedTuple):
    """What a step hands to :meth:`BYOL.after_step`: the target's momentum, and with ``predictor=direct`` the
    step's correlation of the online projections."""

    momentum: float
    correlation: StepCorrelation | None


_GRILL = "Grill et al. (2020)"
SPEC = MethodSpec(
    "BYOL: an online predictor regresses a momentum target network, no negatives (Grill et al., 2020)",
    BYOLSettings,
    section="byol",
    section_help="BYOL's predictor and target network",
    multi_crop=True,
    recipes={
        "*": paper_lars(
            f"{_GRILL}, the authors' byol/configs/byol.py (1000 epochs: base 0.2, wd 1.5e-6)",
            lr=0.2,
            weight_decay=1.5e-6,
        ),
        "cifar10": solo_lars("byol", lr=1.0, weight_decay=1e-5),
        "digits": solo_lars("byol", lr=1.0, weight_decay=1e-5),
    },
    presets={
        "digits": {
            "model": {"head": "mlp_bn", "hidden_dim": 1024, "embedding_dim": 128},
            "byol": {"predictor_hidden_dim": 1024},
        },
        "cifar10": {"model": {"head": "mlp_bn", "hidden_dim": 4096, "embedding_dim": 256}},
    },  # fmt: skip
    references={
        "*": {
            "byol.base_momentum": Reference(0.996, f"{_GRILL}, Sec. 3.2"),
            "byol.final_momentum": Reference(1.0, f"{_GRILL}, Sec. 3.2"),
            "byol.predictor_hidden_dim": Reference(4096, f"{_GRILL}, Sec. 3.3"),
            "byol.predictor": Reference("mlp", f"{_GRILL}, Sec. 3.3"),
            **{f"byol.{key}": ref for key, ref in DIRECT_REFERENCES.items()},
        },
    },
    deviations={
        "*": {"byol.base_momentum": f"{SOLO.format('byol')}: 0.99 for CIFAR-sized data and short schedules"},
        "digits": {"byol.predictor_hidden_dim": DIGITS_WIDTH},
    },
    headline=("byol.base_momentum", "model.head"),
    terms=("loss_byol", "momentum"),
    curves=(Curve("BYOL's regression loss", ("loss_byol",)), Curve("target momentum", ("momentum",), "momentum")),
)


@register_method("byol", SPEC)
class BYOL(TwoViewMethod):
    """Online prediction of the target's projection of the other view (Grill et al., 2020, Eq. 2, symmetrised).

    Args:
        settings: the ``byol`` section.
        encoder: backbone + projector (online).
        context: D (the predictor's width), the planned steps (the momentum's schedule), and the process group (the
            predictor's gradients are averaged over processes).
    """

    def __init__(self, settings: BYOLSettings, encoder: nn.Module, context: BuildContext) -> None:
        super().__init__(encoder, context)
        self.options = settings
        self.momentum = momentum_schedule(
            "byol.base_momentum", settings.base_momentum, settings.final_momentum, context
        )
        self.predictor = build_predictor(settings, context.embedding_dim, settings.predictor_hidden_dim)
        self.direct = settings.predictor == "direct"
        self.target = frozen_copy(encoder)

    def shared_modules(self) -> list[nn.Module]:
        return [self.predictor]

    def training_step(self, batch: Batch) -> StepOutput:
        groups = self.encode_groups(batch)
        predictions = split_views([self.predictor(group) for group in groups], batch.size)
        with torch.no_grad():
            targets = halves(self.target(batch.images))
        pairs = target_pairs(len(predictions))  # each full-size view's target, every other view's prediction
        loss = mean_over_pairs(lambda t, c: byol_loss(predictions[c], targets[t]), pairs, scale=2)
        momentum = self.momentum(batch.step)
        correlation = step_correlation(groups[0], self.distributed) if self.direct else None
        return StepOutput(loss, {"loss_byol": loss.detach(), "momentum": momentum}, BYOLUpdate(momentum, correlation))

    @torch.no_grad()
    def after_step(self, outputs: Sequence[StepOutput]) -> None:
        if outputs:  # once per optimiser step: the target follows, then a direct predictor is set
            ema_update_(self.target, self.encoder, outputs[-1].update.momentum)
            update_direct_predictor(self.predictor, [out.update.correlation for out in outputs])


__all__ = ["SPEC", "BYOL", "BYOLSettings", "BYOLUpdate"]
