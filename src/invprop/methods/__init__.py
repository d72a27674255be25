"""Layer 3: the training methods, each one self-describing file (its settings, its class, its presets, published
values, ablation and report figures) registered in :data:`METHODS` by :func:`register_method`, grouped by family.

A new method is one file in its family's folder and one import line in that folder's ``__init__.py``.
"""

from invprop.methods import (  # noqa: F401  (importing a family registers its methods)
    classification,
    clustering,
    contrastive,
    distillation,
    infomax,
    memory_bank,
    pretext,
    reconstruction,
    redundancy,
)
from invprop.methods.classification.instance_classifier import ClassifierSettings, InstanceClassification
from invprop.methods.memory_bank.invp import BankSettings, InvariancePropagation, InvPSettings, LossSettings
from invprop.methods.method import Batch, BuildContext, Method, StepOutput
from invprop.methods.parts import MAIN, Part, Stage
from invprop.methods.spec import (
    METHODS,
    Ablation,
    Accumulation,
    Curve,
    Floor,
    GridFigure,
    ImageRows,
    MethodSpec,
    Recipe,
    SmokeRun,
    Torchrun,
    Variant,
    create_method,
    register_method,
)

__all__ = [
    "MAIN",
    "METHODS",
    "Accumulation",
    "Ablation",
    "BankSettings",
    "Batch",
    "BuildContext",
    "ClassifierSettings",
    "Curve",
    "Floor",
    "GridFigure",
    "ImageRows",
    "InstanceClassification",
    "InvPSettings",
    "InvariancePropagation",
    "LossSettings",
    "Method",
    "MethodSpec",
    "Part",
    "Recipe",
    "SmokeRun",
    "Stage",
    "StepOutput",
    "Torchrun",
    "Variant",
    "create_method",
    "register_method",
]
