"""A projection head applied at every location of a feature map: DenseCL's dense projector (Wang et al., 2021,
Sec. 3.2 and the authors' ``DenseCLNeck``: a 1x1 conv, ReLU, a 1x1 conv -- the MLP head of MoCo v2 made
convolutional)."""

from __future__ import annotations

from torch import Tensor, nn


class DenseProjector(nn.Module):
    """(B, C, h, w) -> (B, D, h, w): ``Conv1x1(C, hidden) -> ReLU -> Conv1x1(hidden, D)``, the same MLP at every
    location.

    Example:
        >>> import torch
        >>> DenseProjector(8, 16, 4)(torch.rand(2, 8, 3, 3)).shape
        torch.Size([2, 4, 3, 3])
    """

    def __init__(self, in_channels: int, hidden: int, out_channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, out_channels, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


__all__ = ["DenseProjector"]
