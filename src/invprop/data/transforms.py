"""Augmentation presets (training) and their deterministic evaluation counterparts.

Presets, by name: ``digits`` (small affine, intensity, noise, for tiny grayscale images), ``cifar`` and ``imagenet``
(the authors' recipes: Wang et al., 2020, and their public code; the CIFAR one has no horizontal flip) and
``cifar_flip`` (the CIFAR recipe with a flip); ``exemplar`` (Exemplar-CNN's transformations) registers itself from
:mod:`invprop.data.exemplar_augment`. Each preset builds a pair (train transform, eval transform) that
maps a PIL image or a (C, H, W) float tensor in [0, 1] to a normalised (C, H, W) float tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torchvision.transforms as T
from torch import Tensor, nn

from invprop.registry import Registry

Transform = Callable[[object], Tensor]


@dataclass(frozen=True)
class TransformPair:
    train: Transform
    eval: Transform


AUGMENTATIONS: Registry[Callable[..., TransformPair]] = Registry("augmentation preset")


class MultiView:
    """``views`` independent draws of ``transform`` on one image, stacked: (views, C, H, W).

    Under a seeded item (:class:`invprop.data.IndexedDataset`) the draws are consecutive in the item's own RNG, so
    they are reproducible and differ from each other.
    """

    def __init__(self, transform: Transform, views: int) -> None:
        if views < 1:
            raise ValueError(f"views must be at least 1, got {views}")
        self.transform = transform
        self.views = views

    def __call__(self, image: object) -> Tensor:
        return torch.stack([self.transform(image) for _ in range(self.views)])


#: Digits preset: rotation (degrees), isotropic scale (+-fraction), translation (+-fraction of the image),
#: intensity scale (+-fraction) and additive Gaussian noise (std, in [0, 1] pixel units).
DIGITS_MAX_ROTATION = 10.0
DIGITS_MAX_SCALE = 0.1
DIGITS_MAX_SHIFT = 0.1
DIGITS_MAX_INTENSITY = 0.2
DIGITS_NOISE_STD = 0.05

#: The authors' CIFAR recipe: crop scale range, jitter strength, grayscale probability.
CIFAR_CROP_SCALE = (0.2, 1.0)
CIFAR_JITTER = 0.4
GRAYSCALE_P = 0.2
#: Probability of a horizontal flip (the ImageNet recipe and ``cifar_flip``).
FLIP_P = 0.5
#: The authors' ImageNet recipe: jitter (brightness, contrast, saturation, hue), probabilities, blur sigma.
IMAGENET_JITTER = (0.4, 0.4, 0.4, 0.1)
IMAGENET_JITTER_P = 0.8
IMAGENET_BLUR_P = 0.5
IMAGENET_BLUR_SIGMA = (0.1, 2.0)
IMAGENET_RESIZE = 256


class Normalize(nn.Module):
    """Per-channel standardisation of a (..., C, H, W) tensor."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


class RandomDigitAugment(nn.Module):
    """Small random affine warp (rotation, scale, shift), intensity scaling and Gaussian noise.

    Works on one (C, H, W) image or a (B, C, H, W) batch in [0, 1]; each image gets its own draw. Output is
    clamped to [0, 1].
    """

    def __init__(
        self,
        max_rotation: float = DIGITS_MAX_ROTATION,
        max_scale: float = DIGITS_MAX_SCALE,
        max_shift: float = DIGITS_MAX_SHIFT,
        max_intensity: float = DIGITS_MAX_INTENSITY,
        noise_std: float = DIGITS_NOISE_STD,
    ) -> None:
        super().__init__()
        self.max_rotation = max_rotation
        self.max_scale = max_scale
        self.max_shift = max_shift
        self.max_intensity = max_intensity
        self.noise_std = noise_std

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        single = x.dim() == 3
        batch = x.unsqueeze(0) if single else x
        b = batch.shape[0]

        def uniform(*shape: int) -> Tensor:
            return torch.rand(*shape, generator=generator, device=batch.device) * 2 - 1

        angle = uniform(b) * math.radians(self.max_rotation)
        scale = 1 + uniform(b) * self.max_scale
        shift = uniform(b, 2) * self.max_shift * 2  # affine_grid coordinates span [-1, 1]
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [torch.stack([cos, -sin, shift[:, 0]], dim=1), torch.stack([sin, cos, shift[:, 1]], dim=1)], dim=1
        )
        grid = nn.functional.affine_grid(theta, list(batch.shape), align_corners=False)
        out = nn.functional.grid_sample(batch, grid, align_corners=False, padding_mode="zeros")
        out = out * (1 + uniform(b, 1, 1, 1) * self.max_intensity)
        noise = torch.randn(out.shape, generator=generator, device=out.device) * self.noise_std
        out = (out + noise).clamp_(0, 1)
        return out.squeeze(0) if single else out


