"""Patches on a grid (the jigsaw's cells, CPC's overlapping grid, context prediction's pairs): each patch the
image's own pixels at its place, windows at random places inside their cells, each tile normalised on its own."""

from __future__ import annotations

import pytest
import torch

from invprop.data.patches import grid_cells, grid_patches, normalise_tiles, resize_patches, windows_within_cells


@pytest.mark.parametrize(("patch", "stride"), [((8, 8), (4, 4)), ((3, 5), (3, 5)), ((4, 2), (1, 3))])
def test_every_grid_patch_is_the_window_at_its_place(patch: tuple[int, int], stride: tuple[int, int]) -> None:
    images = torch.randn(2, 3, 16, 12)
    found = grid_patches(images, patch, stride)
    rows, cols = (16 - patch[0]) // stride[0] + 1, (12 - patch[1]) // stride[1] + 1
    assert found.shape == (2, rows, cols, 3, *patch)
    for b in range(2):
        for r in range(rows):
            for c in range(cols):
                y, x = r * stride[0], c * stride[1]
                assert torch.equal(found[b, r, c], images[b, :, y : y + patch[0], x : x + patch[1]])


def test_cells_partition_the_image_row_by_row_and_misfits_are_refused() -> None:
    images = torch.randn(1, 2, 10, 10)
    cells = grid_cells(images, 3)  # 3x3 cells of 3x3 pixels; the last row and column are dropped
    assert cells.shape == (1, 9, 2, 3, 3)
    for k in range(9):
        row, col = divmod(k, 3)
        assert torch.equal(cells[0, k], images[0, :, 3 * row : 3 * row + 3, 3 * col : 3 * col + 3])
    with pytest.raises(ValueError, match="a 12x4 patch does not fit in 10x10 images"):
        grid_patches(images, (12, 4), (1, 1))
    with pytest.raises(ValueError, match="image side / grid must be at least 1"):
        grid_cells(torch.rand(1, 1, 2, 2), grid=3)


def test_patches_are_resized_to_the_side_asked_for() -> None:
    patches = torch.rand(5, 3, 4, 4)
    assert resize_patches(patches, None) is patches and resize_patches(patches, 4) is patches
    assert resize_patches(patches, 8).shape == (5, 3, 8, 8)


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
