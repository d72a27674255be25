"""The jigsaw transformation of a batch of images (Noroozi & Favaro, 2016; PIRL's transformation t, Misra & van der
Maaten, 2020, Sec. 3): a grid of tiles per image, shuffled by a random permutation per image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from invprop.settings import AT_LEAST_ONE, AT_LEAST_TWO, require


def jigsaw_tiles(
    images: Tensor, grid: int = 3, tile_size: int | None = None, order: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Cut each image into ``grid x grid`` equal cells (the last ``H mod grid`` rows and columns are dropped), shuffle
    the cells of each image by a permutation -- ``order``'s row, or a random one (torch's global generator) -- and
    resize each to ``tile_size``.

    Args:
        images: (B, C, H, W), H and W at least ``grid``.
        grid: cells per side (3 in both papers).
        tile_size: side of the returned tiles (None: the image side, so that any backbone accepts a tile; a tile of
            an 8x8 image is then a 2x2 cell blown up to 8x8).
        order: (B, grid^2) permutations to apply (None: drawn at random).

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
    b, c, h, w = images.shape
    cell_h, cell_w = h // grid, w // grid
    require("image side / grid", min(cell_h, cell_w), AT_LEAST_ONE)
    size = tile_size or h
    cropped = images[:, :, : cell_h * grid, : cell_w * grid]
    cells = cropped.reshape(b, c, grid, cell_h, grid, cell_w).permute(0, 2, 4, 1, 3, 5)
    cells = cells.reshape(b, grid * grid, c, cell_h, cell_w)
    if order is None:
        order = torch.stack([torch.randperm(grid * grid) for _ in range(b)])
    elif tuple(order.shape) != (b, grid * grid):
        raise ValueError(f"order must be ({b}, {grid * grid}) permutations, got {tuple(order.shape)}")
    order = order.to(images.device)
    shuffled = torch.gather(cells, 1, order.view(b, -1, 1, 1, 1).expand_as(cells))
    tiles = shuffled.reshape(b * grid * grid, c, cell_h, cell_w)
    if (cell_h, cell_w) != (size, size):
        tiles = F.interpolate(tiles, size=(size, size), mode="bilinear", align_corners=False)
    return tiles, order


__all__ = ["jigsaw_tiles"]
