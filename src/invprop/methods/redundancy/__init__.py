"""Redundancy reduction: statistics of the two views' embeddings over the batch."""

from invprop.methods.redundancy import barlowtwins, vicreg

__all__ = ["barlowtwins", "vicreg"]
