"""What the reconstruction methods hide: exactly the share asked for, where asked for."""

from __future__ import annotations

import pytest
import torch

from invprop.data.masks import centre_region_weights, centre_square, masking_noise, random_region_masks


def test_masking_noise_destroys_a_fixed_number_of_components_per_image_at_random_places() -> None:
    torch.manual_seed(0)
    masks = masking_noise((6, 3, 4, 4), 0.25)
    assert masks.dtype == torch.bool and masks.flatten(1).sum(dim=1).tolist() == [12] * 6
    assert len({tuple(m.flatten().nonzero().flatten().tolist()) for m in masks}) == 6  # each image its own
    assert not masking_noise((2, 1, 4, 4), 0.0).any()


def test_the_centre_region_hides_the_square_less_its_band_and_weighs_the_band() -> None:
    assert centre_square(128, 0.5) == (32, 96)
    hidden, weights = centre_region_weights(16, 0.5, overlap=1, overlap_weight=10.0)
    assert hidden[0, 0].nonzero().min().item() == 5 and hidden[0, 0].nonzero().max().item() == 10  # 4..12 less 1
    assert int(hidden.sum()) == 6 * 6
    assert float(weights[0, 0, 4, 4]) == 10.0 and float(weights[0, 0, 7, 7]) == 1.0 and float(weights[0, 0, 0, 0]) == 0
    assert float(weights.sum()) == pytest.approx(36 + 10 * (64 - 36))
    assert torch.equal(weights[hidden], torch.ones(36))


def test_random_regions_hide_exactly_the_share_in_blobs_larger_than_a_pixel() -> None:
    torch.manual_seed(1)
    masks = random_region_masks(4, 32, 0.25, cells=4)
    assert masks.shape == (4, 1, 32, 32) and masks.flatten(1).sum(dim=1).tolist() == [256] * 4
    # blobs: a hidden pixel's right-hand neighbour is mostly hidden too (independent pixels: 25%)
    m = masks[:, 0]
    together = (m[:, :, :-1] & m[:, :, 1:]).sum() / m[:, :, :-1].sum()
    assert float(together) > 0.7
