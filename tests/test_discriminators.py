"""The DCGAN discriminator: one logit per image, strided down to a 4-pixel map, its first layer without BatchNorm."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from invprop.models.discriminators import PatchDiscriminator


@pytest.mark.parametrize(("side", "strided"), [(4, 0), (8, 1), (16, 2), (32, 3)])
def test_the_discriminator_halves_the_side_down_to_four_and_gives_one_logit(side: int, strided: int) -> None:
    net = PatchDiscriminator(3, side, width=8)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert sum(c.stride == (2, 2) for c in convs) == strided
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == max(0, strided - 1)
    out = net(torch.rand(3, 3, side, side))
    assert out.shape == (3,)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
