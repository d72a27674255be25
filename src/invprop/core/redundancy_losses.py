"""Redundancy-reduction objectives, as pure functions: Barlow Twins' cross-correlation loss and VICReg's three
terms. Embeddings are not L2-normalised here; statistics are over the batch, in float32."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

#: The epsilon of the batch normalisation in Barlow Twins (torch's BatchNorm1d default, as the paper's code uses).
BATCH_NORM_EPS = 1e-5


def cross_correlation(z1: Tensor, z2: Tensor) -> Tensor:
    """Barlow Twins' C (Zbontar et al., 2021, Eq. 2): the (D, D) cross-correlation of the two views' embeddings,
    each standardised along the batch (mean 0, biased std 1, as BatchNorm without affine parameters).

    Args:
        z1, z2: (B, D) embeddings of the two views.
    """
    a = z1.float()
    b = z2.float()
    a = (a - a.mean(0)) / torch.sqrt(a.var(0, unbiased=False) + BATCH_NORM_EPS)
    b = (b - b.mean(0)) / torch.sqrt(b.var(0, unbiased=False) + BATCH_NORM_EPS)
    return a.T @ b / a.shape[0]


def barlow_twins_loss(z1: Tensor, z2: Tensor, off_diagonal_weight: float) -> Tensor:
    """Barlow Twins (Zbontar et al., 2021, Eq. 1): ``sum_i (1 - C_ii)^2 + lambda sum_i sum_{j != i} C_ij^2``.

    Args:
        z1, z2: (B, D) embeddings of the two views.
        off_diagonal_weight: lambda (5.1e-3 in the paper).
    """
    c = cross_correlation(z1, z2)
    diagonal = torch.diagonal(c)
    on = (1 - diagonal).pow(2).sum()
    off = c.pow(2).sum() - diagonal.pow(2).sum()
    return on + off_diagonal_weight * off


@dataclass
class VICRegTerms:
    """VICReg's three unweighted terms (0-d tensors) and their weighted sum ``loss``."""

    loss: Tensor
    invariance: Tensor
    variance: Tensor
    covariance: Tensor


def vicreg_variance(z: Tensor, gamma: float = 1.0, eps: float = 1e-4) -> Tensor:
    """v(Z) (Bardes et al., 2022, Eq. 1): ``(1/D) sum_j max(0, gamma - sqrt(Var(z_j) + eps))``, unbiased variance.

    Args:
        z: (B, D), B >= 2.
    """
    std = torch.sqrt(z.float().var(dim=0) + eps)
    return F.relu(gamma - std).mean()


def vicreg_covariance(z: Tensor) -> Tensor:
    """c(Z) (Bardes et al., 2022, Eq. 3-4): ``(1/D) sum_{i != j} C(Z)_ij^2``, C the unbiased covariance matrix.

    Args:
        z: (B, D), B >= 2.
    """
    x = z.float() - z.float().mean(dim=0)
    cov = x.T @ x / (x.shape[0] - 1)
    return (cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()) / x.shape[1]


def vicreg_loss(
    z1: Tensor,
    z2: Tensor,
    invariance_weight: float = 25.0,
    variance_weight: float = 25.0,
    covariance_weight: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
) -> VICRegTerms:
    """VICReg (Bardes et al., 2022, Eq. 6): ``lambda s(Z, Z') + mu [v(Z) + v(Z')] + nu [c(Z) + c(Z')]``, with
    s the mean squared difference over the B x D entries, as the authors' code computes it (Eq. 5's mean squared
    Euclidean distance divided by D; the published weights go with this scale).

    Args:
        z1, z2: (B, D) expander outputs of the two views.
        invariance_weight, variance_weight, covariance_weight: lambda, mu, nu (25, 25, 1 in the paper).
        gamma, eps: the variance term's target standard deviation and epsilon (1, 1e-4).
    """
    invariance = F.mse_loss(z1.float(), z2.float())
    variance = vicreg_variance(z1, gamma, eps) + vicreg_variance(z2, gamma, eps)
    covariance = vicreg_covariance(z1) + vicreg_covariance(z2)
    loss = invariance_weight * invariance + variance_weight * variance + covariance_weight * covariance
    return VICRegTerms(loss, invariance, variance, covariance)


__all__ = [
    "BATCH_NORM_EPS",
    "VICRegTerms",
    "barlow_twins_loss",
    "cross_correlation",
    "vicreg_covariance",
    "vicreg_loss",
    "vicreg_variance",
]
