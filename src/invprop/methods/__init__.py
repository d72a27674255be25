"""Layer 3: methods wire a backbone, a head and an objective together."""

from invprop.methods.base import METHODS, Method, StepOutput
from invprop.methods.invp import InvariancePropagation, build_invp

__all__ = ["METHODS", "InvariancePropagation", "Method", "StepOutput", "build_invp"]
