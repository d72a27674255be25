"""CPC v2's context network (Henaff et al., 2019, App. A.2): residual blocks over a grid of patch embeddings whose
output at row i sees only rows 0..i, so that it can predict the rows below without seeing them."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class CausalRowBlock(nn.Module):
    """One residual block: ``1x1 conv -> ReLU -> 1x3 conv -> (one row of zeros on top) 2x1 conv -> ReLU -> 1x1 conv``,
    added to its input; each row of the output sees its own row and the one above."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(dim, hidden, 1)
        self.across = nn.Conv2d(hidden, hidden, (1, 3), padding=(0, 1))
        self.down = nn.Conv2d(hidden, hidden, (2, 1))
        self.expand = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.across(F.relu(self.reduce(x)))
        h = F.relu(self.down(F.pad(h, (0, 0, 1, 0))))  # pad one row on top: row i sees rows i - 1 and i
        return x + self.expand(h)


class ContextNetwork(nn.Module):
    """(B, D, R, C) -> (B, D, R, C): ``blocks`` :class:`CausalRowBlock` s, then ReLU; the output at row i depends on
    rows 0..i of the input only.

    Example:
        >>> import torch
        >>> net = ContextNetwork(4, 8, blocks=2)
        >>> x = torch.randn(1, 4, 5, 3); y = x.clone(); y[:, :, 3:] = 0  # change rows 3 and 4
        >>> bool(torch.equal(net(x)[:, :, :3], net(y)[:, :, :3]))
        True
    """

    def __init__(self, dim: int, hidden: int, blocks: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[CausalRowBlock(dim, hidden) for _ in range(blocks)])

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.blocks(x))


__all__ = ["CausalRowBlock", "ContextNetwork"]
