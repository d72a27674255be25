"""Decoders that upsample a backbone's feature map back to the image's side: one family of blocks for the methods
that reconstruct what was hidden or damaged (denoising autoencoders, context encoders, colourisation, ...).

A :class:`MapDecoder` stacks :class:`UpBlock` s -- each doubles the map's side (nearest-neighbour upsampling, then a
3x3 convolution, BatchNorm and ReLU, the DCGAN generators' block without transposed convolutions and their
checkerboard artefacts) and halves its width down to a floor -- as many as take the map's side to the image's, then a
3x3 convolution to the output channels; a final bilinear resize covers sides that are not a power of two apart. A
:class:`VectorDecoder` starts from a code vector instead (an autoencoder's bottleneck, a context encoder's code): a
linear layer gives the first small map, then the same blocks.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from invprop.settings import AT_LEAST_ONE, require


class UpBlock(nn.Sequential):
    """(B, C_in, h, w) -> (B, C_out, 2h, 2w): nearest-neighbour x2, 3x3 convolution, BatchNorm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def up_blocks_between(map_side: int, image_side: int) -> int:
    """The x2 blocks that take a map of ``map_side`` to at least ``image_side`` (0 when it is already as large).

    Example:
        >>> up_blocks_between(4, 32), up_blocks_between(4, 28), up_blocks_between(8, 8)
        (3, 3, 0)
    """
    require("map_side", map_side, AT_LEAST_ONE)
    return max(0, math.ceil(math.log2(image_side / map_side) - 1e-9))


class MapDecoder(nn.Module):
    """A feature map (B, C, h, w) to an image-sized output (B, ``out_channels``, H, W).

    Args:
        in_channels: C, the map's channels.
        out_channels: the output's channels (3 for an RGB reconstruction, the classes of a per-pixel prediction).
        map_side: h, the side of the maps it will decode.
        image_side: H, the side of the output.
        min_width: the narrowest block (the width halves from C at each block, down to this).
    """

    def __init__(self, in_channels: int, out_channels: int, map_side: int, image_side: int, min_width: int = 16):
        super().__init__()
        require("image_side", image_side, AT_LEAST_ONE)
        require("min_width", min_width, AT_LEAST_ONE)
        self.image_side = image_side
        blocks: list[nn.Module] = []
        width = in_channels
        for _ in range(up_blocks_between(map_side, image_side)):
            narrower = max(min_width, width // 2)
            blocks.append(UpBlock(width, narrower))
            width = narrower
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Conv2d(width, out_channels, 3, padding=1)

    def forward(self, maps: Tensor) -> Tensor:
        x = self.out(self.blocks(maps))
        if x.shape[-2:] != (self.image_side, self.image_side):
            x = F.interpolate(x, size=(self.image_side, self.image_side), mode="bilinear", align_corners=False)
        return x


class VectorDecoder(nn.Module):
    """A code (B, D) to an image-sized output (B, ``out_channels``, H, W): a linear layer and ReLU to a
    ``start x start`` map of ``width`` channels, then a :class:`MapDecoder`.

    Example:
        >>> import torch
        >>> VectorDecoder(16, 3, image_side=32, width=64, start=4)(torch.rand(2, 16)).shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(self, code_dim: int, out_channels: int, image_side: int, width: int, start: int) -> None:
        super().__init__()
        require("width", width, AT_LEAST_ONE)
        require("start", start, AT_LEAST_ONE)
        self.width, self.start = width, start
        self.project = nn.Sequential(nn.Linear(code_dim, width * start * start), nn.ReLU(inplace=True))
        self.maps = MapDecoder(width, out_channels, start, image_side, min_width=min(width, 16))

    def forward(self, code: Tensor) -> Tensor:
        return self.maps(self.project(code).view(-1, self.width, self.start, self.start))


__all__ = ["MapDecoder", "UpBlock", "VectorDecoder", "up_blocks_between"]
