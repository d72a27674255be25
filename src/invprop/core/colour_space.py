"""Colour spaces of sRGB images: CIE Lab (colorization's and CMC's inputs) and YCbCr (CMC's other split), hue and
chroma (Larsson et al.'s colour targets), and the range each channel spans over the sRGB cube (what normalises a
converted image).

Lab follows the CIE definitions with the D65 white point (as scikit-image's ``rgb2lab``); YCbCr is ITU-R BT.601's
full-range form (JPEG's), with Cb and Cr centred on 0. Both convert in float32, also inside an autocast region.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import Tensor

#: sRGB (linear) -> CIE XYZ, and the D65 reference white.
RGB_TO_XYZ = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
D65_WHITE = (0.950456, 1.0, 1.088754)
#: sRGB -> Y, Cb, Cr (ITU-R BT.601, full range; Cb and Cr centred on 0).
RGB_TO_YCBCR = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
#: Colour samples per sRGB axis used to measure a colour space's channel ranges.
CUBE_SAMPLES = 64

_EPSILON_CUBE = (6.0 / 29.0) ** 3


def _srgb_to_linear(c: Tensor) -> Tensor:
    return torch.where(c <= 0.04045, c / 12.92, ((c.clamp_min(0) + 0.055) / 1.055) ** 2.4)


def _lab_f(t: Tensor) -> Tensor:
    return torch.where(
        t > _EPSILON_CUBE, t.clamp_min(_EPSILON_CUBE) ** (1.0 / 3.0), t / (3 * (6.0 / 29.0) ** 2) + 4.0 / 29.0
    )


def rgb_to_lab(rgb: Tensor) -> Tensor:
    """CIE Lab (D65) of sRGB images: (B, 3, H, W) in [0, 1] -> (B, 3, H, W) with L in [0, 100] and a, b about
    [-110, 110].

    Example:
        >>> [round(float(v), 2) for v in rgb_to_lab(torch.ones(1, 3, 1, 1)).flatten()]   # white
        [100.0, 0.0, 0.0]
    """
    with torch.autocast(rgb.device.type, enabled=False):  # float32 even inside a bf16 autocast region
        linear = _srgb_to_linear(rgb.float().clamp(0, 1))
        matrix = torch.tensor(RGB_TO_XYZ, device=rgb.device)
        white = torch.tensor(D65_WHITE, device=rgb.device).view(1, 3, 1, 1)
        xyz = torch.einsum("ij,bjhw->bihw", matrix, linear) / white
        fx, fy, fz = _lab_f(xyz).unbind(dim=1)
        return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=1)


def _linear_to_srgb(c: Tensor) -> Tensor:
    return torch.where(c <= 0.0031308, 12.92 * c, 1.055 * c.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)


def _lab_f_inverse(t: Tensor) -> Tensor:
    return torch.where(t > 6.0 / 29.0, t**3, 3 * (6.0 / 29.0) ** 2 * (t - 4.0 / 29.0))


def lab_to_rgb(lab: Tensor) -> Tensor:
    """sRGB images of CIE Lab (D65) ones, the inverse of :func:`rgb_to_lab`: (B, 3, H, W) -> (B, 3, H, W) in
    [0, 1] (colours outside the sRGB gamut clipped).

    Example:
        >>> rgb = torch.tensor([0.2, 0.5, 0.9]).view(1, 3, 1, 1)
        >>> [round(float(v), 4) for v in lab_to_rgb(rgb_to_lab(rgb)).flatten()]
        [0.2, 0.5, 0.9]
    """
    with torch.autocast(lab.device.type, enabled=False):
        lightness, a, b = lab.float().unbind(dim=1)
        fy = (lightness + 16) / 116
        f = torch.stack([fy + a / 500, fy, fy - b / 200], dim=1)
        white = torch.tensor(D65_WHITE, device=lab.device).view(1, 3, 1, 1)
        xyz = _lab_f_inverse(f) * white
        matrix = torch.linalg.inv(torch.tensor(RGB_TO_XYZ, device=lab.device, dtype=torch.float64)).float()
        linear = torch.einsum("ij,bjhw->bihw", matrix, xyz)
        return _linear_to_srgb(linear.clamp(0, 1)).clamp(0, 1)


def hue_chroma(rgb: Tensor) -> tuple[Tensor, Tensor]:
    """Larsson et al.'s (2017) colour targets of sRGB images (B, 3, ...) in [0, 1]: the HSV hue in [0, 1) (0 for
    greys, whose hue is undefined) and the chroma ``max(R, G, B) - min(R, G, B)`` in [0, 1], each (B, ...).

    Example:
        >>> hue, chroma = hue_chroma(torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.5, 0.5]]))  # green, grey
        >>> [round(float(v), 4) for v in hue], chroma.tolist()
        ([0.3333, 0.0], [1.0, 0.0])
    """
    with torch.autocast(rgb.device.type, enabled=False):
        x = rgb.float()
        top, bottom = x.max(dim=1), x.min(dim=1).values
        chroma = top.values - bottom
        r, g, b = x.unbind(dim=1)
        safe = chroma.clamp_min(1e-12)
        sector = torch.stack([((g - b) / safe) % 6, (b - r) / safe + 2, (r - g) / safe + 4], dim=1)
        hue = sector.gather(1, top.indices.unsqueeze(1)).squeeze(1) / 6
        return torch.where(chroma > 0, hue % 1.0, torch.zeros_like(hue)), chroma


def hue_chroma_to_rgb(hue: Tensor, chroma: Tensor, grey: Tensor) -> Tensor:
    """sRGB of a hue in [0, 1), a chroma and the mean of R, G and B (the grey image Larsson et al. colourise), each
    (B, ...) -> (B, 3, ...) in [0, 1] (clipped where no sRGB colour has them all).

    Example:
        >>> rgb = torch.tensor([0.2, 0.7, 0.4]).view(1, 3, 1)
        >>> h, c = hue_chroma(rgb)
        >>> [round(float(v), 4) for v in hue_chroma_to_rgb(h, c, rgb.mean(dim=1)).flatten()]
        [0.2, 0.7, 0.4]
    """
    with torch.autocast(hue.device.type, enabled=False):
        h6 = hue.float() % 1.0 * 6
        c = chroma.float()
        x = c * (1 - (h6 % 2 - 1).abs())
        zero = torch.zeros_like(c)
        candidates = torch.stack(
            [
                torch.stack([c, x, zero]),
                torch.stack([x, c, zero]),
                torch.stack([zero, c, x]),
                torch.stack([zero, x, c]),
                torch.stack([x, zero, c]),
                torch.stack([c, zero, x]),
            ]
        )  # (6, 3, B, ...)
        sector = h6.long().clamp(0, 5)
        picked = candidates.gather(0, sector.unsqueeze(0).unsqueeze(0).expand(1, 3, *sector.shape))[0]
        rgb = picked.movedim(0, 1)  # (B, 3, ...)
        return (rgb + (grey.float() - rgb.mean(dim=1)).unsqueeze(1)).clamp(0, 1)


def rgb_to_ycbcr(rgb: Tensor) -> Tensor:
    """YCbCr (ITU-R BT.601, full range) of sRGB images: (B, 3, H, W) in [0, 1] -> (B, 3, H, W) with Y in [0, 1] and
    Cb, Cr in [-0.5, 0.5].

    Example:
        >>> [round(float(v), 3) for v in rgb_to_ycbcr(torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1)).flatten()]  # red
        [0.299, -0.169, 0.5]
    """
    with torch.autocast(rgb.device.type, enabled=False):  # float32 even inside a bf16 autocast region
        matrix = torch.tensor(RGB_TO_YCBCR, device=rgb.device)
        return torch.einsum("ij,bjhw->bihw", matrix, rgb.float().clamp(0, 1))


#: A colour space: sRGB images (B, 3, H, W) in [0, 1] -> (B, 3, H, W).
ColourSpace = Callable[[Tensor], Tensor]


def srgb_cube(samples: int = CUBE_SAMPLES) -> Tensor:
    """(1, 3, samples^3, 1) the sRGB colours of a grid of ``samples`` points per axis over [0, 1], corners included,
    as a one-image batch.

    Example:
        >>> tuple(srgb_cube(2).shape), srgb_cube(2)[0, :, -1, 0].tolist()
        ((1, 3, 8, 1), [1.0, 1.0, 1.0])
    """
    axis = torch.linspace(0, 1, samples)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij")).reshape(1, 3, -1, 1)


@functools.lru_cache(maxsize=None)
def _cube_range(convert: ColourSpace) -> tuple[tuple[float, ...], tuple[float, ...]]:
    converted = convert(srgb_cube())[0, :, :, 0]
    low, high = converted.min(dim=1).values, converted.max(dim=1).values
    return tuple(low.tolist()), tuple(high.tolist())


def channel_range(convert: ColourSpace) -> tuple[Tensor, Tensor]:
    """(3,) the lowest and highest value of each channel of the colour space ``convert`` over the sRGB cube
    (sampled on a 64-point grid per axis, which holds the corners where the extremes lie).

    Example:
        >>> low, high = channel_range(rgb_to_lab)
        >>> round(float(low[0]), 2), round(float(high[0]), 2)
        (0.0, 100.0)
    """
    low, high = _cube_range(convert)
    return torch.tensor(low), torch.tensor(high)


__all__ = [
    "ColourSpace",
    "channel_range",
    "hue_chroma",
    "hue_chroma_to_rgb",
    "lab_to_rgb",
    "rgb_to_lab",
    "rgb_to_ycbcr",
    "srgb_cube",
]
