"""Projection heads, registered by name: backbone features -> embedding (un-normalised).

``linear`` and ``mlp`` are the two heads of InvP's paper and its authors' code (Wang et al., 2020): the ablations
(Table 5) use the linear head with tau 0.07, the main results the MLP head with tau 0.2. ``mlp_bn`` adds a
BatchNorm after the hidden layer (as in SimCLR v2 and MoCo v3 heads); it is not the authors' head.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from invprop.registry import Registry

HEADS: Registry[Callable[..., nn.Module]] = Registry("head")


@HEADS.register("linear")
def linear_head(in_dim: int, out_dim: int = 128, hidden_dim: int | None = None) -> nn.Module:
    """A single linear layer (the paper's "linear head", used with tau 0.07)."""
    return nn.Linear(in_dim, out_dim)


@HEADS.register("mlp")
def mlp_head(in_dim: int, out_dim: int = 128, hidden_dim: int | None = None) -> nn.Module:
    """Linear -> ReLU -> Linear, the authors' MLP head (used with tau 0.2); hidden width defaults to ``in_dim``, as
    in their code."""
    hidden = hidden_dim or in_dim
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))


@HEADS.register("mlp_bn")
def mlp_bn_head(in_dim: int, out_dim: int = 128, hidden_dim: int | None = None) -> nn.Module:
    """Linear -> BatchNorm -> ReLU -> Linear (not the authors' head; a common variant, offered for comparison);
    hidden width defaults to ``in_dim``."""
    hidden = hidden_dim or in_dim
    return nn.Sequential(
        nn.Linear(in_dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)
    )
