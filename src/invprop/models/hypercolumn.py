"""Hypercolumns (Hariharan et al., 2015; Larsson, Maire & Shakhnarovich, 2016 and 2017): at chosen points of an
image, the features of several of a network's layers sampled at that point and side by side -- the feature maps
bilinearly, the global embedding (a fully connected layer's output, as the authors include fc7) as it is -- then a
small classifier per point."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invprop.settings import AT_LEAST_ONE, UNIT_INTERVAL, require


def sample_maps(maps: Sequence[Tensor], points: Tensor) -> Tensor:
    """Each map bilinearly sampled at ``points``, side by side.

    Args:
        maps: each (B, C_i, h_i, w_i) (any sides: the points are in the image's coordinates).
        points: (B, P, 2) (x, y) in [-1, 1], -1 and 1 the image's outer edges (grid_sample's align_corners=False).

    Returns:
        (B, P, sum C_i), float32.

    Example:
        >>> ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 4, 4)  # x = 0, 1, 2, 3 across
        >>> sample_maps([ramp], torch.tensor([[[-0.75, 0.0], [0.75, 0.0]]])).flatten().tolist()  # pixel centres
        [0.0, 3.0]
    """
    grid = points.unsqueeze(2).float()  # (B, P, 1, 2), float32: a bfloat16 point would move by a share of a pixel
    sampled = [F.grid_sample(m.float(), grid, mode="bilinear", align_corners=False).squeeze(3) for m in maps]
    return torch.cat(sampled, dim=1).transpose(1, 2)


class HypercolumnClassifier(nn.Module):
    """Hypercolumns (B, P, F) and the embedding (B, D) -> one (B, P, Q_k) score tensor per output: a fully connected
    layer of ``hidden`` units over [hypercolumn, embedding], ReLU, dropout, then a linear layer per output (the
    authors: 1,024 units, dropout 0.5, two 32-way heads).

    Example:
        >>> net = HypercolumnClassifier(6, 4, hidden=8, dropout=0.5, classes=(32, 32))
        >>> [tuple(s.shape) for s in net(torch.rand(2, 5, 6), torch.rand(2, 4))]
        [(2, 5, 32), (2, 5, 32)]
    """

    def __init__(
        self, column_dim: int, embedding_dim: int, hidden: int, dropout: float, classes: Sequence[int]
    ) -> None:
        super().__init__()
        require("hidden", hidden, AT_LEAST_ONE)
        require("dropout", dropout, UNIT_INTERVAL)
        self.trunk = nn.Sequential(
            nn.Linear(column_dim + embedding_dim, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)
        )
        self.heads = nn.ModuleList(nn.Linear(hidden, q) for q in classes)

    def forward(self, columns: Tensor, embedding: Tensor) -> list[Tensor]:
        joined = torch.cat([columns, embedding.unsqueeze(1).expand(-1, columns.shape[1], -1)], dim=2)
        shared = self.trunk(joined)
        return [head(shared) for head in self.heads]


__all__ = ["HypercolumnClassifier", "sample_maps"]
