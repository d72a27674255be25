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

__all__ = [
    "METHODS",
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
