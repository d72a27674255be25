"""SimCLR (Chen, Kornblith, Norouzi & Hinton, 2020) as a training method: ``method: simclr``.

Two views per image through the encoder (backbone + the projector ``model.head``) and NT-Xent over the 2B - 2
in-batch negatives (:func:`invprop.core.contrastive_losses.nt_xent_loss`). In a distributed run the projections are
gathered, so every process contrasts against the global batch, as the paper's large-batch runs do. Its settings
are one section, ``simclr``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from invprop.core.contrastive_losses import nt_xent_loss
from invprop.methods.base import METHODS, BuildContext, MethodSpec, StepOutput
from invprop.methods.field_published import FIELD_DEVIATIONS, FIELD_PRESETS, FIELD_REFERENCES
from invprop.methods.two_views import TwoViewMethod
from invprop.settings import POSITIVE, section, setting


@dataclass
class SimCLROptions:
    """The ``simclr`` section."""

    temperature: float = setting(0.2, "tau of NT-Xent", bounds=POSITIVE)


@dataclass
class SimCLRSettings:
    simclr: SimCLROptions = section(SimCLROptions, "SimCLR's contrastive loss")


class SimCLR(TwoViewMethod):
    """NT-Xent between the two views' projections (Chen et al., 2020, Eq. 1).

    Args:
        encoder: backbone + projector.
        temperature: tau.
        distributed: gather the projections of every process (global-batch negatives).
    """

    def __init__(self, encoder: nn.Module, temperature: float = 0.2, distributed: bool = False) -> None:
        super().__init__(encoder, distributed)
        self.temperature = temperature

    def training_step(self, indices: Tensor, images: Tensor, epoch: int) -> StepOutput:
        z1, z2 = self.pair(images)
        loss = nt_xent_loss(self.gather(z1), self.gather(z2), self.temperature)
        return StepOutput(loss, {"loss_nce": loss.detach()})


def build_simclr(settings: SimCLRSettings, encoder: nn.Module, context: BuildContext) -> SimCLR:
    return SimCLR(encoder, settings.simclr.temperature, context.distributed)


METHODS.register("simclr")(
    MethodSpec(
        "SimCLR: NT-Xent over in-batch negatives (Chen et al., 2020)",
        SimCLRSettings,
        build_simclr,
        presets=FIELD_PRESETS["simclr"],
        headline=("simclr.temperature", "model.head"),
        references=FIELD_REFERENCES["simclr"],
        deviations=FIELD_DEVIATIONS["simclr"],
    )
)

__all__ = ["SimCLR", "SimCLROptions", "SimCLRSettings", "build_simclr"]
