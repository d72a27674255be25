"""DirectPred (Tian, Chen & Ganguli, ICML 2021) as a training method: ``method: directpred``.

BYOL whose predictor is not learned but set after every optimiser step from the running correlation of the online
projections (``byol.predictor=direct``; :mod:`invprop.methods.distillation.predictors`), with the setting and
recipe of the authors' code (facebookresearch/luckmatters, ``ssl/real-dataset``: ``config/byol_config.yaml`` and
the README's DirectPred command): a constant target momentum of 0.996, a 512-wide projector to 128 dimensions (theirs
has a BatchNorm without affine parameters; ``mlp_bn``'s has them), SGD at a constant lr. Its settings are BYOL's
section. ``simsiam.predictor=direct`` gives SimSiam the same predictor.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from invprop.methods.distillation.byol import BYOL, BYOLSettings
from invprop.methods.distillation.byol import SPEC as BYOL_SPEC
from invprop.methods.method import BuildContext
from invprop.methods.recipes import paper_sgd
from invprop.methods.spec import register_method
from invprop.settings import Reference

_CONFIG = "Tian et al. (2021), the authors' luckmatters ssl/real-dataset/config/byol_config.yaml"
_README = "Tian et al. (2021), the authors' luckmatters ssl/real-dataset/README.md (the DirectPred command)"

SPEC = dataclasses.replace(
    BYOL_SPEC,
    summary="DirectPred: BYOL with a linear predictor set from the projections' correlation, not learned "
    "(Tian et al., 2021)",
    recipes={
        "*": paper_sgd(
            f"{_CONFIG} (SGD 0.03, momentum 0.9, wd 4e-4, no lr schedule, batch 128)",
            lr=0.03,
            weight_decay=4e-4,
            lr_scaling="none",
            schedule="constant",
        ),
    },
    presets={
        "*": {
            "model": {"head": "mlp_bn", "hidden_dim": 512, "embedding_dim": 128},
            "byol": {"predictor": "direct", "base_momentum": 0.996, "final_momentum": 0.996},
        },
    },
    references={
        "*": {
            **BYOL_SPEC.references["*"],
            "byol.predictor": Reference("direct", _README),
            "byol.base_momentum": Reference(0.996, _CONFIG),
            "byol.final_momentum": Reference(0.996, f"{_CONFIG} (a constant momentum)"),
            "model.hidden_dim": Reference(512, _CONFIG),
            "model.embedding_dim": Reference(128, _CONFIG),
            "optim.batch_size": Reference(128, _CONFIG),
            "epochs": Reference(100, f"{_README} (trainer.max_epochs=100)"),
        },
    },
    deviations={
        "*": {
            "byol.predictor_hidden_dim": "unused with predictor=direct",
            "epochs": "the dataset preset's length, which every method of a compare shares",
        },
        "imagenet": {"optim.batch_size": "the ImageNet preset's batch; the authors published CIFAR-10 and STL-10 runs"},
    },
    headline=("byol.predictor", "byol.direct_rho", "byol.direct_eps"),
    compare=False,
)


@register_method("directpred", SPEC)
class DirectPred(BYOL):
    """BYOL with DirectPred's predictor (Tian et al., 2021, Eqs. 18-19), whatever ``byol.predictor`` says (a learned
    predictor is ``method: byol``); see :class:`BYOL`."""

    def __init__(self, settings: BYOLSettings, encoder: nn.Module, context: BuildContext) -> None:
        super().__init__(dataclasses.replace(settings, predictor="direct"), encoder, context)


__all__ = ["SPEC", "DirectPred"]
