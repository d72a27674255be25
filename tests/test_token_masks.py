"""Block-wise masks (BEiT's, as iBOT draws them): made of rectangles, never past their count, the share of masked
images and the ratio range kept, reproducible from a generator, and bad ranges refused."""

from __future__ import annotations

import math

import pytest
import torch

from invprop.core.token_masks import block_masks, block_shape, block_token_mask, block_token_masks, multi_block_masks


def _beit_mask(rows: int, cols: int, count: float, generator: torch.Generator) -> torch.Tensor:
    """BEiT's Alg. 1 written out for one image, one rectangle at a time (the oracle of the batched draw)."""
    mask = torch.zeros(rows, cols, dtype=torch.bool)
    smallest, hidden = (min(rows, cols) // 3) ** 2, 0
    while hidden < count:
        left, added = count - hidden, 0
        for _ in range(10):
            area = smallest + (left - smallest) * float(torch.rand((), generator=generator))
            ratio = math.exp(
                math.log(0.3) + (math.log(1 / 0.3) - math.log(0.3)) * float(torch.rand((), generator=generator))
            )
            h, w = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
            if h < rows and w < cols:
                top = int(torch.randint(0, rows - h + 1, (), generator=generator))
                start = int(torch.randint(0, cols - w + 1, (), generator=generator))
                new = int((~mask[top : top + h, start : start + w]).sum())
                if 0 < new <= left:
                    mask[top : top + h, start : start + w] = True
                    added = new
                    break
        if added == 0:
            break
        hidden += added
    return mask.flatten()


def test_the_batched_draw_has_the_law_of_beits_one_image_loop() -> None:
    # The hidden count's distribution and each token's chance of being hidden, over 3,000 draws of each.
    n, count = 3000, 20.0
    batched = block_token_masks(torch.full((n,), count), 8, 8, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    looped = torch.stack([_beit_mask(8, 8, count, generator) for _ in range(n)])
    histograms = [torch.bincount(m.sum(dim=1), minlength=65).double() / n for m in (batched, looped)]
    assert 0.5 * float((histograms[0] - histograms[1]).abs().sum()) < 0.06  # total variation
    assert float((batched.double().mean(0) - looped.double().mean(0)).abs().max()) < 0.05


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


def test_block_shapes_follow_ijepas_one_draw_for_scale_and_aspect() -> None:
    # u = 0.5 on a 14 x 14 grid: area int(196 x 0.175) = 34, ratio 1.125: h = round(sqrt(38.25)) = 6,
    # w = round(sqrt(30.2)) = 5.
    assert block_shape(14, 14, 0.5, (0.15, 0.2), (0.75, 1.5)) == (6, 5)
    assert block_shape(8, 8, 0.99, (0.85, 1.0), (1.0, 1.0)) == (7, 7)  # kept below the grid's side


def test_multi_block_masks_give_rectangular_targets_and_a_context_without_their_tokens() -> None:
    torch.manual_seed(0)
    masks = multi_block_masks(6, 14, 14, 4, (0.15, 0.2), (0.75, 1.5), (0.85, 1.0), 10)
    m, b, k_t = masks.targets.shape
    assert (m, b) == (4, 6) and masks.context.shape[0] == 6 and masks.context.shape[1] > 10
    for image in range(6):
        context = set(masks.context[image].tolist())
        for block in masks.targets[:, image]:
            rows_, cols_ = block // 14, block % 14
            height, width = int(rows_.max() - rows_.min()) + 1, int(cols_.max() - cols_.min()) + 1
            assert height * width == k_t  # a full rectangle (same shape in the whole batch, so nothing cut)
            assert not context & set(block.tolist())


def test_a_grid_too_small_for_min_keep_is_refused() -> None:
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="lower min_keep"):
        multi_block_masks(2, 4, 4, 4, (0.15, 0.2), (0.75, 1.5), (0.85, 1.0), 10)
