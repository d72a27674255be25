"""Layer 3: methods wire a backbone, a head and an objective together."""

from invprop.methods.base import METHODS, Method, StepOutput
from invprop.methods.instance_classifier import InstanceClassification, build_instance_classifier
from invprop.methods.invp import InvariancePropagation, build_invp

__all__ = [
    "METHODS",
    "InstanceClassification",
    "InvariancePropagation",
    "Method",
    "StepOutput",
    "build_instance_classifier",
    "build_invp",
]
