"""Layer 3: methods wire an encoder and an objective together; each registers its settings sections, its builder
and its per-dataset defaults in :data:`METHODS`."""

from invprop.methods.base import METHODS, BuildContext, Method, MethodSpec, StepOutput, create_method
from invprop.methods.instance_classifier import (
    ClassifierSettings,
    InstanceClassification,
    InstanceClassifierSettings,
    build_instance_classifier,
)
from invprop.methods.invp import BankSettings, InvariancePropagation, InvPSettings, LossSettings, build_invp

# The field's methods register themselves on import (after InvP and the instance classifier, in this order).
from invprop.methods.simclr import SimCLR  # noqa: E402  isort: skip
from invprop.methods.moco import MoCo  # noqa: E402  isort: skip
from invprop.methods.byol import BYOL  # noqa: E402  isort: skip
from invprop.methods.simsiam import SimSiam  # noqa: E402  isort: skip
from invprop.methods.barlow_twins import BarlowTwins  # noqa: E402  isort: skip
from invprop.methods.vicreg import VICReg  # noqa: E402  isort: skip
from invprop.methods.nnclr import NNCLR  # noqa: E402  isort: skip
from invprop.methods.pirl import PIRL  # noqa: E402  isort: skip
from invprop.methods.rotnet import RotNet  # noqa: E402  isort: skip
from invprop.methods.jigsaw import Jigsaw  # noqa: E402  isort: skip
from invprop.methods.swav import SwAV  # noqa: E402  isort: skip
from invprop.methods.deepcluster import DeepCluster  # noqa: E402  isort: skip
from invprop.methods.pcl import PCL  # noqa: E402  isort: skip
from invprop.methods.colorization import Colorization  # noqa: E402  isort: skip

__all__ = [
    "BYOL",
    "METHODS",
    "NNCLR",
    "PIRL",
    "Jigsaw",
    "RotNet",
    "SwAV",
    "DeepCluster",
    "PCL",
    "Colorization",
    "BarlowTwins",
    "MoCo",
    "SimCLR",
    "SimSiam",
    "VICReg",
    "BankSettings",
    "BuildContext",
    "ClassifierSettings",
    "InstanceClassification",
    "InstanceClassifierSettings",
    "InvPSettings",
    "InvariancePropagation",
    "LossSettings",
    "Method",
    "MethodSpec",
    "StepOutput",
    "build_instance_classifier",
    "build_invp",
    "create_method",
]
