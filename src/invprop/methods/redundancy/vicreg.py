"""VICReg (Bardes, Ponce & LeCun, 2022) as a training method: ``method: vicreg``.

Invariance (mean squared difference of the two views' expander outputs), variance (a hinge on each dimension's
standard deviation) and covariance (off-diagonal covariance) terms with their published weights
(:func:`invprop.core.redundancy_losses.vicreg_loss`); each term is logged, and the report draws all three. In a
distributed run the embeddings are gathered first (global-batch statistics).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from invprop.core.crop_pairs import mean_over_pairs, view_pairs
from invprop.core.redundancy_losses import vicreg_loss
from invprop.methods.method import Batch, BuildContext, StepOutput
from invprop.methods.recipes import paper_lars, solo_lars
from invprop.methods.spec import Accumulation, Curve, MethodSpec, register_method
from invprop.methods.two_views import TwoViewMethod
from invprop.settings import NON_NEGATIVE, POSITIVE, Reference, setting


@dataclass
class VICRegSettings:
    """The ``vicreg`` section."""

    invariance_weight: float = setting(25.0, "lambda, weight of the invariance term", bounds=NON_NEGATIVE)
    variance_weight: float = setting(25.0, "mu, weight of the variance term", bounds=NON_NEGATIVE)
    covariance_weight: float = setting(1.0, "nu, weight of the covariance term", bounds=NON_NEGATIVE)
    target_std: float = setting(1.0, "gamma, the standard deviation the variance hinge asks for", bounds=POSITIVE)


_BARDES = "Bardes et al. (2022)"
#: VICReg's three logged terms, unweighted.
TERMS = ("loss_invariance", "loss_variance", "loss_covariance")
SPEC = MethodSpec(
    "VICReg: invariance, variance and covariance terms (Bardes et al., 2022)",
    VICRegSettings,
    section="vicreg",
    section_help="VICReg's three terms",
    multi_crop=True,
    accumulation=Accumulation.REFUSED,
    accumulation_note="the variance and covariance terms are statistics of the whole batch",
    recipes={
        "*": paper_lars(
            f"{_BARDES}, the authors' main_vicreg.py and README (1000 epochs: base 0.2 x B/256)",
            lr=0.2,
            weight_decay=1e-6,
            final_lr=0.001,
        ),
        "cifar10": solo_lars("vicreg", lr=0.3, weight_decay=1e-4),
        "digits": solo_lars("vicreg", lr=0.3, weight_decay=1e-4),
    },
    presets={
        "digits": {"model": {"head": "mlp3_bn", "hidden_dim": 512, "embedding_dim": 512}},
        "cifar10": {"model": {"head": "mlp3_bn", "hidden_dim": 2048, "embedding_dim": 2048}},
    },
    references={
        "*": {
            "vicreg.invariance_weight": Reference(25.0, f"{_BARDES}, Sec. 4.2"),
            "vicreg.variance_weight": Reference(25.0, f"{_BARDES}, Sec. 4.2"),
            "vicreg.covariance_weight": Reference(1.0, f"{_BARDES}, Sec. 4.2"),
            "vicreg.target_std": Reference(1.0, f"{_BARDES}, Eq. 1"),
        },
    },
    headline=("vicreg.invariance_weight", "vicreg.variance_weight", "vicreg.covariance_weight"),
    terms=TERMS,
    curves=(Curve("VICReg's terms (unweighted)", TERMS),),
)


@register_method("vicreg", SPEC)
class VICReg(TwoViewMethod):
    """``lambda s(Z, Z') + mu [v(Z) + v(Z')] + nu [c(Z) + c(Z')]`` (Bardes et al., 2022, Eq. 6).

    Args:
        settings: the ``vicreg`` section.
        encoder: backbone + expander.
        context: in a distributed run the embeddings of every process are gathered (global-batch statistics).
    """

    def __init__(self, settings: VICRegSettings, encoder: nn.Module, context: BuildContext) -> None:
        super().__init__(encoder, context)
        self.options = settings

    def training_step(self, batch: Batch) -> StepOutput:
        z = [self.gather(view) for view in self.encode_views(batch)]
        o = self.options
        weights = (o.invariance_weight, o.variance_weight, o.covariance_weight, o.target_std)
        per_pair = {(i, j): vicreg_loss(z[i], z[j], *weights) for i, j in view_pairs(len(z))}

        def mean(term: str) -> Tensor:
            return mean_over_pairs(lambda i, j: getattr(per_pair[i, j], term), list(per_pair))

        logged: dict[str, Tensor | float] = {key: mean(key.removeprefix("loss_")).detach() for key in TERMS}
        return StepOutput(mean("loss"), logged)


__all__ = ["SPEC", "TERMS", "VICReg", "VICRegSettings"]
