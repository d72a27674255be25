"""Parametric instance classification."""

from invprop.methods.classification import instance_classifier

__all__ = ["instance_classifier"]
