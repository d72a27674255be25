"""Augmentations of whole batches on the training device, with the distributions of the per-image presets.

Each op takes a (B, C, H, W) float batch in [0, 1] and a ``torch.Generator`` on the batch's device, draws one set
of parameters per image, and applies them in a few vectorised kernels -- no Python loop over images. The presets
(:data:`BATCH_AUGMENTATIONS`) mirror :data:`invprop.data.transforms.AUGMENTATIONS` op for op and parameter for
parameter (torchvision's sampling rules, e.g. RandomResizedCrop's ten tries and its centre-crop fallback, and
ColorJitter's random order of its four adjustments per image). Two differences from torchvision's per-image path:
arithmetic is in float throughout (PIL rounds to uint8 after each op), and a crop is resampled bilinearly from the
whole image, so its border pixels blend with the pixels just outside the crop rather than being clamped.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from invprop.data.transforms import (
    CIFAR_CROP_SCALE,
    CIFAR_JITTER,
    FLIP_P,
    GRAYSCALE_P,
    IMAGENET_BLUR_P,
    IMAGENET_BLUR_SIGMA,
    IMAGENET_JITTER,
    IMAGENET_JITTER_P,
    RandomDigitAugment,
)
from invprop.registry import Registry

#: torchvision's RandomResizedCrop defaults: aspect-ratio range and number of tries before the fallback.
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
CROP_TRIES = 10
#: ITU-R 601-2 luma weights, as torchvision's rgb_to_grayscale.
LUMA = (0.2989, 0.587, 0.114)


def _uniform(low: float, high: float, shape: Sequence[int], generator: torch.Generator, device: torch.device) -> Tensor:
    return low + (high - low) * torch.rand(*shape, generator=generator, device=device)


def _per_image(mask: Tensor) -> Tensor:
    return mask.view(-1, 1, 1, 1)


def grayscale(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, 1, H, W) luma; one-channel input is returned as is."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(dim=1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    return (factor * x + (1 - factor) * other).clamp(0, 1)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """Per-image brightness, ``factor`` (B,)."""
    return _blend(x, torch.zeros_like(x), _per_image(factor))


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Per-image contrast around the image's mean luma, ``factor`` (B,)."""
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, mean, _per_image(factor))


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Per-image saturation, ``factor`` (B,); no-op on one-channel images."""
    if x.shape[1] == 1:
        return x
    return _blend(x, grayscale(x), _per_image(factor))


def rgb_to_hsv(x: Tensor) -> Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> HSV with hue in [0, 1)."""
    r, g, b = x.unbind(dim=1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    safe_delta = torch.where(delta > 0, delta, torch.ones_like(delta))
    safe_max = torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    saturation = delta / safe_max
    rc, gc, bc = (maxc - r) / safe_delta, (maxc - g) / safe_delta, (maxc - b) / safe_delta
    hue = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(delta > 0, (hue / 6.0) % 1.0, torch.zeros_like(hue))
    return torch.stack([hue, saturation, maxc], dim=1)


def hsv_to_rgb(x: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = x.unbind(dim=1)
    sector = torch.floor(h * 6.0)
    f = h * 6.0 - sector
    sector = sector.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = torch.stack(
        [
            torch.stack([v, q, p, p, t, v], dim=1),
            torch.stack([t, v, v, q, p, p], dim=1),
            torch.stack([p, p, t, v, v, q], dim=1),
        ],
        dim=1,
    )  # (B, 3 channels, 6 sectors, H, W)
    index = sector.unsqueeze(1).unsqueeze(2).expand(-1, 3, 1, -1, -1)
    return table.gather(2, index).squeeze(2)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Per-image hue rotation by ``shift`` (B,) in [-0.5, 0.5] turns; no-op on one-channel images."""
    if x.shape[1] == 1:
        return x
    hsv = rgb_to_hsv(x)
    hue = (hsv[:, 0] + shift.view(-1, 1, 1)) % 1.0
    return hsv_to_rgb(torch.stack([hue, hsv[:, 1], hsv[:, 2]], dim=1)).clamp(0, 1)


class BatchRandomResizedCrop(nn.Module):
    """RandomResizedCrop + RandomHorizontalFlip on a batch, by one bilinear ``grid_sample``.

    Crop boxes follow torchvision's rule exactly (integer boxes; area fraction in ``scale``, log-uniform aspect
    ratio in ``ratio``, ten tries, then a centre crop clamped to ``ratio``).

    Args:
        size: output side.
        scale: range of the crop's area fraction.
        ratio: range of the crop's aspect ratio.
        flip_p: probability of a horizontal flip (0 to disable).
    """

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = CIFAR_CROP_SCALE,
        ratio: tuple[float, float] = CROP_RATIO,
        flip_p: float = FLIP_P,
    ) -> None:
        super().__init__()
        self.size = size
        self.scale = scale
        self.ratio = ratio
        self.flip_p = flip_p

    def crop_boxes(self, b: int, height: int, width: int, generator: torch.Generator, device: torch.device) -> Tensor:
        """(B, 4) float boxes ``(top, left, h, w)`` in pixels, drawn as torchvision does."""
        area = height * width
        target = area * _uniform(self.scale[0], self.scale[1], (b, CROP_TRIES), generator, device)
        log_ratio = _uniform(math.log(self.ratio[0]), math.log(self.ratio[1]), (b, CROP_TRIES), generator, device)
        aspect = torch.exp(log_ratio)
        w = torch.round(torch.sqrt(target * aspect))
        h = torch.round(torch.sqrt(target / aspect))
        valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = valid.float().argmax(dim=1, keepdim=True)  # first valid try (0 if none)
        w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
        top = torch.floor(torch.rand(b, generator=generator, device=device) * (height - h + 1))
        left = torch.floor(torch.rand(b, generator=generator, device=device) * (width - w + 1))
        # Fallback when no try fits: the whole image, clamped to the ratio range, centred.
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            fw, fh = width, round(width / min(self.ratio))
        elif in_ratio > max(self.ratio):
            fw, fh = round(height * max(self.ratio)), height
        else:
            fw, fh = width, height
        none = ~valid.any(dim=1)
        h = torch.where(none, torch.full_like(h, fh), h)
        w = torch.where(none, torch.full_like(w, fw), w)
        top = torch.where(none, torch.full_like(top, (height - fh) // 2), top)
        left = torch.where(none, torch.full_like(left, (width - fw) // 2), left)
        return torch.stack([top, left, h, w], dim=1)

    def forward(self, x: Tensor, generator: torch.Generator) -> Tensor:
        b, _, height, width = x.shape
        top, left, h, w = self.crop_boxes(b, height, width, generator, x.device).unbind(dim=1)
        flip = torch.rand(b, generator=generator, device=x.device) < self.flip_p
        sign = torch.where(flip, -1.0, 1.0).to(x.dtype)
        # Output coordinates u in [-1, 1] map to input (left + w * (u + 1) / 2) pixels, in grid_sample's
        # align_corners=False convention: normalised input = (2 * left + w) / W - 1 + (w / W) * u.
        theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = sign * w / width
        theta[:, 0, 2] = (2 * left + w) / width - 1
        theta[:, 1, 1] = h / height
        theta[:, 1, 2] = (2 * top + h) / height - 1
        grid = nn.functional.affine_grid(theta, [b, x.shape[1], self.size, self.size], align_corners=False)
        return nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class BatchColorJitter(nn.Module):
    """ColorJitter on a batch: per image, brightness, contrast, saturation and hue factors drawn as torchvision
    does and applied in a random order; the whole jitter is applied with probability ``p`` (RandomApply)."""

    #: Needs colour channels (RGB): left out of, or refused for, images of other bands.
    changes_colour = True

    def __init__(self, brightness: float, contrast: float, saturation: float, hue: float, p: float = 1.0) -> None:
        super().__init__()
        if not 0 <= hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {hue}")
        self.ranges = [(max(0.0, 1 - brightness), 1 + brightness), (max(0.0, 1 - contrast), 1 + contrast),
                       (max(0.0, 1 - saturation), 1 + saturation), (-hue, hue)]  # fmt: skip
        self.p = p

    def forward(self, x: Tensor, generator: torch.Generator) -> Tensor:
        b, device = x.shape[0], x.device
        apply = torch.rand(b, generator=generator, device=device) < self.p
        order = torch.rand(b, 4, generator=generator, device=device).argsort(dim=1)
        factors = [_uniform(low, high, (b,), generator, device) for low, high in self.ranges]
        ops: list[Callable[[Tensor, Tensor], Tensor]] = [
            adjust_brightness,
            adjust_contrast,
            adjust_saturation,
            adjust_hue,
        ]
        out = x.clone()
        for position in range(4):
            for op_index, op in enumerate(ops):
                rows = (apply & (order[:, position] == op_index)).nonzero().squeeze(1)
                if rows.numel():
                    out[rows] = op(out[rows], factors[op_index][rows])
        return out


class BatchRandomGrayscale(nn.Module):
    """RandomGrayscale on a batch: each image becomes its luma (repeated over channels) with probability ``p``."""

    changes_colour = True

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor, generator: torch.Generator) -> Tensor:
        chosen = torch.rand(x.shape[0], generator=generator, device=x.device) < self.p
        return torch.where(_per_image(chosen), grayscale(x).expand_as(x), x)


class BatchGaussianBlur(nn.Module):
    """RandomApply(GaussianBlur) on a batch: per image a sigma drawn uniformly from ``sigma``, a fixed odd kernel,
    reflect padding, applied with probability ``p``."""

    def __init__(self, kernel_size: int, sigma: tuple[float, float], p: float) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        self.kernel_size = kernel_size
        self.sigma = sigma
        self.p = p

    def forward(self, x: Tensor, generator: torch.Generator) -> Tensor:
        b, c, height, width = x.shape
        chosen = torch.rand(b, generator=generator, device=x.device) < self.p
        sigma = _uniform(self.sigma[0], self.sigma[1], (b,), generator, x.device)
        half = self.kernel_size // 2
        if half == 0 or not bool(chosen.any()):
            return x
        offsets = torch.arange(-half, half + 1, device=x.device, dtype=x.dtype)
        kernel = torch.exp(-0.5 * (offsets[None] / sigma[:, None]) ** 2)
        kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (B*C, K)
        flat = x.reshape(1, b * c, height, width)
        flat = nn.functional.pad(flat, (half, half, half, half), mode="reflect")
        flat = nn.functional.conv2d(flat, kernel.view(b * c, 1, 1, -1), groups=b * c)
        flat = nn.functional.conv2d(flat, kernel.view(b * c, 1, -1, 1), groups=b * c)
        return torch.where(_per_image(chosen), flat.view(b, c, height, width), x)


class _DigitOp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.op = RandomDigitAugment()

    def forward(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return self.op(x, generator=generator)


class BatchAugment(nn.Module):
    """A chain of batch ops followed by normalisation: ``(B, C, H, W)`` in [0, 1] -> normalised float batch.

    Example:
        >>> aug = build_batch_augment("cifar", 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
        >>> out = aug(torch.rand(4, 3, 32, 32), torch.Generator().manual_seed(0))
        >>> out.shape
        torch.Size([4, 3, 32, 32])
    """

    mean: Tensor
    std: Tensor

    def __init__(self, ops: Sequence[nn.Module], mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.ops = nn.ModuleList(ops)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor, generator: torch.Generator) -> Tensor:
        for op in self.ops:
            x = op(x, generator)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


BATCH_AUGMENTATIONS: Registry[Callable[[int], list[nn.Module]]] = Registry("batch augmentation preset")
#: The image side at which a preset's ops are built only to be looked at (:func:`changes_colour`).
BATCH_PROBE_SIDE = 32


@BATCH_AUGMENTATIONS.register("digits")
def digits_batch_ops(image_size: int) -> list[nn.Module]:
    return [_DigitOp()]


@BATCH_AUGMENTATIONS.register("cifar")
def cifar_batch_ops(image_size: int) -> list[nn.Module]:
    """The authors' CIFAR recipe: crop, colour jitter, grayscale; no flip."""
    j = CIFAR_JITTER
    return [
        BatchRandomResizedCrop(image_size, flip_p=0.0),
        BatchColorJitter(j, j, j, j),
        BatchRandomGrayscale(GRAYSCALE_P),
    ]


@BATCH_AUGMENTATIONS.register("cifar_flip")
def cifar_flip_batch_ops(image_size: int) -> list[nn.Module]:
    """The CIFAR recipe with a horizontal flip. Per image the flip comes last; it commutes with the colour ops, so it
    joins the crop."""
    j = CIFAR_JITTER
    return [
        BatchRandomResizedCrop(image_size, flip_p=FLIP_P),
        BatchColorJitter(j, j, j, j),
        BatchRandomGrayscale(GRAYSCALE_P),
    ]


@BATCH_AUGMENTATIONS.register("crop_flip")
def crop_flip_batch_ops(image_size: int) -> list[nn.Module]:
    """A random resized crop and a horizontal flip, no colour change."""
    return [BatchRandomResizedCrop(image_size, flip_p=FLIP_P)]


@BATCH_AUGMENTATIONS.register("imagenet")
def imagenet_batch_ops(image_size: int) -> list[nn.Module]:
    blur_kernel = 2 * (image_size // 20) + 1  # as the per-image preset
    return [
        BatchRandomResizedCrop(image_size, flip_p=FLIP_P),
        BatchColorJitter(*IMAGENET_JITTER, p=IMAGENET_JITTER_P),
        BatchRandomGrayscale(GRAYSCALE_P),
        BatchGaussianBlur(blur_kernel, IMAGENET_BLUR_SIGMA, IMAGENET_BLUR_P),
    ]


def changes_colour(preset: str) -> bool:
    """Whether augmentation ``preset`` has an op that needs RGB colour (jitter, grayscale)."""
    return any(getattr(op, "changes_colour", False) for op in BATCH_AUGMENTATIONS.get(preset)(BATCH_PROBE_SIDE))


def build_batch_augment(preset: str, image_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> BatchAugment:
    """The batch counterpart of augmentation preset ``preset``."""
    return BatchAugment(BATCH_AUGMENTATIONS.get(preset)(image_size), mean, std)
