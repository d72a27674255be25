"""Exemplar-CNN's transformations (Dosovitskiy et al., 2014, Sec. 2; the authors' augment_patches code): the
augmentation preset ``exemplar`` of both pipelines, per image and per batch.

Each image gets one draw of: a rotation within +-20 degrees, a scale between 1/sqrt 2 and sqrt 2 (uniform in its
logarithm), a translation within +-0.25 of the image side; then, on colour images, "contrast 1" -- the pixels'
projections on the principal components of their colours, each scaled by ``2^N(0, sigma_c)`` with sigma = 1, 1,
0.5 -- and "contrast 2" and "colour" in HSV: S and V raised to a power in ``[2^-2, 2^2]``, multiplied by a factor in
``[2^-0.5, 2^0.5]`` and shifted by up to +-0.1, and H shifted by up to +-0.1 (each drawn uniformly, in the
exponent for the powers and factors). One-channel images take the geometric part only.

Two differences from the paper, both forced by working on whole images rather than patches cut from larger ones:
the colour principal components are each image's own (the paper's come from all pixels of all patches), and a
translated or shrunk image is filled by reflection at its border (the paper's patches move within their photo).
"""

from __future__ import annotations

import math

import torch
import torchvision.transforms as T
from torch import Tensor, nn

from invprop.data.batch_transforms import BATCH_AUGMENTATIONS, hsv_to_rgb, rgb_to_hsv
from invprop.data.transforms import AUGMENTATIONS, Normalize, TransformPair, to_tensor

#: The paper's geometric ranges: rotation (degrees), scale factor (log2 of the largest), translation (of the side).
EXEMPLAR_MAX_ROTATION = 20.0
EXEMPLAR_LOG2_SCALE = 0.5
EXEMPLAR_MAX_SHIFT = 0.25
#: The std of log2 of the factors on the colours' three principal components (largest variance first).
EXEMPLAR_PCA_SIGMA = (1.0, 1.0, 0.5)
#: HSV: log2 of the largest power and factor on S and V, the largest shift of S and V, the largest shift of H.
EXEMPLAR_LOG2_POWER = 2.0
EXEMPLAR_LOG2_FACTOR = 0.5
EXEMPLAR_SV_SHIFT = 0.1
EXEMPLAR_HUE_SHIFT = 0.1


def _uniform(generator: torch.Generator | None, device: torch.device, *shape: int) -> Tensor:
    """Uniform in [-1, 1)."""
    return torch.rand(*shape, generator=generator, device=device) * 2 - 1


def principal_colour_scaling(x: Tensor, log2_factors: Tensor) -> Tensor:
    """Each image's pixels' projections on the principal components of its own colours, scaled.

    Args:
        x: (B, 3, H, W) in [0, 1].
        log2_factors: (B, 3), log2 of each image's factor on its components, largest variance first.

    Returns:
        (B, 3, H, W), the mean colour kept, clamped to [0, 1].
    """
    b, c, h, w = x.shape
    pixels = x.reshape(b, c, h * w)
    mean = pixels.mean(dim=2, keepdim=True)
    centred = pixels - mean
    covariance = centred @ centred.transpose(1, 2) / (h * w)
    _, vectors = torch.linalg.eigh(covariance.double())  # ascending eigenvalues
    vectors = vectors.flip(-1).to(x.dtype)  # (B, 3 colours, 3 components), largest first
    scale = torch.diag_embed(torch.exp2(log2_factors))
    scaled = vectors @ scale @ vectors.transpose(1, 2) @ centred
    return (scaled + mean).reshape(b, c, h, w).clamp(0, 1)


class ExemplarAugment(nn.Module):
    """One draw of Exemplar-CNN's transformations per image, on a (C, H, W) image or a (B, C, H, W) batch in
    [0, 1] (see the module's docstring)."""

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        single = x.dim() == 3
        batch = x.unsqueeze(0) if single else x
        out = self.geometric(batch, generator)
        if out.shape[1] == 3:
            out = self.colour(out, generator)
        return out.squeeze(0) if single else out

    @staticmethod
    def geometric(x: Tensor, generator: torch.Generator | None) -> Tensor:
        b = x.shape[0]
        angle = _uniform(generator, x.device, b) * math.radians(EXEMPLAR_MAX_ROTATION)
        scale = torch.exp2(_uniform(generator, x.device, b) * EXEMPLAR_LOG2_SCALE)
        shift = _uniform(generator, x.device, b, 2) * EXEMPLAR_MAX_SHIFT * 2  # affine_grid spans [-1, 1]
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [torch.stack([cos, -sin, shift[:, 0]], dim=1), torch.stack([sin, cos, shift[:, 1]], dim=1)], dim=1
        )
        grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
        return nn.functional.grid_sample(x, grid, align_corners=False, padding_mode="reflection").clamp(0, 1)

    @staticmethod
    def colour(x: Tensor, generator: torch.Generator | None) -> Tensor:
        b = x.shape[0]
        sigma = torch.tensor(EXEMPLAR_PCA_SIGMA, device=x.device)
        pca = torch.randn(b, 3, generator=generator, device=x.device) * sigma
        x = principal_colour_scaling(x, pca)
        hsv = rgb_to_hsv(x)
        power = torch.exp2(_uniform(generator, x.device, b, 2, 1, 1) * EXEMPLAR_LOG2_POWER)
        factor = torch.exp2(_uniform(generator, x.device, b, 2, 1, 1) * EXEMPLAR_LOG2_FACTOR)
        shift = _uniform(generator, x.device, b, 2, 1, 1) * EXEMPLAR_SV_SHIFT
        sv = (hsv[:, 1:].pow(power) * factor + shift).clamp(0, 1)
        hue = (hsv[:, :1] + _uniform(generator, x.device, b, 1, 1, 1) * EXEMPLAR_HUE_SHIFT) % 1.0
        return hsv_to_rgb(torch.cat([hue, sv], dim=1)).clamp(0, 1)


@AUGMENTATIONS.register("exemplar")
def exemplar_preset(image_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> TransformPair:
    """Exemplar-CNN's transformations; evaluation resizes and centre-crops as the CIFAR preset does."""
    norm = Normalize(mean, std)
    return TransformPair(
        train=T.Compose(
            [to_tensor(), T.Resize(image_size, antialias=True), T.CenterCrop(image_size), ExemplarAugment(), norm]
        ),  # fmt: skip
        eval=T.Compose([to_tensor(), T.Resize(image_size, antialias=True), T.CenterCrop(image_size), norm]),
    )


class _ExemplarOp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.op = ExemplarAugment()

    def forward(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return self.op(x, generator=generator)


@BATCH_AUGMENTATIONS.register("exemplar")
def exemplar_batch_ops(image_size: int) -> list[nn.Module]:
    return [_ExemplarOp()]


__all__ = ["ExemplarAugment", "exemplar_batch_ops", "exemplar_preset", "principal_colour_scaling"]
