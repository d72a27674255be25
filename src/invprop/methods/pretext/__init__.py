"""Pretext tasks: predict a transformation applied to the image (rotation, tile order, colours)."""

from invprop.methods.pretext import colorization, jigsaw, rotnet

__all__ = ["colorization", "jigsaw", "rotnet"]
