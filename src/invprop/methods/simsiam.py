"""SimSiam (Chen & He, 2021) as a training method: ``method: simsiam``.

Backbone + projector, then a bottleneck predictor; each view's prediction is pulled towards the other view's
projection under a stop-gradient (:func:`invprop.core.distillation_losses.negative_cosine`), symmetrised with
weights 1/2. No negatives, no momentum encoder. Every step logs ``output_std``, the paper's collapse indicator
(the per-channel standard deviation of the normalised projections; the history holds its epoch mean): near
1/sqrt(D) when healthy, 0 when collapsed. The paper keeps the predictor's learning rate fixed; here it follows the
run's schedule with the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from invprop.core.distillation_losses import negative_cosine, normalised_output_std
from invprop.methods.base import METHODS, BuildContext, MethodSpec, StepOutput
from invprop.methods.field_published import FIELD_DEVIATIONS, FIELD_PRESETS, FIELD_REFERENCES
from invprop.methods.two_views import TwoViewMethod
from invprop.models.heads import predictor
from invprop.settings import AT_LEAST_ONE, section, setting


@dataclass
class SimSiamOptions:
    """The ``simsiam`` section."""

    predictor_hidden_dim: int = setting(
        512, "bottleneck width of the predictor (D -> hidden -> D)", bounds=AT_LEAST_ONE
    )


@dataclass
class SimSiamSettings:
    simsiam: SimSiamOptions = section(SimSiamOptions, "SimSiam's predictor")


class SimSiam(TwoViewMethod):
    """``D(p1, sg(z2))/2 + D(p2, sg(z1))/2`` (Chen & He, 2021, Eq. 3).

    Args:
        encoder: backbone + projector.
        embedding_dim: D of the projections.
        predictor_hidden_dim: the predictor's bottleneck.
        distributed: average the predictor's gradients over processes.
    """

    def __init__(
        self, encoder: nn.Module, embedding_dim: int, predictor_hidden_dim: int = 512, distributed: bool = False
    ) -> None:
        super().__init__(encoder, distributed)
        self.predictor = predictor(embedding_dim, predictor_hidden_dim)

    def shared_modules(self) -> list[nn.Module]:
        return [self.predictor]

    def training_step(self, indices: Tensor, images: Tensor, epoch: int) -> StepOutput:
        z = self.encode(images)
        z1, z2 = self.halves(z)
        p1, p2 = self.halves(self.predictor(z))
        loss = negative_cosine(p1, z2) / 2 + negative_cosine(p2, z1) / 2
        return StepOutput(loss, {"loss_simsiam": loss.detach(), "output_std": normalised_output_std(z1)})


def build_simsiam(settings: SimSiamSettings, encoder: nn.Module, context: BuildContext) -> SimSiam:
    return SimSiam(encoder, context.embedding_dim, settings.simsiam.predictor_hidden_dim, context.distributed)


METHODS.register("simsiam")(
    MethodSpec(
        "SimSiam: a predictor and a stop-gradient, no negatives, no momentum encoder (Chen & He, 2021)",
        SimSiamSettings,
        build_simsiam,
        presets=FIELD_PRESETS["simsiam"],
        headline=("simsiam.predictor_hidden_dim", "model.head"),
        references=FIELD_REFERENCES["simsiam"],
        deviations=FIELD_DEVIATIONS["simsiam"],
    )
)

__all__ = ["SimSiam", "SimSiamOptions", "SimSiamSettings", "build_simsiam"]
