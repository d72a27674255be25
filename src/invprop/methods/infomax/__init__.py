"""Mutual-information methods over feature maps: a global vector (or a location) and local features of the same
image told apart from those of other images."""

from invprop.methods.infomax import amdim, cpc, dim

__all__ = ["amdim", "cpc", "dim"]
