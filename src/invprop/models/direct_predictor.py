"""DirectPred's predictor (Tian, Chen & Ganguli, 2021): a linear map without bias whose weight is set from the
running correlation of the embeddings after each optimiser step, never learned. Its state -- the weight, the
running correlation and whether it has started -- is in buffers, so it is checkpointed with the method."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invprop.core.direct_prediction import correlation_update, direct_predictor_weight


class DirectPredictor(nn.Module):
    """``p = W_p z``, with ``W_p`` from :func:`invprop.core.direct_prediction.direct_predictor_weight`.

    Before the first update the weight is a linear layer's default initialisation, as in the authors' code (their
    predictor is an ``nn.Linear`` that the first update overwrites).

    Args:
        dim: D, the embeddings' width.
        rho: the running correlation's weight of its old estimate (the paper's rho, Eq. 19).
        eps: the boost of the weak directions (the paper's epsilon, Eq. 18).
    """

    weight: Tensor
    correlation: Tensor
    started: Tensor

    def __init__(self, dim: int, rho: float, eps: float) -> None:
        super().__init__()
        self.rho, self.eps = rho, eps
        weight = torch.empty(dim, dim)
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))  # nn.Linear's default
        self.register_buffer("weight", weight)
        self.register_buffer("correlation", torch.zeros(dim, dim))
        self.register_buffer("started", torch.tensor(False))

    def forward(self, z: Tensor) -> Tensor:
        return F.linear(z, self.weight.to(z.dtype))

    @torch.no_grad()
    def update_(self, batch_correlation: Tensor) -> None:
        """After an optimiser step: fold the step's correlation (Eq. 19) into the running one and set the weight
        from it (Eq. 18)."""
        running = self.correlation if bool(self.started) else None
        self.correlation.copy_(correlation_update(running, batch_correlation.to(self.correlation), self.rho))
        self.weight.copy_(direct_predictor_weight(self.correlation, self.eps))
        self.started.fill_(True)


__all__ = ["DirectPredictor"]
