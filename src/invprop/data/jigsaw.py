"""The jigsaw transformation of a batch of images (Noroozi & Favaro, 2016; PIRL's transformation t, Misra & van der
Maaten, 2020, Sec. 3): a grid of tiles per image, shuffled by a random permutation per image, with Noroozi &
Favaro's defences against shortcuts (gaps and jitter, tiles normalised on their own) from
:mod:`invprop.data.patches`."""

from __future__ import annotations

import torch
from torch import Tensor

from invprop.data.patches import grid_cells, normalise_tiles, resize_patches, windows_within_cells
from invprop.settings import AT_LEAST_TWO, require


def jigsaw_tiles(
    images: Tensor,
    grid: int = 3,
    tile_size: int | None = None,
    order: Tensor | None = None,
    tile_share: float = 1.0,
    normalise: bool = False,
) -> tuple[Tensor, Tensor]:
    """Cut each image into ``grid x grid`` equal cells (the last ``H mod grid`` rows and columns are dropped), shuffle
    the cells of each image by a permutation -- ``order``'s row, or a random one (torch's global generator) --, take
    a window of each (:func:`windows_within_cells`), resize it to ``tile_size`` and optionally normalise it
    (:func:`normalise_tiles`).

    Args:
        images: (B, C, H, W), H and W at least ``grid``.
        grid: cells per side (3 in both papers).
        tile_size: side of the returned tiles (None: the image side, so that any backbone accepts a tile; a tile of
            an 8x8 image is then a 2x2 cell blown up to 8x8).
        order: (B, grid^2) permutations to apply (None: drawn at random).
        tile_share: a tile's side over its cell's (1: whole, adjacent cells; Noroozi & Favaro: 64/75).
        normalise: normalise each tile on its own.

    Returns:
        ``(tiles, permutations)``: tiles (B x grid^2, C, t, t), image-major, tile k of image b at row
        ``b * grid^2 + k`` holding cell ``permutations[b, k]`` (cells numbered row by row); permutations (B, grid^2).

    Example:
        >>> images = torch.arange(16.0).reshape(1, 1, 4, 4)
        >>> tiles, order = jigsaw_tiles(images, grid=2, tile_size=2)
        >>> bool((tiles[order[0].argsort()].flatten() == torch.tensor([0., 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11,
        ...     14, 15])).all())
        True
    """
    require("grid", grid, AT_LEAST_TWO)
    b, c, h, _ = images.shape
    cells = grid_cells(images, grid)
    cell_h, cell_w = cells.shape[-2:]
    if order is None:
        order = torch.stack([torch.randperm(grid * grid) for _ in range(b)])
    elif tuple(order.shape) != (b, grid * grid):
        raise ValueError(f"order must be ({b}, {grid * grid}) permutations, got {tuple(order.shape)}")
    order = order.to(images.device)
    shuffled = torch.gather(cells, 1, order.view(b, -1, 1, 1, 1).expand_as(cells))
    tiles = windows_within_cells(shuffled.reshape(b * grid * grid, c, cell_h, cell_w), tile_share)
    tiles = resize_patches(tiles, tile_size or h)
    return (normalise_tiles(tiles) if normalise else tiles), order


__all__ = ["jigsaw_tiles"]
