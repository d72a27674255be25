"""Which patch tokens of an image a masked method hides: MAE's random masking (He et al., 2022). A mask is a
(B, N) bool tensor over the N patch tokens of each image, True where the token is hidden."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from invprop.settings import UNIT_INTERVAL, require


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


__all__ = ["TokenMask", "keep_tokens", "random_token_mask"]
