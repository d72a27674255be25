"""What the reconstruction methods hide or damage: masking noise on a share of an image's components (the
denoising autoencoder), the centre square and random blob-shaped regions (context encoders), and the weights of the
region a context encoder predicts. Masks are (B or 1, 1, H, W) tensors, True where the image is hidden."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from invprop.settings import AT_LEAST_ONE, NON_EMPTY_SHARE, UNIT_INTERVAL, require


def masking_noise(shape: tuple[int, ...], share: float, device: torch.device | None = None) -> Tensor:
    """The denoising autoencoder's masking noise (Vincent et al., 2008, Sec. 2.3): for each image, a fixed number
    ``round(share x d)`` of its ``d`` components, chosen at random (torch's global generator), are destroyed.

    Args:
        shape: (B, ...) the images' shape.
        share: nu, the share of each image's components destroyed, in [0, 1].

    Returns:
        A bool tensor of ``shape``, True where a component is destroyed.

    Example:
        >>> masking_noise((2, 1, 4, 4), 0.25).flatten(1).sum(dim=1).tolist()
        [4, 4]
    """
    require("share", share, UNIT_INTERVAL)
    b, d = shape[0], int(torch.tensor(shape[1:]).prod())
    k = round(share * d)
    ranks = torch.rand(b, d, device=device).argsort(dim=1).argsort(dim=1)
    return (ranks < k).view(shape)


def centre_square(side: int, share: float) -> tuple[int, int]:
    """The rows (and columns) ``[start, end)`` of the centred square of ``share`` of an image's ``side`` (at least
    one pixel): Pathak et al. (2016) hide the central 64 x 64 of a 128-pixel image, a share of 0.5.

    Example:
        >>> centre_square(32, 0.5), centre_square(8, 0.5), centre_square(7, 0.5)
        ((8, 24), (2, 6), (1, 5))
    """
    require("side", side, AT_LEAST_ONE)
    require("share", share, NON_EMPTY_SHARE)
    size = max(1, round(side * share))
    start = (side - size) // 2
    return start, start + size


def centre_region_weights(side: int, share: float, overlap: int, overlap_weight: float) -> tuple[Tensor, Tensor]:
    """A context encoder's centre region (Pathak et al., 2016, Sec. 3.3 and the authors' train.lua): the square
    of ``share`` of the side is predicted; the image hides it less a band of ``overlap`` pixels along its edges,
    which stays visible and whose reconstruction weighs ``overlap_weight`` times the hidden pixels' (the authors:
    4 pixels, 10 times).

    Returns:
        ``(hidden, weights)``, each (1, 1, side, side): the bool mask of the hidden pixels, and the float weights of
        the loss (1 on the hidden pixels, ``overlap_weight`` on the band, 0 elsewhere).

    Example:
        >>> hidden, weights = centre_region_weights(8, 0.5, overlap=0, overlap_weight=10.0)
        >>> int(hidden.sum()), float(weights.sum())
        (16, 16.0)
    """
    start, end = centre_square(side, share)
    inner = min(overlap, (end - start - 1) // 2)  # the band never covers the whole square
    weights = torch.zeros(1, 1, side, side)
    weights[..., start:end, start:end] = overlap_weight
    hidden = torch.zeros(1, 1, side, side, dtype=torch.bool)
    hidden[..., start + inner : end - inner, start + inner : end - inner] = True
    weights[hidden] = 1.0
    return hidden, weights


def random_region_masks(batch: int, side: int, share: float, cells: int, device: torch.device | None = None) -> Tensor:
    """Random blob-shaped regions (Pathak et al., 2016, Sec. 3.3, "random region"; the authors' train_random.lua
    thresholds a bilinearly upsampled uniform-noise pattern): per image, uniform noise on a ``cells x cells`` grid
    (torch's global generator) upsampled bilinearly to the image's side, and the ``share`` of pixels with the
    highest values hidden -- exactly that share, where the authors' fixed threshold gives 20 to 30%.

    Returns:
        (B, 1, side, side) bool, True where hidden.

    Example:
        >>> masks = random_region_masks(3, 32, 0.25, cells=8)
        >>> masks.shape, masks.flatten(1).sum(dim=1).tolist()
        (torch.Size([3, 1, 32, 32]), [256, 256, 256])
    """
    require("share", share, UNIT_INTERVAL)
    require("cells", cells, AT_LEAST_ONE)
    noise = torch.rand(batch, 1, cells, cells, device=device)
    smooth = F.interpolate(noise, size=(side, side), mode="bilinear", align_corners=False).flatten(1)
    k = round(share * side * side)
    ranks = smooth.argsort(dim=1, descending=True).argsort(dim=1)
    return (ranks < k).view(batch, 1, side, side)


__all__ = ["centre_region_weights", "centre_square", "masking_noise", "random_region_masks"]
