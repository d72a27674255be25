"""Discriminators of the adversarial reconstruction methods: a DCGAN-style convolutional network (Radford et al.,
2016, Sec. 3) that scores an image (or an inpainted region) as real or made -- the context encoder's adversary
(Pathak et al., 2016, Sec. 3.2 and the authors' train.lua)."""

from __future__ import annotations

from torch import Tensor, nn

from invprop.settings import AT_LEAST_ONE, require

#: LeakyReLU's slope in DCGAN's discriminators.
LEAKY_SLOPE = 0.2
#: The side at which the strided convolutions stop and one convolution over the whole map gives the score.
FINAL_SIDE = 4


class PatchDiscriminator(nn.Module):
    """(B, C, S, S) images -> (B,) real-or-made logits: 4x4 stride-2 convolutions (the first without BatchNorm,
    LeakyReLU 0.2 after each) doubling the width from ``width`` while the map's side is above 4, then a convolution
    over the whole remaining map to one logit.

    Example:
        >>> import torch
        >>> PatchDiscriminator(3, 16, width=8)(torch.rand(5, 3, 16, 16)).shape
        torch.Size([5])
    """

    def __init__(self, in_channels: int, side: int, width: int = 64) -> None:
        super().__init__()
        require("side", side, AT_LEAST_ONE)
        require("width", width, AT_LEAST_ONE)
        layers: list[nn.Module] = []
        channels, current = in_channels, side
        while current > FINAL_SIDE:
            layers.append(nn.Conv2d(channels, width, 4, stride=2, padding=1, bias=not layers))
            if layers[:-1]:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.LeakyReLU(LEAKY_SLOPE, inplace=True))
            channels, width, current = width, width * 2, current // 2
        layers.append(nn.Conv2d(channels, 1, current))
        self.layers = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        return self.layers(images).flatten(1).mean(dim=1)


__all__ = ["PatchDiscriminator"]
