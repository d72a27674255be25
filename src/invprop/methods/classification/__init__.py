"""Parametric instance classification: one class per training image."""

from invprop.methods.classification import exemplar, instance_classifier

__all__ = ["exemplar", "instance_classifier"]
