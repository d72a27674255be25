"""Patches of images on a grid, written once for every method that cuts images up: the jigsaw and PIRL tiles
(Noroozi & Favaro, 2016; Misra & van der Maaten, 2020), context prediction's patch pairs (Doersch et al., 2015)
and CPC's overlapping grid (van den Oord et al., 2018; Henaff et al., 2019).

The shortcut defences of those papers are here too: a window smaller than its cell at a random place (a gap
between patches and a jitter of their positions, so that edges do not continue from patch to patch), and each
patch normalised on its own (so that its low-level statistics do not say where it came from)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from invprop.settings import AT_LEAST_ONE, NON_EMPTY_SHARE, require


def grid_patches(images: Tensor, patch: tuple[int, int], stride: tuple[int, int]) -> Tensor:
    """Every ``patch`` (h, w) window of each image whose top-left corner lies on the ``stride`` grid from (0, 0):
    overlapping when the stride is smaller than the patch (CPC: 64-pixel patches every 32 pixels), the cells of a
    partition when equal (the jigsaw); rows and columns that no whole patch covers are left out.

    Args:
        images: (B, C, H, W).
        patch: the patches' (height, width), at most the image's.
        stride: the (vertical, horizontal) step between patches.

    Returns:
        (B, rows, cols, C, h, w): patch (r, c) of image b is ``images[b, :, r*sh : r*sh+h, c*sw : c*sw+w]``.

    Example:
        >>> grid_patches(torch.rand(2, 3, 32, 32), patch=(8, 8), stride=(4, 4)).shape
        torch.Size([2, 7, 7, 3, 8, 8])
    """
    (ph, pw), (sh, sw) = patch, stride
    for name, value in (("patch height", ph), ("patch width", pw), ("stride", min(sh, sw))):
        require(name, value, AT_LEAST_ONE)
    if ph > images.shape[2] or pw > images.shape[3]:
        raise ValueError(f"a {ph}x{pw} patch does not fit in {images.shape[2]}x{images.shape[3]} images")
    return images.unfold(2, ph, sh).unfold(3, pw, sw).permute(0, 2, 3, 1, 4, 5)


def grid_cells(images: Tensor, grid: int) -> Tensor:
    """The ``grid x grid`` equal cells of each image, row by row (the last ``H mod grid`` rows and columns are
    dropped): :func:`grid_patches` with the stride equal to the cell.

    Returns:
        (B, grid^2, C, H // grid, W // grid).

    Example:
        >>> cells = grid_cells(torch.arange(16.0).reshape(1, 1, 4, 4), grid=2)
        >>> cells[0, 1, 0].tolist()
        [[2.0, 3.0], [6.0, 7.0]]
    """
    b, c, h, w = images.shape
    cell = (h // grid, w // grid)
    require("image side / grid", min(cell), AT_LEAST_ONE)
    cropped = images[:, :, : cell[0] * grid, : cell[1] * grid]
    return grid_patches(cropped, cell, cell).reshape(b, grid * grid, c, *cell)


def windows_within_cells(cells: Tensor, share: float, jitter: int | None = None) -> Tensor:
    """A window of each cell, at a random place (torch's global generator): Noroozi & Favaro's tiles (2016,
    Sec. 3: a 64x64 tile at a random place within each 75x75 cell), or Doersch et al.'s patches (2015, Sec. 3: a
    96-pixel patch centred in its cell, a 48-pixel gap to the next, jittered by up to 7 pixels).

    Args:
        cells: (N, C, h, w).
        share: the window's side over the cell's: the window is ``round(share x h) x round(share x w)`` (at least
            one pixel); 1 gives the cells back.
        jitter: None places each window anywhere in its cell (uniformly); J centres it and moves it by up to J
            pixels each way (uniformly, within the cell).

    Returns:
        (N, C, h', w') windows, each from its own cell.

    Example:
        >>> windows_within_cells(torch.rand(5, 3, 10, 10), share=0.85).shape
        torch.Size([5, 3, 8, 8])
    """
    require("share", share, NON_EMPTY_SHARE)
    n, _, h, w = cells.shape
    th, tw = max(1, round(share * h)), max(1, round(share * w))
    if (th, tw) == (h, w):
        return cells
    top, left = _offsets(n, h - th, jitter), _offsets(n, w - tw, jitter)
    rows_of = top.to(cells.device) + torch.arange(th, device=cells.device)
    cols_of = left.to(cells.device) + torch.arange(tw, device=cells.device)
    rows = torch.arange(n, device=cells.device).view(n, 1, 1)
    return cells.permute(0, 2, 3, 1)[rows, rows_of.unsqueeze(2), cols_of.unsqueeze(1)].permute(0, 3, 1, 2)


def _offsets(n: int, room: int, jitter: int | None) -> Tensor:
    """(n, 1) offsets of windows with ``room`` pixels to spare: anywhere (None), or centred +- ``jitter``."""
    if jitter is None:
        return torch.randint(room + 1, (n, 1))
    moved = room // 2 + torch.randint(-jitter, jitter + 1, (n, 1))
    return moved.clamp(0, room)


def drop_colour(patches: Tensor) -> Tensor:
    """Doersch et al.'s defence against chromatic aberration (2015, Sec. 3.1, "colour dropping"): each patch keeps
    one channel, drawn at random (torch's global generator) and mean-subtracted, and the others become uniform noise
    in [-0.5, 0.5]; one-channel patches, which have no colour to drop, come back unchanged.

    Args:
        patches: (N, C, h, w).

    Returns:
        (N, C, h, w) float.

    Example:
        >>> out = drop_colour(torch.rand(4, 3, 5, 5))
        >>> bool(out.abs().max() <= 1.0), tuple(out.shape)
        (True, (4, 3, 5, 5))
    """
    x = patches.float()
    n, c = x.shape[:2]
    if c == 1:
        return x
    kept = torch.randint(c, (n,)).to(x.device)
    keep = torch.zeros(n, c, 1, 1, dtype=torch.bool, device=x.device)
    keep[torch.arange(n, device=x.device), kept] = True
    noise = torch.rand(x.shape).to(x.device) - 0.5
    centred = x - x.mean(dim=(2, 3), keepdim=True)
    return torch.where(keep, centred, noise)


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


def resize_patches(patches: Tensor, size: int | None) -> Tensor:
    """``patches`` (N, C, h, w) resized bilinearly to ``size x size`` (None or their own size: unchanged), so that
    a backbone built for the image side takes them."""
    if size is None or tuple(patches.shape[2:]) == (size, size):
        return patches
    return F.interpolate(patches, size=(size, size), mode="bilinear", align_corners=False)


__all__ = ["drop_colour", "grid_cells", "grid_patches", "normalise_tiles", "resize_patches", "windows_within_cells"]
