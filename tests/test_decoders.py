"""Decoders: as many x2 blocks as take a map to the image's side, each an exact nearest-neighbour upsampling when its
convolution is the identity; every backbone's last map decodes to its image's size, with gradients down to the
backbone's first layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from invprop.models import build_encoder
from invprop.models.decoders import MapDecoder, UpBlock, up_blocks_between
from invprop.models.feature_maps import feature_maps


def identity_conv(conv: nn.Conv2d) -> None:
    """Make a 3x3 convolution with as many outputs as inputs copy its input."""
    with torch.no_grad():
        conv.weight.zero_()
        for c in range(conv.out_channels):
            conv.weight[c, c, 1, 1] = 1.0
        if conv.bias is not None:
            conv.bias.zero_()


def test_the_blocks_are_counted_to_reach_the_image_side() -> None:
    assert [up_blocks_between(m, 32) for m in (1, 2, 4, 5, 8, 16, 32, 64)] == [5, 4, 3, 3, 2, 1, 0, 0]


def test_an_identity_block_is_a_nearest_neighbour_upsampling() -> None:
    block = UpBlock(3, 3).eval()
    identity_conv(block[1])
    x = torch.rand(2, 3, 4, 4) + 0.1  # positive: the ReLU keeps it
    out = block(x)
    scale = 1 / (1 + block[2].eps) ** 0.5  # BatchNorm at its initial statistics (mean 0, variance 1)
    for i in range(8):
        for j in range(8):
            assert torch.allclose(out[:, :, i, j], scale * x[:, :, i // 2, j // 2])


@pytest.mark.parametrize(("map_side", "image_side"), [(4, 32), (4, 28), (8, 8), (2, 8)])
def test_a_decoder_gives_the_image_side_and_halves_its_width_down_to_the_floor(map_side: int, image_side: int) -> None:
    decoder = MapDecoder(64, 3, map_side, image_side, min_width=16)
    out = decoder(torch.randn(2, 64, map_side, map_side))
    assert out.shape == (2, 3, image_side, image_side)
    widths = [block[1].out_channels for block in decoder.blocks]
    assert widths == [max(16, 64 >> (k + 1)) for k in range(up_blocks_between(map_side, image_side))]


@pytest.mark.parametrize(("backbone", "channels", "side"), [("digits_convnet", 1, 8), ("small_convnet", 3, 32),
                                                           ("resnet18_cifar", 3, 32)])  # fmt: skip
def test_every_backbones_last_map_decodes_to_its_image(backbone: str, channels: int, side: int) -> None:
    encoder = build_encoder(backbone, "mlp", 32, 64, in_channels=channels, image_size=side)
    images = torch.randn(2, channels, side, side)
    last = feature_maps(encoder.backbone, images).last
    decoder = MapDecoder(last.shape[1], channels, last.shape[-1], side)
    out = decoder(last)
    assert out.shape == images.shape
    out.square().mean().backward()
    first = next(m for m in encoder.backbone.modules() if isinstance(m, nn.Conv2d))
    assert first.weight.grad is not None and bool(first.weight.grad.abs().sum() > 0)  # down to the first layer


def test_a_vector_decoder_maps_a_code_to_an_image_of_the_asked_side_through_the_map_blocks() -> None:
    from invprop.models.decoders import VectorDecoder

    decoder = VectorDecoder(12, 3, image_side=28, width=32, start=4)
    out = decoder(torch.randn(5, 12))
    assert out.shape == (5, 3, 28, 28)
    assert len(decoder.maps.blocks) == 3  # 4 -> 8 -> 16 -> 32, resized to 28
    out.sum().backward()
    assert decoder.project[0].weight.grad is not None
