"""A convolutional autoencoder whose decoder can be entered block by block, and the repair layers that spotting
artifacts inserts before each of its blocks (Jenni & Favaro, 2018, Sec. 3 and the authors' layers.py:
``repair_res_layer``).

The encoder halves the side ``levels`` times (4x4 stride-2 convolutions, BatchNorm, LeakyReLU 0.1, the width
doubling from ``width`` up to a cap); the decoder mirrors it with :class:`invprop.models.decoders.UpBlock` s and a
3x3 convolution back to the image's channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invprop.models.decoders import UpBlock
from invprop.settings import AT_LEAST_ONE, require

#: LeakyReLU's slope in the authors' autoencoder and repair layers.
LEAKY_SLOPE = 0.1
#: The widest map of the autoencoder.
MAX_WIDTH = 512


class ConvAutoencoder(nn.Module):
    """(B, C, S, S) -> codes (B, W_L, S / 2^L, S / 2^L) -> reconstructions (B, C, S, S).

    Example:
        >>> ae = ConvAutoencoder(3, levels=3, width=8)
        >>> code = ae.encode(torch.rand(2, 3, 32, 32))
        >>> tuple(code.shape), tuple(ae.decode(code).shape)
        ((2, 32, 4, 4), (2, 3, 32, 32))
    """

    def __init__(self, in_channels: int, levels: int, width: int) -> None:
        super().__init__()
        require("levels", levels, AT_LEAST_ONE)
        require("width", width, AT_LEAST_ONE)
        widths = [min(MAX_WIDTH, width * 2**i) for i in range(levels)]
        down: list[nn.Module] = []
        channels = in_channels
        for w in widths:
            down += [nn.Conv2d(channels, w, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(w),
                     nn.LeakyReLU(LEAKY_SLOPE, inplace=True)]  # fmt: skip
            channels = w
        self.encoder = nn.Sequential(*down)
        ups = [*reversed(widths[:-1]), widths[0]]
        #: The width of the map entering each decoder block.
        self.block_channels = list(reversed(widths))
        self.blocks = nn.ModuleList(UpBlock(a, b) for a, b in zip(reversed(widths), ups))
        self.out = nn.Conv2d(widths[0], in_channels, 3, padding=1)

    def encode(self, images: Tensor) -> Tensor:
        return self.encoder(images)

    def decode(self, code: Tensor) -> Tensor:
        for block in self.blocks:
            code = block(code)
        return self.out(code)

    def forward(self, images: Tensor) -> Tensor:
        return self.decode(self.encode(images))


def drop_positions(code: Tensor, keep: float) -> tuple[Tensor, Tensor]:
    """Spotting artifacts' damage (Jenni & Favaro, 2018, Sec. 3.2; the authors' ``pixel_dropout_avg``): each spatial
    position of a code map kept with probability ``keep`` (torch's global generator), every other one replaced by
    the mean of the 3x3 neighbourhood around it in the undamaged map.

    Args:
        code: (B, C, h, w).
        keep: the probability that a position is kept (the authors: 0.4).

    Returns:
        ``(damaged, kept)``: the damaged map (B, C, h, w) and the kept-mask (B, 1, h, w) float, 1 where kept.

    Example:
        >>> damaged, kept = drop_positions(torch.ones(2, 3, 4, 4), 0.5)
        >>> torch.equal(damaged, torch.ones(2, 3, 4, 4)), tuple(kept.shape)  # a flat map's averages are the map
        (True, (2, 1, 4, 4))
    """
    kept = (torch.rand(code.shape[0], 1, *code.shape[2:], device=code.device) < keep).to(code.dtype)
    local = F.avg_pool2d(code, 3, stride=1, padding=1, count_include_pad=False)
    return kept * code + (1 - kept) * local, kept


class RepairLayer(nn.Module):
    """A residual repair of a damaged map: ``x + (1 - kept) * residual([x, kept])``, the residual from two 3x3
    convolutions (LeakyReLU 0.1 between) of the map with the kept-mask as one more channel, so that the positions
    kept are passed on unchanged.

    Example:
        >>> layer = RepairLayer(4)
        >>> x, kept = torch.rand(1, 4, 3, 3), torch.ones(1, 1, 3, 3)
        >>> torch.equal(layer(x, kept), x)  # nothing damaged, nothing changed
        True
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(channels + 1, channels, 3, padding=1), nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )  # fmt: skip

    def forward(self, x: Tensor, kept: Tensor) -> Tensor:
        kept = kept.to(x.dtype)
        return x + (1 - kept) * self.residual(torch.cat([x, kept], dim=1))


__all__ = ["ConvAutoencoder", "RepairLayer", "drop_positions"]
