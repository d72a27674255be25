"""SimSiam (Chen & He, 2021) as a training method: ``method: simsiam``.

Backbone + projector, then a bottleneck predictor; each view's prediction is pulled towards the other view's
projection under a stop-gradient (:func:`invprop.core.distillation_losses.negative_cosine`), symmetrised with
weights 1/2. No negatives, no momentum encoder. Every step logs ``output_std``, the paper's collapse indicator
(the per-channel standard deviation of the normalised projections; the history holds its epoch mean): near
1/sqrt(D) when healthy, 0 when collapsed. The recipes keep the predictor's learning rate fixed
(``optim.fixed_lr_modules``), as the paper does. ``simsiam.predictor=direct`` sets the predictor directly instead of
learning it (DirectPred, Tian et al., 2021).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from invprop.core.crop_pairs import mean_over_pairs, target_pairs
from invprop.core.distillation_losses import negative_cosine, normalised_output_std
from invprop.methods.citations import DIGITS_WIDTH
from invprop.methods.distillation.predictors import (
    DIRECT_REFERENCES,
    PredictorSettings,
    build_predictor,
    step_correlation,
    update_direct_predictor,
)
from invprop.methods.method import Batch, BuildContext, StepOutput
from invprop.methods.recipes import paper_sgd, solo_sgd
from invprop.methods.spec import Curve, MethodSpec, register_method
from invprop.methods.two_views import TwoViewMethod, split_views
from invprop.settings import AT_LEAST_ONE, Reference, setting


@dataclass
class SimSiamSettings(PredictorSettings):
    """The ``simsiam`` section."""

    predictor_hidden_dim: int = setting(
        512, "bottleneck width of the predictor (D -> hidden -> D)", bounds=AT_LEAST_ONE
    )


SPEC = MethodSpec(
    "SimSiam: a predictor and a stop-gradient, no negatives, no momentum encoder (Chen & He, 2021)",
    SimSiamSettings,
    section="simsiam",
    section_help="SimSiam's predictor",
    multi_crop=True,
    recipes={
        "*": paper_sgd(
            "Chen & He (2021), the authors' main_simsiam.py and README (0.05 x B/256, --fix-pred-lr)",
            lr=0.05,
            weight_decay=1e-4,
            fixed_lr_modules=["predictor"],
        ),
        "cifar10": solo_sgd("simsiam", lr=0.5, weight_decay=1e-5, fixed_lr_modules=["predictor"]),
        "digits": solo_sgd("simsiam", lr=0.5, weight_decay=1e-5, fixed_lr_modules=["predictor"]),
    },
    presets={
        "digits": {
            "model": {"head": "mlp3_bn_out", "hidden_dim": 256, "embedding_dim": 256},
            "simsiam": {"predictor_hidden_dim": 64},
        },
        "cifar10": {"model": {"head": "mlp3_bn_out", "hidden_dim": 2048, "embedding_dim": 2048}},
    },  # fmt: skip
    references={
        "*": {
            "simsiam.predictor_hidden_dim": Reference(512, "Chen & He (2021), Sec. 3 (2048 -> 512 -> 2048)"),
            "simsiam.predictor": Reference("mlp", "Chen & He (2021), Sec. 3"),
            **{f"simsiam.{key}": ref for key, ref in DIRECT_REFERENCES.items()},
        }
    },
    deviations={"digits": {"simsiam.predictor_hidden_dim": f"{DIGITS_WIDTH} (the paper's 1/4 bottleneck of 256)"}},
    headline=("simsiam.predictor_hidden_dim", "model.head"),
    terms=("loss_simsiam", "output_std"),
    curves=(
        Curve("SimSiam's loss", ("loss_simsiam",)),
        Curve("collapse indicator", ("output_std",), "std of the normalised projections"),
    ),
)


@register_method("simsiam", SPEC)
class SimSiam(TwoViewMethod):
    """``D(p1, sg(z2))/2 + D(p2, sg(z1))/2`` (Chen & He, 2021, Eq. 3).

    Args:
        settings: the ``simsiam`` section (the predictor's bottleneck).
        encoder: backbone + projector.
        context: D (the projections' width) and the process group (the predictor's gradients are averaged).
    """

    def __init__(self, settings: SimSiamSettings, encoder: nn.Module, context: BuildContext) -> None:
        super().__init__(encoder, context)
        self.predictor = build_predictor(settings, context.embedding_dim, settings.predictor_hidden_dim)
        self.direct = settings.predictor == "direct"

    def shared_modules(self) -> list[nn.Module]:
        return [self.predictor]

    def training_step(self, batch: Batch) -> StepOutput:
        groups = self.encode_groups(batch)
        z = split_views(groups, batch.size)
        p = split_views([self.predictor(group) for group in groups], batch.size)
        loss = mean_over_pairs(lambda t, c: negative_cosine(p[c], z[t]), target_pairs(len(z)))
        correlation = step_correlation(groups[0], self.distributed) if self.direct else None
        terms: dict[str, Tensor | float] = {"loss_simsiam": loss.detach(), "output_std": normalised_output_std(z[0])}
        return StepOutput(loss, terms, correlation)

    @torch.no_grad()
    def after_step(self, outputs: Sequence[StepOutput]) -> None:
        update_direct_predictor(self.predictor, [out.update for out in outputs])  # once per optimiser step


__all__ = ["SPEC", "SimSiam", "SimSiamSettings"]
