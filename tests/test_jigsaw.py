"""The jigsaw transformation: every cell once per image, in the order of its permutation, as a window of the cell
at a random place, resized and normalised on its own."""

from __future__ import annotations

import pytest
import torch

from invprop.data.jigsaw import jigsaw_tiles
from invprop.data.patches import normalise_tiles


def test_each_image_s_tiles_are_its_cells_in_the_permuted_order() -> None:
    torch.manual_seed(0)
    images = torch.arange(2 * 36, dtype=torch.float).reshape(2, 1, 6, 6)
    tiles, order = jigsaw_tiles(images, grid=3, tile_size=2)
    assert tiles.shape == (18, 1, 2, 2) and order.shape == (2, 9)
    for b in range(2):
        assert sorted(order[b].tolist()) == list(range(9))  # a permutation
        for k in range(9):
            row, col = divmod(int(order[b, k]), 3)
            assert torch.equal(tiles[b * 9 + k, 0], images[b, 0, 2 * row : 2 * row + 2, 2 * col : 2 * col + 2])
    assert not torch.equal(order[0], order[1])  # drawn per image


def test_tiles_are_resized_and_small_images_are_refused() -> None:
    tiles, _ = jigsaw_tiles(torch.rand(4, 3, 8, 8))  # 2x2 cells of a digit, blown up to the image side
    assert tiles.shape == (36, 3, 8, 8)
    with pytest.raises(ValueError, match="image side / grid must be at least 1"):
        jigsaw_tiles(torch.rand(1, 1, 2, 2), grid=3)


def test_paper_tiles_are_normalised_windows_of_the_permuted_cells() -> None:
    torch.manual_seed(1)
    images = torch.rand(2, 3, 30, 30)
    order = torch.stack([torch.randperm(9) for _ in range(2)])
    raw, _ = jigsaw_tiles(images, grid=3, tile_size=8, order=order, tile_share=0.8)
    assert raw.shape == (18, 3, 8, 8)
    torch.manual_seed(2)
    tiles, _ = jigsaw_tiles(images, grid=3, tile_size=None, order=order, tile_share=0.8, normalise=True)
    torch.manual_seed(2)
    top, left = torch.randint(3, (18, 1)), torch.randint(3, (18, 1))  # the same draws: 8-pixel windows in 10
    for b in range(2):
        for k in range(9):
            row, col = divmod(int(order[b, k]), 3)
            y, x = 10 * row + int(top[9 * b + k]), 10 * col + int(left[9 * b + k])
            window = images[b : b + 1, :, y : y + 8, x : x + 8]
            expected = torch.nn.functional.interpolate(window, size=(30, 30), mode="bilinear", align_corners=False)
            expected = normalise_tiles(expected)[0]
            assert torch.allclose(tiles[9 * b + k], expected, atol=1e-5)
