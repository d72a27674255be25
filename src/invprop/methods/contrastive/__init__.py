"""Contrastive methods: an image's views against negatives (in the batch, a queue or a memory bank)."""

from invprop.methods.contrastive import invariant_spreading, moco, nnclr, pirl, simclr

__all__ = ["invariant_spreading", "moco", "nnclr", "pirl", "simclr"]
