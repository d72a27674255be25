"""Colour spaces: YCbCr written out per pixel (BT.601), Lab's known points, and each channel's range over the sRGB
cube at its known corners."""

from __future__ import annotations

import pytest
import torch

from invprop.core.colour_space import channel_range, rgb_to_lab, rgb_to_ycbcr


def _ycbcr_of_one_pixel(r: float, g: float, b: float) -> list[float]:
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return [y, (b - y) / 1.772, (r - y) / 1.402]  # BT.601: Cb = (B - Y) / (2 - 2 Kb), Cr = (R - Y) / (2 - 2 Kr)


def test_ycbcr_matches_the_bt601_definition_pixel_by_pixel() -> None:
    images = torch.rand(2, 3, 3, 4, generator=torch.Generator().manual_seed(0))
    got = rgb_to_ycbcr(images)
    for b in range(2):
        for i in range(3):
            for j in range(4):
                expected = torch.tensor(_ycbcr_of_one_pixel(*images[b, :, i, j].tolist()))
                assert torch.allclose(got[b, :, i, j], expected, atol=1e-5)


def test_greys_have_no_chroma_in_either_space() -> None:
    grey = torch.full((1, 3, 2, 2), 0.4)
    assert torch.allclose(rgb_to_ycbcr(grey)[:, 1:], torch.zeros(1, 2, 2, 2), atol=1e-6)
    assert torch.allclose(rgb_to_lab(grey)[:, 1:], torch.zeros(1, 2, 2, 2), atol=1e-3)


def test_channel_ranges_are_the_known_extremes() -> None:
    low, high = channel_range(rgb_to_ycbcr)
    assert torch.allclose(low, torch.tensor([0.0, -0.5, -0.5]), atol=1e-6)
    assert torch.allclose(high, torch.tensor([1.0, 0.5, 0.5]), atol=1e-6)
    low, high = channel_range(rgb_to_lab)  # a at green and magenta, b at blue and yellow; L from black to white
    assert torch.allclose(low, torch.tensor([0.0, -86.18, -107.86]), atol=0.01)
    assert torch.allclose(high, torch.tensor([100.0, 98.24, 94.48]), atol=0.01)


@pytest.mark.parametrize("convert", [rgb_to_lab, rgb_to_ycbcr])
def test_conversions_stay_float32_inside_a_bf16_autocast_region(convert) -> None:  # type: ignore[no-untyped-def]
    images = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = convert(images)
    assert inside.dtype == torch.float32
    assert torch.equal(inside, convert(images))


def test_lab_to_rgb_inverts_rgb_to_lab_over_the_cube() -> None:
    from invprop.core.colour_space import lab_to_rgb, rgb_to_lab, srgb_cube

    cube = srgb_cube(9)
    assert torch.allclose(lab_to_rgb(rgb_to_lab(cube)), cube, atol=2e-4)
