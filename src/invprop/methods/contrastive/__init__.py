"""Contrastive methods: an image's views against negatives (in the batch, a queue or a memory bank)."""

from invprop.methods.contrastive import moco, nnclr, pirl, simclr

__all__ = ["moco", "nnclr", "pirl", "simclr"]
