"""invprop.data.exemplar_augment: Exemplar-CNN's transformations in both pipelines."""

from __future__ import annotations

import torch

from invprop.data import build_batch_augment, build_transforms
from invprop.data.exemplar_augment import ExemplarAugment, principal_colour_scaling


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_principal_colour_scaling_by_one_is_the_identity() -> None:
    x = torch.rand(3, 3, 8, 8)
    torch.testing.assert_close(principal_colour_scaling(x, torch.zeros(3, 3)), x, atol=1e-5, rtol=0)


def test_principal_colour_scaling_scales_each_component_by_its_own_factor() -> None:
    # Colours spread along one direction (the first component) and a little along another: doubling the first
    # component's projections quadruples the variance along it and keeps the mean colour.
    torch.manual_seed(0)
    direction = torch.tensor([1.0, 1.0, 0.0]) / 2**0.5
    other = torch.tensor([0.0, 0.0, 1.0])
    t, u = torch.randn(64) * 0.08, torch.randn(64) * 0.02
    t, u = t - t.mean(), u - u.mean()
    u = u - (u @ t) / (t @ t) * t  # uncorrelated in the sample: the principal components are exactly the two
    pixels = 0.5 + t[:, None] * direction + u[:, None] * other  # (64, 3)
    x = pixels.T.reshape(1, 3, 8, 8)
    y = principal_colour_scaling(x, torch.tensor([[1.0, 0.0, 0.0]]))
    out = y.reshape(3, 64).T
    torch.testing.assert_close(out.mean(dim=0), pixels.mean(dim=0), atol=1e-5, rtol=0)
    along = lambda p: ((p - p.mean(dim=0)) @ direction).var()  # noqa: E731
    across = lambda p: ((p - p.mean(dim=0)) @ other).var()  # noqa: E731
    assert abs(float(along(out) / along(pixels)) - 4) < 1e-3
    assert abs(float(across(out) / across(pixels)) - 1) < 1e-3


def test_exemplar_augment_keeps_shape_and_range_and_repeats_under_a_seed() -> None:
    aug = ExemplarAugment()
    for channels in (1, 3):
        x = torch.rand(6, channels, 16, 16)
        a, b = aug(x, gen(3)), aug(x, gen(3))
        assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
        torch.testing.assert_close(a, b)
        assert not torch.allclose(a, aug(x, gen(4)))
        assert aug(x[0], gen(3)).shape == x[0].shape


def test_exemplar_augment_transforms_colour_only_on_colour_images() -> None:
    # A flat grey image: geometry (reflection at the border) leaves it grey; on three channels the colour part
    # changes its value, on one channel nothing does.
    grey = torch.full((4, 1, 12, 12), 0.4)
    torch.testing.assert_close(ExemplarAugment()(grey, gen()), grey, atol=1e-6, rtol=0)
    colour = grey.expand(4, 3, 12, 12).contiguous()
    assert not torch.allclose(ExemplarAugment()(colour, gen()), colour)


def test_the_exemplar_preset_is_in_both_pipelines() -> None:
    per_image = build_transforms("exemplar", 32, (0.5,) * 3, (0.25,) * 3)
    assert per_image.train(torch.rand(3, 32, 32)).shape == (3, 32, 32)
    torch.testing.assert_close(per_image.eval(torch.full((3, 32, 32), 0.5)), torch.zeros(3, 32, 32))
    batch = build_batch_augment("exemplar", 32, (0.5,) * 3, (0.25,) * 3)
    assert batch(torch.rand(4, 3, 32, 32), gen()).shape == (4, 3, 32, 32)
