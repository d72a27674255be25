"""A linear layer with weight normalisation (Salimans & Kingma, 2016): DINO's last layer, the K prototypes its
L2-normalised bottleneck is scored against (Caron et al., 2021, the authors' ``DINOHead.last_layer``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class WeightNormLinear(nn.Module):
    """``y = x W^T`` with rows ``W_k = g_k v_k / ||v_k||``, no bias.

    Args:
        in_dim: D, the input's width (DINO: the 256-wide bottleneck).
        out_dim: K, the outputs (DINO: 65,536).
        fixed_norm: the row norms g stay 1 (DINO's ``norm_last_layer=True``, its default; the README: ``False`` is
            "only safe with vit_small"): g is a parameter that takes no gradient, so the student and a momentum copy
            keep the same parameters.

    ``v`` starts as a default ``nn.Linear``'s weight, ``g`` at 1 (the authors' ``weight_g.data.fill_(1)``).
    """

    def __init__(self, in_dim: int, out_dim: int, fixed_norm: bool = True) -> None:
        super().__init__()
        self.direction = nn.Parameter(nn.Linear(in_dim, out_dim, bias=False).weight.detach().clone())
        self.norm = nn.Parameter(torch.ones(out_dim, 1), requires_grad=not fixed_norm)

    def weight(self, detached: bool = False) -> Tensor:
        """(K, D) ``g v / ||v||``; ``detached``: without gradient to ``v`` and ``g`` (the layer frozen)."""
        v, g = (self.direction.detach(), self.norm.detach()) if detached else (self.direction, self.norm)
        return g * F.normalize(v, dim=1)

    def forward(self, x: Tensor, detached: bool = False) -> Tensor:
        """(B, K) float32 scores of (B, D) inputs, outside any autocast (a teacher's scores divided by a temperature
        of 0.04 would turn bfloat16's rounding into differences of 0.1); ``detached`` as in :meth:`weight`."""
        with torch.autocast(x.device.type, enabled=False):
            return F.linear(x.float(), self.weight(detached).float())


__all__ = ["WeightNormLinear"]
