"""Which patch tokens of an image a masked method hides: MAE's random masking (He et al., 2022), BEiT's block-wise
masking as iBOT draws it (Bao et al., 2022; Zhou et al., 2022), and I-JEPA's multi-block context and targets (Assran
et al., 2023). A mask is a (B, N) bool tensor over the N patch tokens of each image (row-major on their grid), True
where the token is hidden, or the indices of the tokens a block holds."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from invprop.settings import FRACTION, UNIT_INTERVAL, require


class TokenMask(NamedTuple):
    """A random mask and the indices that apply it.

    Attributes:
        keep: (B, K) the kept tokens' indices, in the order they are encoded.
        hidden: (B, N) bool, True where a token is hidden.
        restore: (B, N) the permutation that puts [kept tokens; hidden tokens] back in image order.
    """

    keep: Tensor
    hidden: Tensor
    restore: Tensor


def random_token_mask(batch: int, tokens: int, ratio: float, device: torch.device | None = None) -> TokenMask:
    """MAE's random masking (He et al., 2022, Sec. 3; the authors' ``random_masking``): each image keeps
    ``int(N (1 - ratio))`` of its N tokens, drawn by sorting uniform noise (torch's global generator).

    Example:
        >>> mask = random_token_mask(2, 16, 0.75)
        >>> mask.keep.shape, mask.hidden.sum(dim=1).tolist()
        (torch.Size([2, 4]), [12, 12])
    """
    require("ratio", ratio, UNIT_INTERVAL)
    kept = int(tokens * (1 - ratio))
    if kept < 1:
        raise ValueError(f"a mask ratio of {ratio} hides all of {tokens} tokens; lower it")
    shuffle = torch.rand(batch, tokens, device=device).argsort(dim=1)
    restore = shuffle.argsort(dim=1)
    hidden = torch.ones(batch, tokens, dtype=torch.bool, device=device)
    hidden[:, :kept] = False
    return TokenMask(shuffle[:, :kept], hidden.gather(1, restore), restore)


def keep_tokens(tokens: Tensor, keep: Tensor) -> Tensor:
    """(B, K, D) the rows ``keep`` (B, K) of each image's (B, N, D) tokens."""
    return tokens.gather(1, keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


#: The range of a masked block's aspect ratio (height over width) in BEiT's and iBOT's block-wise masking.
BEIT_ASPECT = (0.3, 1 / 0.3)
#: Tries at a rectangle that hides new tokens before block-wise masking stops short of its count (BEiT's and iBOT's
#: ten attempts).
BLOCK_TRIES = 10


def block_token_masks(
    counts: Tensor, rows: int, cols: int, aspect: tuple[float, float] = BEIT_ASPECT,
    generator: torch.Generator | None = None,
) -> Tensor:  # fmt: skip
    """(B, rows x cols) bool: block-wise masking (Bao et al., 2022, BEiT, Alg. 1, as Zhou et al., 2022, iBOT, draw it
    in their ``ImageFolderMask`` with ``pred_shape block``) of B images, image b until ``counts[b]`` tokens are
    hidden. Rectangles are added one at a time: each of area U(a_min, tokens still to hide), with
    a_min = (min(rows, cols) // 3)^2, and aspect ratio exp(U(log aspect[0], log aspect[1])), placed uniformly where
    it fits strictly inside the grid; a rectangle is kept when it hides at least one new token and no more than are
    still to hide. After ``BLOCK_TRIES`` tries that add nothing, an image's mask stops short.

    The images are drawn together (a loop over rounds and tries, not over images): the same law per image as BEiT's
    loop, at a cost that does not grow with the batch in Python steps.

    Args:
        counts: (B,) float, the tokens to hide in each image (0: none).
    """
    b = counts.shape[0]
    masks = torch.zeros(b, rows, cols, dtype=torch.bool)
    left = counts.detach().to(torch.float64).cpu().clone()
    smallest = float((min(rows, cols) // 3) ** 2)
    log_low, log_high = math.log(aspect[0]), math.log(aspect[1])
    row_ids, col_ids = torch.arange(rows).view(1, 1, rows, 1), torch.arange(cols).view(1, 1, 1, cols)
    images = torch.arange(b)
    active = left > 0
    while bool(active.any()):
        # A round's BLOCK_TRIES tries drawn at once; each image keeps its first try that adds tokens (the law of
        # trying them one after another, since a try's draws do not depend on the tries before it).
        u = torch.rand(4, BLOCK_TRIES, b, generator=generator, dtype=torch.float64)
        area = smallest + (left - smallest) * u[0]
        ratio = torch.exp(log_low + (log_high - log_low) * u[1])
        h, w = torch.round(torch.sqrt(area * ratio)).long(), torch.round(torch.sqrt(area / ratio)).long()
        top = torch.floor(u[2] * (rows - h + 1).clamp_min(1)).long().unsqueeze(-1).unsqueeze(-1)
        start = torch.floor(u[3] * (cols - w + 1).clamp_min(1)).long().unsqueeze(-1).unsqueeze(-1)
        rect = ((row_ids >= top) & (row_ids < top + h.unsqueeze(-1).unsqueeze(-1))
                & (col_ids >= start) & (col_ids < start + w.unsqueeze(-1).unsqueeze(-1)))  # fmt: skip
        new = (rect & ~masks).sum(dim=(2, 3))
        kept = active & (h < rows) & (w < cols) & (new > 0) & (new.to(left.dtype) <= left)
        first = kept.to(torch.uint8).argmax(dim=0)
        placed = kept.any(dim=0)
        masks |= rect[first, images] & placed.view(-1, 1, 1)
        left = left - new[first, images].to(left.dtype) * placed
        active = placed & (left > 0)
    return masks.view(b, rows * cols)


def block_token_mask(
    rows: int, cols: int, count: float, aspect: tuple[float, float] = BEIT_ASPECT,
    generator: torch.Generator | None = None,
) -> Tensor:  # fmt: skip
    """(rows x cols,) bool: :func:`block_token_masks` of one image hiding ``count`` tokens.

    Example:
        >>> mask = block_token_mask(8, 8, 20, generator=torch.Generator().manual_seed(0))
        >>> mask.shape, 0 < int(mask.sum()) <= 20
        (torch.Size([64]), True)
    """
    return block_token_masks(torch.tensor([float(count)]), rows, cols, aspect, generator)[0]


def block_masks(
    batch: int, rows: int, cols: int, probability: float, ratio: tuple[float, float],
    aspect: tuple[float, float] = BEIT_ASPECT, generator: torch.Generator | None = None,
) -> Tensor:  # fmt: skip
    """(batch, rows x cols) bool: each image masked with ``probability`` (else not at all), by
    :func:`block_token_masks` with a share of its tokens drawn from U(ratio) (iBOT's ``pred_ratio 0 0.3`` with
    ``pred_ratio_var 0 0.2``: ratio 0 or U(0.1, 0.5), each with probability 0.5, per global crop).

    Example:
        >>> masks = block_masks(4, 4, 4, 1.0, (0.25, 0.25), generator=torch.Generator().manual_seed(0))
        >>> masks.shape, bool((masks.sum(dim=1) > 0).all())
        (torch.Size([4, 16]), True)
    """
    require("probability", probability, FRACTION)
    if not 0 <= ratio[0] <= ratio[1] < 1:
        raise ValueError(f"a mask ratio range must satisfy 0 <= low <= high < 1, got {ratio}")
    draws = torch.rand(2, batch, generator=generator, dtype=torch.float64)
    shares = ratio[0] + (ratio[1] - ratio[0]) * draws[1]
    counts = torch.where(draws[0] < probability, shares * rows * cols, torch.zeros_like(shares))
    return block_token_masks(counts, rows, cols, aspect, generator)


class MultiBlockMasks(NamedTuple):
    """I-JEPA's masks of a batch, as token indices (row-major on the patch grid).

    Attributes:
        context: (B, K_c) the tokens the context encoder sees, each image's truncated to the batch's fewest.
        targets: (M, B, K_t) the tokens of each of the M target blocks, truncated likewise.
    """

    context: Tensor
    targets: Tensor


#: Failed draws of a context block before one more target block is allowed to overlap it (I-JEPA's timeout).
CONTEXT_TRIES = 20


def block_shape(
    rows: int, cols: int, u: float, scale: tuple[float, float], aspect: tuple[float, float]
) -> tuple[int, int]:
    """I-JEPA's block (height, width) for the draw ``u`` in [0, 1) (Assran et al., 2023, Sec. 3; the authors'
    ``_sample_block_size``): one draw sets both the share of the grid, ``scale[0] + u (scale[1] - scale[0])``, and
    the aspect ratio (height over width), ``aspect[0] + u (aspect[1] - aspect[0])``; the height and width round
    ``sqrt(area x ratio)`` and ``sqrt(area / ratio)``, each kept below the grid's side.

    Example:
        >>> block_shape(14, 14, 0.0, (0.15, 0.2), (0.75, 1.5))
        (5, 6)
    """
    area = int(rows * cols * (scale[0] + u * (scale[1] - scale[0])))
    ratio = aspect[0] + u * (aspect[1] - aspect[0])
    h, w = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
    return min(h, rows - 1), min(w, cols - 1)


def _place_block(rows: int, cols: int, size: tuple[int, int], allowed: list[Tensor], min_keep: int) -> Tensor:
    """(rows, cols) bool: a block of ``size`` placed uniformly (its top-left corner in [0, side - size)), cut to the
    ``allowed`` regions; redrawn until it keeps more than ``min_keep`` tokens, each ``CONTEXT_TRIES`` failures
    dropping the last region from ``allowed`` (I-JEPA's ``_sample_block_mask``)."""
    h, w = size
    regions = list(allowed)
    failures = 0
    while True:
        top = int(torch.randint(0, max(rows - h, 1), ()))
        left = int(torch.randint(0, max(cols - w, 1), ()))
        block = torch.zeros(rows, cols, dtype=torch.bool)
        block[top : top + h, left : left + w] = True
        for region in regions:
            block &= region
        if int(block.sum()) > min_keep:
            return block
        failures += 1
        if failures == CONTEXT_TRIES:
            if not regions:
                raise ValueError(f"a {h} x {w} block never keeps more than {min_keep} tokens; lower min_keep")
            regions, failures = regions[:-1], 0


def multi_block_masks(
    batch: int, rows: int, cols: int, targets: int, target_scale: tuple[float, float],
    target_aspect: tuple[float, float], context_scale: tuple[float, float], min_keep: int,
) -> MultiBlockMasks:  # fmt: skip
    """I-JEPA's multi-block masking (Assran et al., 2023, Sec. 3 and Fig. 4; the authors' ``MaskCollator``): per batch,
    one target block shape (:func:`block_shape` of a uniform draw, ``target_scale``, ``target_aspect``) and one
    square context block shape (``context_scale``); per image, ``targets`` target blocks placed at random, and a context block placed at
    random with every target block's tokens removed (a target block's removal is given up, last first, when no
    placement keeps more than ``min_keep`` tokens); each image's index lists are then cut to the batch's shortest.
    Draws from torch's global generator.

    Example:
        >>> masks = multi_block_masks(2, 8, 8, 4, (0.15, 0.2), (0.75, 1.5), (0.85, 1.0), 4)
        >>> masks.targets.shape[:2], masks.context.shape[0]
        (torch.Size([4, 2]), 2)
    """
    target_size = block_shape(rows, cols, float(torch.rand(())), target_scale, target_aspect)
    context_size = block_shape(rows, cols, float(torch.rand(())), context_scale, (1.0, 1.0))
    if target_size[0] * target_size[1] <= min_keep or context_size[0] * context_size[1] <= min_keep:
        raise ValueError(f"on a {rows} x {cols} patch grid the blocks ({target_size[0]} x {target_size[1]} targets, "
                         f"{context_size[0]} x {context_size[1]} context) keep no more than min_keep = {min_keep} "
                         "tokens; lower min_keep or use smaller patches")  # fmt: skip
    target_lists: list[list[Tensor]] = []
    context_lists: list[Tensor] = []
    for _ in range(batch):
        blocks = [_place_block(rows, cols, target_size, [], min_keep) for _ in range(targets)]
        target_lists.append([block.flatten().nonzero().flatten() for block in blocks])
        context = _place_block(rows, cols, context_size, [~block for block in blocks], min_keep)
        context_lists.append(context.flatten().nonzero().flatten())
    k_t = min(len(index) for indices in target_lists for index in indices)
    k_c = min(len(index) for index in context_lists)
    stacked = torch.stack([torch.stack([index[:k_t] for index in indices]) for indices in target_lists])
    return MultiBlockMasks(torch.stack([index[:k_c] for index in context_lists]), stacked.transpose(0, 1))


__all__ = [
    "BLOCK_TRIES",
    "CONTEXT_TRIES",
    "MultiBlockMasks",
    "block_shape",
    "multi_block_masks",
    "TokenMask",
    "block_masks",
    "block_token_mask",
    "block_token_masks",
    "keep_tokens",
    "random_token_mask",
]
