"""Objectives of the methods that reconstruct what was hidden or damaged, and of their adversaries: the denoising
autoencoder's reconstruction cross-entropy, the context encoder's weighted squared error over the hidden region,
and the discriminator's and generator's adversarial losses (Goodfellow et al., 2014) that the context encoder adds.
All are computed in float32 with autocast off."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def reconstruction_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """The denoising autoencoder's reconstruction loss for inputs in [0, 1] (Vincent et al., 2008, Sec. 2.2 and
    2.3): ``L_H(x, z) = -sum_k [x_k log z_k + (1 - x_k) log(1 - z_k)]`` with ``z = sigmoid(logits)``, against the
    clean input; here its mean over the components and images (the paper's sum divided by their number).

    Args:
        logits: (B, ...) the decoder's outputs before the sigmoid.
        targets: (B, ...) the clean inputs, in [0, 1].

    Returns:
        The 0-d mean loss.

    Example:
        >>> round(float(reconstruction_cross_entropy(torch.zeros(1, 4), torch.full((1, 4), 0.5))), 4)  # ln 2
        0.6931
    """
    with torch.autocast(device_type=logits.device.type, enabled=False):
        return F.binary_cross_entropy_with_logits(logits.float(), targets.float())


def weighted_squared_error(predictions: Tensor, targets: Tensor, weights: Tensor) -> Tensor:
    """The context encoder's reconstruction loss (Pathak et al., 2016, Eq. 1, with the authors' weighting of the
    region that overlaps the context): ``sum w (x - F(x'))^2 / (C |{w > 0}|)`` -- the squared error of every channel
    at every pixel, weighted by that pixel's ``w`` (0 outside the predicted region), over the pixels of the predicted
    region: the authors' mean squared error over the region, its gradient scaled by the weights.

    Args:
        predictions: (B, C, H, W) the reconstructions.
        targets: (B, C, H, W) the clean images.
        weights: (B or 1, 1, H, W) non-negative per-pixel weights.

    Returns:
        The 0-d loss (0 when every weight is 0).

    Example:
        >>> w = torch.tensor([[[[1.0, 0.0]]]])  # only the first pixel is predicted
        >>> float(weighted_squared_error(torch.tensor([[[[3.0, 9.0]]]]), torch.tensor([[[[1.0, 0.0]]]]), w))
        4.0
    """
    with torch.autocast(device_type=predictions.device.type, enabled=False):
        w = weights.float().expand(predictions.shape[0], 1, *predictions.shape[2:])
        squared = (predictions.float() - targets.float()).square()
        region = (w > 0).sum() * predictions.shape[1]
        return (w * squared).sum() / region.clamp_min(1)


def discriminator_loss(real_logits: Tensor, made_logits: Tensor) -> Tensor:
    """The discriminator's side of the adversarial game (Goodfellow et al., 2014, Eq. 1; Pathak et al., 2016,
    Eq. 2): ``-[log D(x) + log(1 - D(F(x')))]``, each term the mean over its images, with ``D = sigmoid(logits)``.

    Args:
        real_logits: (B,) the discriminator's logits of real images.
        made_logits: (B,) its logits of made ones (reconstructions).

    Returns:
        The 0-d loss; 2 ln 2 for a discriminator at chance.

    Example:
        >>> round(float(discriminator_loss(torch.zeros(3), torch.zeros(3))), 4)  # 2 ln 2
        1.3863
    """
    with torch.autocast(device_type=real_logits.device.type, enabled=False):
        real = F.binary_cross_entropy_with_logits(real_logits.float(), torch.ones_like(real_logits.float()))
        made = F.binary_cross_entropy_with_logits(made_logits.float(), torch.zeros_like(made_logits.float()))
        return real + made


def generator_adversarial_loss(made_logits: Tensor) -> Tensor:
    """The generator's adversarial loss in its non-saturating form (Goodfellow et al., 2014, Sec. 3; the context
    encoder's code trains the generator so): ``-log D(F(x'))``, the mean over images.

    Args:
        made_logits: (B,) the discriminator's logits of the generator's images.

    Returns:
        The 0-d loss; ln 2 against a discriminator at chance.

    Example:
        >>> round(float(generator_adversarial_loss(torch.zeros(2))), 4)
        0.6931
    """
    with torch.autocast(device_type=made_logits.device.type, enabled=False):
        return F.binary_cross_entropy_with_logits(made_logits.float(), torch.ones_like(made_logits.float()))


def damage_location_loss(logits: Tensor, kept: Tensor) -> Tensor:
    """Spotting artifacts' second task for the discriminator (Jenni & Favaro, 2018, Sec. 3.3): at every position of
    the code map, the binary cross-entropy of its prediction that the position was kept (undamaged); the mean over
    positions and images. Real images are kept everywhere.

    Args:
        logits: (B, 1, h, w) the predictions' logits.
        kept: (B, 1, h, w) 1 where the position was kept, 0 where it was damaged.

    Example:
        >>> round(float(damage_location_loss(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2))), 4)  # ln 2
        0.6931
    """
    with torch.autocast(device_type=logits.device.type, enabled=False):
        return F.binary_cross_entropy_with_logits(logits.float(), kept.float())


__all__ = [
    "damage_location_loss",
    "discriminator_loss",
    "generator_adversarial_loss",
    "reconstruction_cross_entropy",
    "weighted_squared_error",
]
