"""Colour-split encoders (CMC's L and ab): each group's backbone sees its channels of the colour space scaled to
[-1, 1], the pooled feature and the maps are the groups' side by side, each group's head embeds its own features,
and one-channel data or a missing normalisation is refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from invprop.core.colour_space import rgb_to_lab, rgb_to_ycbcr
from invprop.errors import ConfigError
from invprop.models import build_encoder
from invprop.models.backbones import SmallConvNet
from invprop.models.colour_split import ColourSplitBackbone, GroupHeads

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def _split(name: str = "lab") -> ColourSplitBackbone:
    torch.manual_seed(0)
    return ColourSplitBackbone(name, lambda c: SmallConvNet(in_channels=c), MEAN, STD).eval()


def _normalised(rgb: torch.Tensor) -> torch.Tensor:
    return (rgb - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


@pytest.mark.parametrize(
    ("name", "convert", "low", "high"),
    [
        ("lab", rgb_to_lab, (0.0, -86.1813, -107.8618), (100.0, 98.2352, 94.4758)),
        ("ycbcr", rgb_to_ycbcr, (0.0, -0.5, -0.5), (1.0, 0.5, 0.5)),
    ],
)
def test_each_group_sees_its_channels_scaled_over_their_range(name, convert, low, high) -> None:  # type: ignore[no-untyped-def]
    net = _split(name)
    rgb = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    space = convert(rgb)
    lo, hi = torch.tensor(low).view(1, 3, 1, 1), torch.tensor(high).view(1, 3, 1, 1)
    scaled = (space - (lo + hi) / 2) / ((hi - lo) / 2)  # the authors' normalisation, from the ranges written here
    first, second = net.colour_groups(_normalised(rgb))
    assert torch.allclose(first, scaled[:, :1], atol=1e-4)
    assert torch.allclose(second, scaled[:, 1:], atol=1e-4)
    with torch.no_grad():
        expected = torch.cat([net.branches[0](first), net.branches[1](second)], dim=1)
        assert torch.equal(net(_normalised(rgb)), expected)


def test_maps_are_the_groups_maps_side_by_side_and_the_pooled_vector_is_forwards() -> None:
    net = _split()
    x = _normalised(torch.rand(2, 3, 32, 32))
    with torch.no_grad():
        found = net.forward_maps(x, stages=2)
        assert torch.equal(found.pooled, net(x))
        first, second = net.colour_groups(x)
        own = net.branches[1].forward_maps(second, 2)
    assert [tuple(m.shape[1:2]) for m in found.stages] == [(c,) for c in net.stage_channels[-2:]]
    assert net.stage_channels == tuple(2 * c for c in SmallConvNet().stage_channels)
    half = found.last.shape[1] // 2
    assert torch.equal(found.last[:, half:], own.last)


def test_group_heads_embed_each_groups_features_with_its_own_head() -> None:
    heads = GroupHeads((3, 5), lambda width: nn.Linear(width, 2))
    features = torch.randn(4, 8)
    expected = torch.cat([heads.heads[0](features[:, :3]), heads.heads[1](features[:, 3:])], dim=1)
    assert torch.equal(heads(features), expected)


def test_the_encoder_of_a_colour_split_keeps_its_normalisation_with_its_weights() -> None:
    encoder = build_encoder("small_convnet", "linear", 16, colour_split="lab", normalisation=(MEAN, STD))
    assert tuple(encoder(torch.rand(2, 3, 32, 32)).shape) == (2, 32)  # two views' embeddings side by side
    assert encoder.feature_dim == 2 * SmallConvNet().feature_dim
    state = encoder.state_dict()
    assert torch.equal(state["backbone.mean"].flatten(), torch.tensor(MEAN))
    other = build_encoder("small_convnet", "linear", 16, colour_split="lab", normalisation=((0.0,) * 3, (1.0,) * 3))
    other.load_state_dict(state)
    assert torch.equal(other.backbone.std.flatten(), torch.tensor(STD))


def test_one_channel_images_and_a_missing_normalisation_are_refused() -> None:
    with pytest.raises(ConfigError, match="model.colour_split=lab needs colour images, and these have 1 channel"):
        build_encoder("digits_convnet", colour_split="lab", in_channels=1, normalisation=((0.5,), (0.5,)))
    with pytest.raises(ValueError, match="give the mean and std of the 3 channels"):
        build_encoder("small_convnet", colour_split="lab")
