"""VICReg (Bardes, Ponce & LeCun, 2022) as a training method: ``method: vicreg``.

Invariance (mean squared difference of the two views' expander outputs), variance (a hinge on each dimension's
standard deviation) and covariance (off-diagonal covariance) terms with their published weights
(:func:`invprop.core.redundancy_losses.vicreg_loss`); each term is logged. In a distributed run the embeddings
are gathered first (global-batch statistics).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from invprop.core.redundancy_losses import vicreg_loss
from invprop.methods.base import METHODS, BuildContext, MethodSpec, StepOutput
from invprop.methods.field_published import FIELD_DEVIATIONS, FIELD_PRESETS, FIELD_REFERENCES
from invprop.methods.two_views import TwoViewMethod
from invprop.settings import NON_NEGATIVE, POSITIVE, section, setting


@dataclass
class VICRegOptions:
    """The ``vicreg`` section."""

    invariance_weight: float = setting(25.0, "lambda, weight of the invariance term", bounds=NON_NEGATIVE)
    variance_weight: float = setting(25.0, "mu, weight of the variance term", bounds=NON_NEGATIVE)
    covariance_weight: float = setting(1.0, "nu, weight of the covariance term", bounds=NON_NEGATIVE)
    target_std: float = setting(1.0, "gamma, the standard deviation the variance hinge asks for", bounds=POSITIVE)


@dataclass
class VICRegSettings:
    vicreg: VICRegOptions = section(VICRegOptions, "VICReg's three terms")


class VICReg(TwoViewMethod):
    """``lambda s(Z, Z') + mu [v(Z) + v(Z')] + nu [c(Z) + c(Z')]`` (Bardes et al., 2022, Eq. 6).

    Args:
        encoder: backbone + expander.
        options: the ``vicreg`` section.
        distributed: gather the embeddings of every process (global-batch statistics).
    """

    def __init__(self, encoder: nn.Module, options: VICRegOptions, distributed: bool = False) -> None:
        super().__init__(encoder, distributed)
        self.options = options

    def training_step(self, indices: Tensor, images: Tensor, epoch: int) -> StepOutput:
        z1, z2 = self.pair(images)
        o = self.options
        terms = vicreg_loss(
            self.gather(z1), self.gather(z2), o.invariance_weight, o.variance_weight, o.covariance_weight, o.target_std
        )
        logged = {
            "loss_invariance": terms.invariance.detach(),
            "loss_variance": terms.variance.detach(),
            "loss_covariance": terms.covariance.detach(),
        }
        return StepOutput(terms.loss, logged)


def build_vicreg(settings: VICRegSettings, encoder: nn.Module, context: BuildContext) -> VICReg:
    return VICReg(encoder, settings.vicreg, context.distributed)


METHODS.register("vicreg")(
    MethodSpec(
        "VICReg: invariance, variance and covariance terms (Bardes et al., 2022)",
        VICRegSettings,
        build_vicreg,
        presets=FIELD_PRESETS["vicreg"],
        headline=("vicreg.invariance_weight", "vicreg.variance_weight", "vicreg.covariance_weight"),
        references=FIELD_REFERENCES["vicreg"],
        deviations=FIELD_DEVIATIONS["vicreg"],
    )
)

__all__ = ["VICReg", "VICRegOptions", "VICRegSettings", "build_vicreg"]
