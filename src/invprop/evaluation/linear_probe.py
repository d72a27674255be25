"""Multinomial logistic regression on fixed features (the linear evaluation protocol), in pure tensor code.

Features are standardised with the training statistics, then a linear layer is fitted by full-batch L-BFGS on the
mean cross-entropy plus ``weight_decay / 2 * ||W||^2`` (the bias is not decayed). Deterministic for given inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

#: L-BFGS iterations and history size of the fit; the problem is convex, so this converges on typical probes.
LBFGS_MAX_ITER = 500
LBFGS_HISTORY = 20
#: Standard deviations below this are treated as constant features (not rescaled).
MIN_STD = 1e-6


@dataclass
class LinearProbe:
    """A fitted probe: ``logits = ((x - mean) / std) @ weight.T + bias``.

    Attributes:
        mean, std: (D,) training-feature statistics.
        weight: (C, D).
        bias: (C,).
    """

    mean: Tensor
    std: Tensor
    weight: Tensor
    bias: Tensor

    def logits(self, features: Tensor) -> Tensor:
        """(N, D) -> (N, C)."""
        x = (features.float() - self.mean) / self.std
        return x @ self.weight.T + self.bias


def fit_linear_probe(
    features: Tensor, labels: Tensor, num_classes: int, weight_decay: float, max_iter: int = LBFGS_MAX_ITER
) -> LinearProbe:
    """Fit the probe on (N, D) ``features`` and (N,) int64 ``labels`` in [0, num_classes).

    Example:
        >>> x = torch.cat([torch.randn(20, 2) - 3, torch.randn(20, 2) + 3])
        >>> y = torch.tensor([0] * 20 + [1] * 20)
        >>> probe = fit_linear_probe(x, y, 2, weight_decay=1e-4)
        >>> bool((probe.logits(x).argmax(1) == y).all())
        True
    """
    if features.dim() != 2 or labels.shape != (features.shape[0],):
        raise ValueError(
            f"features must be (N, D) and labels (N,); got {tuple(features.shape)} and {tuple(labels.shape)}"
        )
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be non-negative, got {weight_decay}")
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}); got [{int(labels.min())}, {int(labels.max())}]")
    x = features.float()
    mean = x.mean(dim=0)
    std = x.std(dim=0, unbiased=False)
    std = torch.where(std > MIN_STD, std, torch.ones_like(std))
    x = (x - mean) / std
    weight = torch.zeros(num_classes, x.shape[1], device=x.device, requires_grad=True)
    bias = torch.zeros(num_classes, device=x.device, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, history_size=LBFGS_HISTORY, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(x @ weight.T + bias, labels) + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return LinearProbe(mean, std, weight.detach(), bias.detach())


def stratified_split(labels: Tensor, fraction: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Split positions into (train, validation) with ``fraction`` of every class (at least one) held out.

    Classes with a single example stay entirely in the training part. Both outputs are sorted int64 positions.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    train, held = [], []
    for cls in labels.unique(sorted=True):
        members = (labels == cls).nonzero().squeeze(1)
        members = members[torch.randperm(members.numel(), generator=generator)]
        take = 0 if members.numel() < 2 else max(1, round(members.numel() * fraction))
        held.append(members[:take])
        train.append(members[take:])
    return torch.cat(train).sort().values, torch.cat(held).sort().values
