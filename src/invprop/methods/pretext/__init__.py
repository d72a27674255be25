"""Pretext tasks: predict a transformation applied to the image (rotation, tile order, colours), alone or several
together on one trunk."""

from invprop.methods.pretext import colorization, colorization_larsson, context_prediction, jigsaw, multitask, rotnet

__all__ = ["colorization", "colorization_larsson", "context_prediction", "jigsaw", "multitask", "rotnet"]
