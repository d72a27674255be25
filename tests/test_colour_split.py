"""Colour-split encoders (CMC's L and ab): each group's backbone sees its channels of the colour space scaled to
[-1, 1], the pooled feature and the maps are the groups' side by side, each group's head embeds its own features,
and one-channel data or a missing normalisation is refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from invprop.core.colour_space import rgb_to_lab, rgb_to_ycbcr
from invprop.errors import ConfigError
from invprop.models import build_encoder, from_head_layer
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
        groups = net.colour_groups(x)
        own = [branch.forward_maps(part, 2) for branch, part in zip(net.branches, groups, strict=True)]
    assert [m.shape[1] for m in found.stages] == list(net.stage_channels[-2:])
    assert net.stage_channels == tuple(2 * c for c in SmallConvNet().stage_channels)
    for stage in range(2):  # each stage: L's map, then ab's, along the channels
        assert torch.equal(found.stages[stage], torch.cat([own[0].stages[stage], own[1].stages[stage]], dim=1))


def test_group_heads_embed_each_groups_features_with_its_own_head() -> None:
    heads = GroupHeads((3, 5), lambda width: nn.Linear(width, 2))
    features = torch.randn(4, 8)
    expected = torch.cat([heads.heads[0](features[:, :3]), heads.heads[1](features[:, 3:])], dim=1)
    assert torch.equal(heads(features), expected)


def test_the_normalisation_is_the_datas_not_the_checkpoints() -> None:
    encoder = build_encoder("small_convnet", "linear", 16, colour_split="lab", normalisation=(MEAN, STD))
    assert tuple(encoder(torch.rand(2, 3, 32, 32)).shape) == (2, 32)  # two views' embeddings side by side
    assert encoder.feature_dim == 2 * SmallConvNet().feature_dim
    state = encoder.state_dict()
    assert not any(key.startswith("backbone.mean") or key.startswith("backbone.std") for key in state)
    other = (0.1, 0.2, 0.3), (0.5, 0.5, 0.5)  # a transfer dataset's own statistics
    transfer = build_encoder("small_convnet", "linear", 16, colour_split="lab", normalisation=other)
    transfer.load_state_dict(state, strict=True)
    assert torch.equal(transfer.backbone.std.flatten(), torch.tensor(other[1]))
    rgb = torch.rand(2, 3, 32, 32)
    batch = (rgb - torch.tensor(other[0]).view(1, 3, 1, 1)) / torch.tensor(other[1]).view(1, 3, 1, 1)
    encoder.eval(), transfer.eval()
    with torch.no_grad():  # the same images, each normalised by its own data's statistics: the same features
        torch.testing.assert_close(transfer.features(batch), encoder.features(_normalised(rgb)), rtol=1e-4, atol=1e-4)


def test_from_head_layer_refuses_one_head_per_group_in_one_line() -> None:
    encoder = build_encoder("small_convnet", "mlp", 16, colour_split="lab", normalisation=(MEAN, STD))
    assert from_head_layer(encoder, 0) is encoder
    with pytest.raises(ConfigError, match="one head per channel group .* give 0"):
        from_head_layer(encoder, 1)


def test_one_channel_images_and_a_missing_normalisation_are_refused() -> None:
    with pytest.raises(ConfigError, match="model.colour_split=lab needs colour images, and these have 1 channel"):
        build_encoder("digits_convnet", colour_split="lab", in_channels=1, normalisation=((0.5,), (0.5,)))
    with pytest.raises(ValueError, match="give the mean and std of the 3 channels"):
        build_encoder("small_convnet", colour_split="lab")
