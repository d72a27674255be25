"""The jigsaw transformation of a batch of images (Noroozi & Favaro, 2016; PIRL's transformation t, Misra & van der
Maaten, 2020, Sec. 3): a grid of tiles per image, shuffled by a random permutation per image, and Noroozi &
Favaro's defences against shortcuts: each tile a randomly placed window smaller than its cell (a gap between tiles
and a jitter of their positions, so that edges do not continue from tile to tile), and each tile normalised on its
own (so that its low-level statistics do not say where it came from)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from invprop.settings import AT_LEAST_ONE, AT_LEAST_TWO, NON_EMPTY_SHARE, require


def windows_within_cells(cells: Tensor, share: float) -> Tensor:
    """A window of each cell, at a random place (torch's global generator): Noroozi & Favaro's tiles (2016,
    Sec. 3: a 64x64 tile at a random place within each 75x75 cell).

    Args:
        cells: (N, C, h, w).
        share: the window's side over the cell's: the window is ``round(share x h) x round(share x w)`` (at least
            one pixel); 1 gives the cells back.

    Returns:
        (N, C, h', w') windows, each from its own cell, at offsets drawn uniformly per window.

    Example:
        >>> windows_within_cells(torch.rand(5, 3, 10, 10), share=0.85).shape
        torch.Size([5, 3, 8, 8])
    """
    require("share", share, NON_EMPTY_SHARE)
    n, _, h, w = cells.shape
    th, tw = max(1, round(share * h)), max(1, round(share * w))
    if (th, tw) == (h, w):
        return cells
    top = torch.randint(h - th + 1, (n, 1)).to(cells.device) + torch.arange(th, device=cells.device)
    left = torch.randint(w - tw + 1, (n, 1)).to(cells.device) + torch.arange(tw, device=cells.device)
    rows = torch.arange(n, device=cells.device).view(n, 1, 1)
    return cells.permute(0, 2, 3, 1)[rows, top.unsqueeze(2), left.unsqueeze(1)].permute(0, 3, 1, 2)


def normalise_tiles(tiles: Tensor) -> Tensor:
    """Each tile's channels to mean 0 and standard deviation 1 over its pixels (Noroozi & Favaro, 2016, Sec. 3:
    the mean and standard deviation of every tile normalised independently); a constant channel becomes 0.

    Args:
        tiles: (N, C, h, w).

    Returns:
        (N, C, h, w) float tensor.

    Example:
        >>> t = normalise_tiles(torch.rand(4, 3, 6, 6))
        >>> bool(t.mean(dim=(2, 3)).abs().max() < 1e-5), bool((t.std(dim=(2, 3), unbiased=False) - 1).abs().max() < 1e-4)
        (True, True)
    """
    x = tiles.float()
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = x.std(dim=(2, 3), unbiased=False, keepdim=True)
    return (x - mean) / torch.where(std > 0, std, torch.ones_like(std))


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
    tiles = windows_within_cells(shuffled.reshape(b * grid * grid, c, cell_h, cell_w), tile_share)
    if tuple(tiles.shape[2:]) != (size, size):
        tiles = F.interpolate(tiles, size=(size, size), mode="bilinear", align_corners=False)
    return (normalise_tiles(tiles) if normalise else tiles), order


__all__ = ["jigsaw_tiles", "normalise_tiles", "windows_within_cells"]
