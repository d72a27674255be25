"""Pretext tasks' inputs and labels, made from a batch of images on its device: the four rotations of RotNet
(Gidaris et al., 2018) and the permutation set of the jigsaw puzzle (Noroozi & Favaro, 2016)."""

from __future__ import annotations

import functools
import itertools

import torch
from torch import Tensor

from invprop.settings import AT_LEAST_ONE, AT_LEAST_TWO, require

#: RotNet's rotations, in quarter turns counter-clockwise: 0, 90, 180 and 270 degrees (label = quarter turns).
ROTATIONS = 4
#: The odd multipliers and shifts of :func:`hashed_draws`'s integer mixing (splitmix64's shifts; its multipliers with
#: the top bit cleared, so that they are int64 values).
_MIX_MULTIPLIERS = (0x3F58476D1CE4E5B9, 0x14D049BB133111EB)
_MIX_SHIFTS = (30, 27, 31)
_STEP_MULTIPLIER = 0x1E3779B97F4A7C15


def rotated_batch(images: Tensor) -> tuple[Tensor, Tensor]:
    """Every image in each of the four rotations (Gidaris et al., 2018, Sec. 2.2), rotation-major.

    Args:
        images: (B, C, H, W), square (H == W).

    Returns:
        ``(rotated, labels)``: (4B, C, H, W), rows ``[r B, (r + 1) B)`` turned ``r`` quarter turns counter-clockwise,
        and (4B,) long labels r.

    Example:
        >>> x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
        >>> rotated, labels = rotated_batch(x)
        >>> rotated[1, 0].tolist(), labels.tolist()
        ([[2.0, 4.0], [1.0, 3.0]], [0, 1, 2, 3])
    """
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"rotation prediction needs square images, got {images.shape[-2]}x{images.shape[-1]}")
    rotated = torch.cat([torch.rot90(images, r, dims=(-2, -1)) for r in range(ROTATIONS)])
    labels = torch.arange(ROTATIONS, device=images.device).repeat_interleave(images.shape[0])
    return rotated, labels


def hamming_distances(a: Tensor, b: Tensor) -> Tensor:
    """(M, N) number of positions where permutation rows of ``a`` (M, T) and ``b`` (N, T) differ."""
    return (a.unsqueeze(1) != b.unsqueeze(0)).sum(dim=2)


def permutation_set(size: int, tiles: int = 9, seed: int = 0) -> Tensor:
    """A set of ``size`` permutations of ``tiles`` tiles far apart in Hamming distance, as the jigsaw's classes.

    Greedy farthest-point selection over all ``tiles!`` permutations: start from one drawn with ``seed``, then add
    the permutation whose smallest distance to the chosen ones is largest (ties: the largest summed distance, then
    the first). Noroozi & Favaro (2016, Alg. 1) pick by the summed distance alone; picking by the smallest distance
    first guarantees the set's minimal distance, which is what makes the classes hard to confuse.

    Args:
        size: permutations in the set (the paper's main setting: 1000), at most ``tiles!``.
        tiles: tiles per image (a 3 x 3 grid: 9).
        seed: draws the first permutation.

    Returns:
        (size, tiles) long.

    Example:
        >>> perms = permutation_set(24, tiles=4)
        >>> int(hamming_distances(perms, perms).fill_diagonal_(4).min())
        2
    """
    require("size", size, AT_LEAST_ONE)
    require("tiles", tiles, AT_LEAST_TWO)
    return torch.tensor(_farthest_permutations(size, tiles, seed))


@functools.lru_cache(maxsize=8)
def _farthest_permutations(size: int, tiles: int, seed: int) -> tuple[tuple[int, ...], ...]:
    """:func:`permutation_set`'s selection, remembered per arguments (it takes about 50 ms per permutation of 9)."""
    every = torch.tensor(list(itertools.permutations(range(tiles))), dtype=torch.uint8)
    if size > every.shape[0]:
        raise ValueError(f"a set of {size} permutations of {tiles} tiles is more than the {every.shape[0]} there are")
    first = int(torch.randint(every.shape[0], (1,), generator=torch.Generator().manual_seed(seed)))
    chosen = [first]
    taken = torch.zeros(every.shape[0], dtype=torch.bool)
    taken[first] = True
    nearest = (every != every[first]).sum(dim=1, dtype=torch.int32)
    total = nearest.clone()
    weight = tiles * size + 1  # above any summed distance: the smallest distance decides first
    for _ in range(size - 1):
        score = (nearest * weight + total).masked_fill_(taken, -1)
        pick = int(score.argmax())
        chosen.append(pick)
        taken[pick] = True
        distance = (every != every[pick]).sum(dim=1, dtype=torch.int32)
        torch.minimum(nearest, distance, out=nearest)
        total += distance
    return tuple(tuple(row) for row in every[chosen].tolist())


def _mix(x: Tensor) -> Tensor:
    """An int64 hash of each value (splitmix64's finaliser in wrapping int64 arithmetic)."""
    x = (x ^ (x >> _MIX_SHIFTS[0])) * _MIX_MULTIPLIERS[0]
    x = (x ^ (x >> _MIX_SHIFTS[1])) * _MIX_MULTIPLIERS[1]
    return x ^ (x >> _MIX_SHIFTS[2])


def hashed_draws(seed: int, step: int, indices: Tensor, choices: int) -> Tensor:
    """One draw in ``[0, choices)`` per image, a function of (seed, step, image index) alone: the same image at the
    same step of a run with the same seed gets the same draw, whichever process or batch holds it.

    Args:
        seed: the run's seed.
        step: the optimiser step.
        indices: (B,) int64 image indices.
        choices: how many values to draw among, at least 1.

    Returns:
        (B,) int64 on ``indices``' device.

    Example:
        >>> draws = hashed_draws(0, 5, torch.arange(1000), 4)
        >>> torch.bincount(draws, minlength=4).min().item() > 200
        True
    """
    require("choices", choices, AT_LEAST_ONE)
    base = _mix(torch.tensor([seed * _STEP_MULTIPLIER + step], dtype=torch.long))
    return torch.remainder(_mix(indices.long() + base.to(indices.device)), choices)


__all__ = ["ROTATIONS", "hamming_distances", "hashed_draws", "permutation_set", "rotated_batch"]
