"""Block-wise masks (BEiT's, as iBOT draws them): made of rectangles, never past their count, the share of masked
images and the ratio range kept, reproducible from a generator, and bad ranges refused."""

from __future__ import annotations

import pytest
import torch

from invprop.core.token_masks import block_masks, block_token_mask


@pytest.mark.parametrize("seed", range(20))
def test_a_block_mask_never_hides_more_than_its_count_and_hides_something(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    count = 3 + seed
    mask = block_token_mask(8, 8, count, generator=generator)
    assert mask.dtype == torch.bool and mask.shape == (64,)
    assert 0 < int(mask.sum()) <= count


def test_a_block_mask_is_made_of_blocks_not_scattered_tokens() -> None:
    # Of 16 tokens of 64 hidden at random, about a third have no hidden neighbour; in blocks of at least
    # a_min = (8 // 3)^2 = 4 tokens, only the last small block that fills the count can stand alone.
    lonely, hidden = 0, 0
    for seed in range(30):
        grid = block_token_mask(8, 8, 16, generator=torch.Generator().manual_seed(seed)).view(8, 8)
        for r, c in grid.nonzero().tolist():
            neighbours = [grid[rr, cc] for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1))
                          if 0 <= rr < 8 and 0 <= cc < 8]  # fmt: skip
            lonely += not any(neighbours)
            hidden += 1
    assert lonely / hidden < 0.05


def test_the_same_generator_state_draws_the_same_masks() -> None:
    first = block_masks(16, 4, 4, 0.5, (0.1, 0.5), generator=torch.Generator().manual_seed(7))
    second = block_masks(16, 4, 4, 0.5, (0.1, 0.5), generator=torch.Generator().manual_seed(7))
    third = block_masks(16, 4, 4, 0.5, (0.1, 0.5), generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, second) and not torch.equal(first, third)


def test_about_the_asked_share_of_images_is_masked_within_the_ratio_range() -> None:
    masks = block_masks(600, 8, 8, 0.5, (0.1, 0.5), generator=torch.Generator().manual_seed(0))
    hidden = masks.sum(dim=1)
    assert 0.42 < float((hidden > 0).float().mean()) < 0.58
    shares = hidden[hidden > 0].float() / 64
    assert float(shares.max()) <= 0.5 and 0.2 < float(shares.mean()) < 0.4


def test_probability_one_masks_every_image_and_zero_none() -> None:
    assert bool((block_masks(20, 4, 4, 1.0, (0.2, 0.4)).sum(dim=1) > 0).all())
    assert not block_masks(20, 4, 4, 0.0, (0.2, 0.4)).any()


@pytest.mark.parametrize("ratio", [(0.5, 0.1), (0.1, 1.0), (-0.1, 0.2)])
def test_a_bad_ratio_range_is_refused(ratio: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match="mask ratio range"):
        block_masks(2, 4, 4, 0.5, ratio)
