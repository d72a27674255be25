"""The jigsaw transformation: every cell once per image, in the order of its permutation, as a window of the cell
at a random place, resized and normalised on its own."""

from __future__ import annotations

import pytest
import torch

from invprop.data.jigsaw import jigsaw_tiles, normalise_tiles, windows_within_cells


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


def test_windows_are_random_blocks_of_their_own_cells() -> None:
    torch.manual_seed(0)
    cells = torch.arange(200 * 10 * 10, dtype=torch.float).reshape(200, 1, 10, 10)
    windows = windows_within_cells(cells, share=64 / 75)
    assert windows.shape == (200, 1, 9, 9)  # round(0.853 x 10)
    offsets = set()
    for n in range(200):
        first = int(windows[n, 0, 0, 0]) - n * 100  # the window's top-left pixel in its own cell
        y, x = divmod(first, 10)
        assert 0 <= y <= 1 and 0 <= x <= 1
        assert torch.equal(windows[n, 0], cells[n, 0, y : y + 9, x : x + 9])
        offsets.add((y, x))
    assert offsets == {(0, 0), (0, 1), (1, 0), (1, 1)}  # every place is drawn
    assert windows_within_cells(cells, share=1.0) is cells
    assert windows_within_cells(cells[:, :, :2, :2], share=0.1).shape == (200, 1, 1, 1)  # at least one pixel
    with pytest.raises(ValueError, match=r"share must be in \(0, 1\], got 0"):
        windows_within_cells(cells, share=0)


def test_each_tile_is_normalised_on_its_own() -> None:
    torch.manual_seed(0)
    tiles = torch.rand(3, 2, 4, 4) * torch.tensor([1.0, 5.0, 0.1]).view(3, 1, 1, 1) + 7
    tiles[2, 1] = 3.0  # a constant channel
    out = normalise_tiles(tiles)
    for n in range(3):
        for c in range(2):
            t = tiles[n, c]
            if n == 2 and c == 1:
                assert torch.equal(out[n, c], torch.zeros(4, 4))
            else:
                assert torch.allclose(out[n, c], (t - t.mean()) / t.std(unbiased=False), atol=1e-5)


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
