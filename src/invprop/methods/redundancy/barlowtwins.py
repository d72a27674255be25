"""Barlow Twins (Zbontar, Jing, Misra, LeCun & Deny, 2021) as a training method: ``method: barlowtwins``.

The cross-correlation matrix of the two views' projections, each standardised along the batch, is pulled towards
the identity (:func:`invprop.core.redundancy_losses.barlow_twins_loss`). In a distributed run the projections are
gathered first, so the statistics are those of the global batch. ``barlowtwins.scale`` multiplies the loss
(solo-learn's ``scale_loss`` for CIFAR; 1 in the paper).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from invprop.core.crop_pairs import mean_over_pairs, view_pairs
from invprop.core.redundancy_losses import barlow_twins_loss
from invprop.methods.citations import SOLO
from invprop.methods.method import Batch, BuildContext, StepOutput
from invprop.methods.recipes import paper_lars, solo_lars
from invprop.methods.spec import Accumulation, Curve, MethodSpec, SmokeRun, register_method
from invprop.methods.two_views import TwoViewMethod
from invprop.settings import NON_NEGATIVE, POSITIVE, Reference, setting


@dataclass
class BarlowTwinsSettings:
    """The ``barlowtwins`` section."""

    off_diagonal_weight: float = setting(0.0051, "lambda, weight of the off-diagonal (redundancy) term",
                                         bounds=NON_NEGATIVE)  # fmt: skip
    scale: float = setting(0.1, "factor on the whole loss", bounds=POSITIVE)


_ZBONTAR = "Zbontar et al. (2021)"
SPEC = MethodSpec(
    "Barlow Twins: the views' cross-correlation towards the identity (Zbontar et al., 2021)",
    BarlowTwinsSettings,
    section="barlowtwins",
    section_help="Barlow Twins' loss",
    multi_crop=True,
    accumulation=Accumulation.REFUSED,
    accumulation_note="the cross-correlation is a statistic of the whole batch",
    recipes={
        "*": paper_lars(
            f"{_ZBONTAR}, the authors' main.py (weights 0.2 x B/256, biases and BN 0.0048 x B/256, end at 1/1000)",
            lr=0.2,
            weight_decay=1e-6,
            norm_bias_lr_scale=0.0048 / 0.2,
            final_lr=0.001,
        ),
        "cifar10": solo_lars("barlow", lr=0.3, weight_decay=1e-4),
        "digits": solo_lars("barlow", lr=0.3, weight_decay=1e-4),
    },
    presets={
        "digits": {"model": {"head": "mlp3_bn", "hidden_dim": 512, "embedding_dim": 512}},
        "cifar10": {"model": {"head": "mlp3_bn", "hidden_dim": 2048, "embedding_dim": 2048}},
    },
    references={
        "*": {
            "barlowtwins.off_diagonal_weight": Reference(0.0051, f"{_ZBONTAR}, the authors' code (lambd)"),
            "barlowtwins.scale": Reference(1.0, f"{_ZBONTAR}, Eq. 1 (no factor)"),
        },
    },
    deviations={"*": {"barlowtwins.scale": f"{SOLO.format('barlow')}: scale_loss 0.1 with its 2048-wide projector"}},
    headline=("barlowtwins.off_diagonal_weight", "model.head"),
    terms=("loss_barlow",),
    curves=(Curve("Barlow Twins' loss", ("loss_barlow",)),),
    smoke=SmokeRun(epochs=6),
)


@register_method("barlowtwins", SPEC)
class BarlowTwins(TwoViewMethod):
    """``scale x [sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2]`` (Zbontar et al., 2021, Eq. 1).

    Args:
        settings: the ``barlowtwins`` section.
        encoder: backbone + projector.
        context: in a distributed run the projections of every process are gathered (global-batch statistics).
    """

    def __init__(self, settings: BarlowTwinsSettings, encoder: nn.Module, context: BuildContext) -> None:
        super().__init__(encoder, context)
        self.options = settings

    def training_step(self, batch: Batch) -> StepOutput:
        z = [self.gather(view) for view in self.encode_views(batch)]
        o = self.options
        loss = mean_over_pairs(lambda i, j: barlow_twins_loss(z[i], z[j], o.off_diagonal_weight), view_pairs(len(z)))
        loss = o.scale * loss
        return StepOutput(loss, {"loss_barlow": loss.detach()})


__all__ = ["SPEC", "BarlowTwins", "BarlowTwinsSettings"]
