"""BYOL (Grill et al., 2020) as a training method: ``method: byol``.

An online network (backbone + projector, then a predictor) and a target network, the momentum copy of backbone +
projector. The online prediction of each view regresses the target projection of the other view
(:func:`invprop.core.distillation_losses.byol_loss`), summed over both directions as in the paper. After each
optimiser step the target follows the online network with a momentum raised from ``byol.base_momentum`` towards
``byol.final_momentum`` on a cosine schedule over the run's steps (:func:`invprop.core.momentum.cosine_momentum`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from invprop.core.distillation_losses import byol_loss
from invprop.core.momentum import cosine_momentum, ema_update_, frozen_copy
from invprop.methods.base import METHODS, BuildContext, MethodSpec, StepOutput
from invprop.methods.field_published import FIELD_DEVIATIONS, FIELD_PRESETS, FIELD_REFERENCES
from invprop.methods.two_views import TwoViewMethod
from invprop.models.heads import predictor
from invprop.settings import AT_LEAST_ONE, FRACTION, section, setting


@dataclass
class BYOLOptions:
    """The ``byol`` section."""

    base_momentum: float = setting(0.99, "tau_base, the target's momentum at the first step", bounds=FRACTION)
    final_momentum: float = setting(1.0, "the target's momentum at the last step (cosine schedule)", bounds=FRACTION)
    predictor_hidden_dim: int = setting(4096, "hidden width of the predictor (D -> hidden -> D)", bounds=AT_LEAST_ONE)


@dataclass
class BYOLSettings:
    byol: BYOLOptions = section(BYOLOptions, "BYOL's predictor and target network")


class BYOL(TwoViewMethod):
    """Online prediction of the target's projection of the other view (Grill et al., 2020, Eq. 2, symmetrised).

    Args:
        encoder: backbone + projector (online).
        embedding_dim: D of the projections.
        options: the ``byol`` section.
        distributed: average the predictor's gradients over processes.
    """

    def __init__(self, encoder: nn.Module, embedding_dim: int, options: BYOLOptions, distributed: bool = False) -> None:
        super().__init__(encoder, distributed)
        self.options = options
        self.predictor = predictor(embedding_dim, options.predictor_hidden_dim)
        self.target = frozen_copy(encoder)

    def shared_modules(self) -> list[nn.Module]:
        return [self.predictor]

    def momentum(self) -> float:
        """The target's momentum at the current step."""
        o = self.options
        return cosine_momentum(o.base_momentum, int(self.step), self.total_steps, o.final_momentum)

    def training_step(self, indices: Tensor, images: Tensor, epoch: int) -> StepOutput:
        p1, p2 = self.halves(self.predictor(self.encode(images)))
        with torch.no_grad():
            t1, t2 = self.halves(self.target(images))
        loss = byol_loss(p1, t2) + byol_loss(p2, t1)
        return StepOutput(loss, {"loss_byol": loss.detach(), "momentum": torch.tensor(self.momentum())})

    @torch.no_grad()
    def after_step(self) -> None:
        ema_update_(self.target, self.encoder, self.momentum())
        super().after_step()


def build_byol(settings: BYOLSettings, encoder: nn.Module, context: BuildContext) -> BYOL:
    return BYOL(encoder, context.embedding_dim, settings.byol, context.distributed)


METHODS.register("byol")(
    MethodSpec(
        "BYOL: an online predictor regresses a momentum target network, no negatives (Grill et al., 2020)",
        BYOLSettings,
        build_byol,
        presets=FIELD_PRESETS["byol"],
        headline=("byol.base_momentum", "model.head"),
        references=FIELD_REFERENCES["byol"],
        deviations=FIELD_DEVIATIONS["byol"],
    )
)

__all__ = ["BYOL", "BYOLOptions", "BYOLSettings", "build_byol"]
