"""InvP and the baselines that share its memory bank."""

from invprop.methods.memory_bank import invp

__all__ = ["invp"]
