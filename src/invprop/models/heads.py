"""Projection heads, registered by name: backbone features -> embedding (un-normalised)."""

from __future__ import annotations

from typing import Callable

from torch import nn

from invprop.registry import Registry

HEADS: Registry[Callable[..., nn.Module]] = Registry("head")


@HEADS.register("linear")
def linear_head(in_dim: int, out_dim: int = 128, hidden_dim: int | None = None) -> nn.Module:
    """A single linear layer (the paper's "linear head"; use temperature 0.07)."""
    return nn.Linear(in_dim, out_dim)


@HEADS.register("mlp")
def mlp_head(in_dim: int, out_dim: int = 128, hidden_dim: int | None = None) -> nn.Module:
    """Linear -> BatchNorm -> ReLU -> Linear; hidden width defaults to ``in_dim`` (the authors' choice; use
    temperature 0.2)."""
    hidden = hidden_dim or in_dim
    return nn.Sequential(
        nn.Linear(in_dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)
    )
