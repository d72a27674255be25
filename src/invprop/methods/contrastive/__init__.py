"""Contrastive methods: an image's views against negatives (in the batch, a queue or a memory bank)."""

from invprop.methods.contrastive import (
    cmc,
    densecl,
    drlim,
    invariant_spreading,
    moco,
    mocov3,
    nnclr,
    pirl,
    simclr,
    simclr_v2,
)

__all__ = ["cmc", "densecl", "drlim", "invariant_spreading", "moco", "mocov3", "nnclr", "pirl", "simclr", "simclr_v2"]
