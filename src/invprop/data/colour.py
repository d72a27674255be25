"""Colorization's inputs and labels (Zhang, Isola & Efros, 2016): CIE Lab from sRGB, the quantised ab colours, the
soft encoding of each pixel's colour over its nearest bins, and the class-rebalancing weights.

Lab is :func:`invprop.core.colour_space.rgb_to_lab` (CIE, D65). The colour classes are the points of a grid of
spacing 10 on the ab plane that some sRGB colour (of a 64-point grid per axis) falls on when rounded to the grid:
261 of them (the paper's gamut, computed its own way, has 313).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from invprop.core.colour_space import rgb_to_lab, srgb_cube

#: The ab grid spacing of the colour classes (Zhang et al., 2016, Sec. 2.1: grid size 10).
AB_GRID = 10.0
#: Soft encoding: nearest bins per pixel and the Gaussian's sigma (Sec. 2.1: 5 neighbours, sigma 5).
SOFT_NEIGHBOURS = 5
SOFT_SIGMA = 5.0
#: Class rebalancing: the mixing lambda with the uniform distribution and the smoothing sigma (Sec. 2.1, Eq. 4).
REBALANCE_LAMBDA = 0.5
REBALANCE_SIGMA = 5.0


@functools.lru_cache(maxsize=1)
def _gamut_bins() -> tuple[tuple[float, float], ...]:
    ab = rgb_to_lab(srgb_cube())[0, 1:, :, 0].T
    grid = torch.unique(torch.round(ab / AB_GRID), dim=0) * AB_GRID
    return tuple((float(a), float(b)) for a, b in grid.tolist())


def ab_bins() -> Tensor:
    """(Q, 2) the colour classes: ab grid points of spacing 10 reached by some sRGB colour."""
    return torch.tensor(_gamut_bins())


def soft_encode(ab: Tensor, bins: Tensor) -> Tensor:
    """The soft encoding of each pixel's colour (Sec. 2.1): Gaussian weights (sigma 5) on its 5 nearest bins.

    Args:
        ab: (B, 2, H, W) ab values.
        bins: (Q, 2) colour classes.

    Returns:
        (B, Q, H, W) distributions (each pixel sums to 1).
    """
    b, _, h, w = ab.shape
    pixels = ab.permute(0, 2, 3, 1).reshape(-1, 2).float()
    distances = torch.cdist(pixels, bins.float().to(ab.device))
    nearest, index = distances.topk(SOFT_NEIGHBOURS, dim=1, largest=False)
    weights = torch.softmax(-(nearest**2) / (2 * SOFT_SIGMA**2), dim=1)
    encoded = torch.zeros(pixels.shape[0], bins.shape[0], device=ab.device).scatter_(1, index, weights)
    return encoded.reshape(b, h, w, -1).permute(0, 3, 1, 2)


def bin_histogram(ab: Tensor, bins: Tensor) -> Tensor:
    """(Q,) how many pixels of ``ab`` (B, 2, H, W) have each bin as their nearest."""
    pixels = ab.permute(0, 2, 3, 1).reshape(-1, 2).float()
    nearest = torch.cdist(pixels, bins.float().to(ab.device)).argmin(dim=1)
    return torch.bincount(nearest, minlength=bins.shape[0]).float()


def rebalancing_weights(counts: Tensor, bins: Tensor) -> Tensor:
    """Class-rebalancing weights w (Zhang et al., 2016, Eq. 4): ``w ~ ((1 - lambda) p~ + lambda / Q)^-1`` with p~ the
    colour distribution ``counts`` smoothed by a Gaussian (sigma 5) over the ab plane, scaled so that
    ``sum_q p~_q w_q = 1``.

    Args:
        counts: (Q,) pixel counts per bin.
        bins: (Q, 2) the bins' ab coordinates.

    Returns:
        (Q,) positive weights.
    """
    if float(counts.sum()) <= 0:
        raise ValueError("rebalancing weights need at least one pixel's colour")
    p = counts.double() / counts.sum()
    distances = torch.cdist(bins.double(), bins.double())
    kernel = torch.exp(-(distances**2) / (2 * REBALANCE_SIGMA**2))
    smoothed = kernel @ p
    smoothed = smoothed / smoothed.sum()
    q = counts.shape[0]
    weights = 1.0 / ((1 - REBALANCE_LAMBDA) * smoothed + REBALANCE_LAMBDA / q)
    return (weights / (smoothed * weights).sum()).float()


__all__ = ["ab_bins", "bin_histogram", "rebalancing_weights", "soft_encode"]
