"""Barlow Twins (Zbontar, Jing, Misra, LeCun & Deny, 2021) as a training method: ``method: barlowtwins``.

The cross-correlation matrix of the two views' projections, each standardised along the batch, is pulled towards
the identity (:func:`invprop.core.redundancy_losses.barlow_twins_loss`). In a distributed run the projections are
gathered first, so the statistics are those of the global batch. ``barlowtwins.scale`` multiplies the loss
(solo-learn's ``scale_loss`` for CIFAR; 1 in the paper).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from invprop.core.redundancy_losses import barlow_twins_loss
from invprop.methods.base import METHODS, BuildContext, MethodSpec, StepOutput
from invprop.methods.field_published import FIELD_DEVIATIONS, FIELD_PRESETS, FIELD_REFERENCES
from invprop.methods.two_views import TwoViewMethod
from invprop.settings import NON_NEGATIVE, POSITIVE, section, setting


@dataclass
class BarlowTwinsOptions:
    """The ``barlowtwins`` section."""

    off_diagonal_weight: float = setting(0.0051, "lambda, weight of the off-diagonal (redundancy) term",
                                         bounds=NON_NEGATIVE)  # fmt: skip
    scale: float = setting(0.1, "factor on the whole loss", bounds=POSITIVE)


@dataclass
class BarlowTwinsSettings:
    barlowtwins: BarlowTwinsOptions = section(BarlowTwinsOptions, "Barlow Twins' loss")


class BarlowTwins(TwoViewMethod):
    """``scale x [sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2]`` (Zbontar et al., 2021, Eq. 1).

    Args:
        encoder: backbone + projector.
        options: the ``barlowtwins`` section.
        distributed: gather the projections of every process (global-batch statistics).
    """

    def __init__(self, encoder: nn.Module, options: BarlowTwinsOptions, distributed: bool = False) -> None:
        super().__init__(encoder, distributed)
        self.options = options

    def training_step(self, indices: Tensor, images: Tensor, epoch: int) -> StepOutput:
        z1, z2 = self.pair(images)
        loss = self.options.scale * barlow_twins_loss(
            self.gather(z1), self.gather(z2), self.options.off_diagonal_weight
        )
        return StepOutput(loss, {"loss_barlow": loss.detach()})


def build_barlow_twins(settings: BarlowTwinsSettings, encoder: nn.Module, context: BuildContext) -> BarlowTwins:
    return BarlowTwins(encoder, settings.barlowtwins, context.distributed)


METHODS.register("barlowtwins")(
    MethodSpec(
        "Barlow Twins: the views' cross-correlation towards the identity (Zbontar et al., 2021)",
        BarlowTwinsSettings,
        build_barlow_twins,
        presets=FIELD_PRESETS["barlowtwins"],
        headline=("barlowtwins.off_diagonal_weight", "model.head"),
        references=FIELD_REFERENCES["barlowtwins"],
        deviations=FIELD_DEVIATIONS["barlowtwins"],
    )
)

__all__ = ["BarlowTwins", "BarlowTwinsOptions", "BarlowTwinsSettings", "build_barlow_twins"]