def to_tensor() -> Transform:
    """PIL image -> float tensor in [0, 1]; tensors pass through."""
    pil = T.ToTensor()
    return lambda img: img if isinstance(img, Tensor) else pil(img)


@AUGMENTATIONS.register("digits")
def digits_preset(image_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> TransformPair:
    norm = Normalize(mean, std)
    return TransformPair(
        train=T.Compose([to_tensor(), RandomDigitAugment(), norm]),
        eval=T.Compose([to_tensor(), norm]),
    )


def _cifar_pair(image_size: int, mean: tuple[float, ...], std: tuple[float, ...], flip: bool) -> TransformPair:
    j = CIFAR_JITTER
    return TransformPair(
        train=T.Compose(
            [
                T.RandomResizedCrop(image_size, scale=CIFAR_CROP_SCALE, antialias=True),
                T.ColorJitter(j, j, j, j),
                T.RandomGrayscale(GRAYSCALE_P),
                *([T.RandomHorizontalFlip(FLIP_P)] if flip else []),
                to_tensor(),
                Normalize(mean, std),
            ]
        ),
        eval=T.Compose(
            [T.Resize(image_size, antialias=True), T.CenterCrop(image_size), to_tensor(), Normalize(mean, std)]
        ),
    )


@AUGMENTATIONS.register("cifar")
def cifar_preset(image_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> TransformPair:
    """The authors' CIFAR recipe: crop, colour jitter, grayscale -- no horizontal flip (their code has it commented
    out)."""
    return _cifar_pair(image_size, mean, std, flip=False)


@AUGMENTATIONS.register("cifar_flip")
def cifar_flip_preset(image_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> TransformPair:
    """The authors' CIFAR recipe plus a horizontal flip (p = 0.5), as most CIFAR recipes of the field have."""
    return _cifar_pair(image_size, mean, std, flip=True)


@AUGMENTATIONS.register("crop_flip")
def crop_flip_preset(image_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> TransformPair:
    """A random resized crop (20-100% of the area) and a horizontal flip, no colour change: for methods whose views
    are the image's colours themselves (CMC's L and ab; Tian et al., 2019, the authors' train_CMC.py)."""
    return TransformPair(
        train=T.Compose(
            [
                T.RandomResizedCrop(image_size, scale=CIFAR_CROP_SCALE, antialias=True),
                T.RandomHorizontalFlip(FLIP_P),
                to_tensor(),
                Normalize(mean, std),
            ]
        ),
        eval=T.Compose(
            [T.Resize(image_size, antialias=True), T.CenterCrop(image_size), to_tensor(), Normalize(mean, std)]
        ),
    )


@AUGMENTATIONS.register("imagenet")
def imagenet_preset(image_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> TransformPair:
    blur_kernel = 2 * (image_size // 20) + 1  # about 10% of the image side, odd
    resize = round(image_size * IMAGENET_RESIZE / 224)
    return TransformPair(
        train=T.Compose(
            [
                T.RandomResizedCrop(image_size, scale=CIFAR_CROP_SCALE, antialias=True),
                T.RandomApply([T.ColorJitter(*IMAGENET_JITTER)], p=IMAGENET_JITTER_P),
                T.RandomGrayscale(GRAYSCALE_P),
                T.RandomApply([T.GaussianBlur(blur_kernel, IMAGENET_BLUR_SIGMA)], p=IMAGENET_BLUR_P),
                T.RandomHorizontalFlip(FLIP_P),
                to_tensor(),
                Normalize(mean, std),
            ]
        ),
        eval=T.Compose([T.Resize(resize, antialias=True), T.CenterCrop(image_size), to_tensor(), Normalize(mean, std)]),
    )


def build_transforms(preset: str, image_size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> TransformPair:
    """The (train, eval) transforms of augmentation ``preset``."""
    return AUGMENTATIONS.get(preset)(image_size, mean, std)
