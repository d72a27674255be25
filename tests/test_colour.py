"""Lab conversion, colour classes, soft encoding and rebalancing weights, on hand-made colours."""

from __future__ import annotations

import math

import pytest
import torch

from invprop.core.colour_space import rgb_to_lab
from invprop.data.colour import ab_bins, bin_histogram, rebalancing_weights, soft_encode


@pytest.mark.parametrize(
    ("rgb", "lab"),
    [
        ((1.0, 1.0, 1.0), (100.0, 0.0, 0.0)),
        ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
        ((1.0, 0.0, 0.0), (53.24, 80.09, 67.20)),  # the standard sRGB primaries' Lab values (D65)
        ((0.0, 1.0, 0.0), (87.73, -86.18, 83.18)),
        ((0.0, 0.0, 1.0), (32.30, 79.19, -107.86)),
    ],
)
def test_lab_of_known_colours(rgb, lab):
    got = rgb_to_lab(torch.tensor(rgb).view(1, 3, 1, 1)).flatten().tolist()
    assert all(math.isclose(g, e, abs_tol=0.05) for g, e in zip(got, lab, strict=True))


def test_grey_has_no_colour():
    lab = rgb_to_lab(torch.full((1, 3, 2, 2), 0.37))
    assert lab[:, 1:].abs().max() < 1e-3


def test_colour_classes_are_the_grid_points_of_the_srgb_gamut():
    bins = ab_bins()
    assert bins.shape[1] == 2 and 200 < bins.shape[0] < 400
    assert torch.equal(bins % 10, torch.zeros_like(bins))  # grid of spacing 10
    assert (bins == torch.tensor([0.0, 0.0])).all(dim=1).any()  # grey
    primaries = rgb_to_lab(torch.eye(3).view(3, 3, 1, 1))[:, 1:, 0, 0]
    nearest = torch.cdist(primaries, bins).min(dim=1).values
    assert (nearest <= 10 / math.sqrt(2) + 1e-4).all()  # each primary is within half a grid cell of a class


def test_soft_encoding_weights_the_five_nearest_bins():
    bins = ab_bins()
    ab = torch.tensor([20.0, -30.0]).view(1, 2, 1, 1)  # exactly on a grid point
    encoded = soft_encode(ab, bins)[0, :, 0, 0]
    assert math.isclose(float(encoded.sum()), 1.0, rel_tol=1e-6) and int((encoded > 0).sum()) == 5
    centre = int(((bins - torch.tensor([20.0, -30.0])).abs().sum(dim=1) == 0).nonzero())
    assert int(encoded.argmax()) == centre
    # The four grid neighbours at distance 10 share the rest: exp(-100 / 50) relative to the centre.
    assert math.isclose(float(encoded.sort(descending=True).values[1] / encoded[centre]), math.exp(-2), rel_tol=1e-4)


def test_rebalancing_weights_favour_rare_colours_and_average_to_one():
    bins = ab_bins()
    counts = torch.ones(bins.shape[0])
    grey = int((bins == 0).all(dim=1).nonzero())
    counts[grey] = 1000.0  # the common colour
    weights = rebalancing_weights(counts, bins)
    p = counts / counts.sum()
    smoothed = torch.exp(-(torch.cdist(bins.double(), bins.double()) ** 2) / 50) @ p.double()
    smoothed /= smoothed.sum()
    assert math.isclose(float((smoothed * weights.double()).sum()), 1.0, rel_tol=1e-5)
    assert float(weights[grey]) < float(weights.median())
    with pytest.raises(ValueError, match="at least one pixel"):
        rebalancing_weights(torch.zeros(bins.shape[0]), bins)


def test_histogram_counts_each_pixels_nearest_bin():
    bins = ab_bins()
    ab = torch.tensor([[0.0, 0.0], [1.0, -1.0], [21.0, -29.0]]).T.reshape(1, 2, 1, 3)
    counts = bin_histogram(ab, bins)
    assert float(counts.sum()) == 3
    grey = int((bins == 0).all(dim=1).nonzero())
    assert float(counts[grey]) == 2
