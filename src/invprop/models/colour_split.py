"""Encoders of colour-space channel groups, one backbone per group (Tian et al., 2019, CMC: L and ab of Lab).

A :class:`ColourSplitBackbone` takes the batches as every other backbone does (normalised sRGB), undoes the
normalisation, converts to the split's colour space, scales each channel to [-1, 1] over the range it spans on
the sRGB cube (for Lab the authors' normalisation, from the same ranges; for YCbCr they scale skimage's 16-235
form by fixed statistics instead), and runs one backbone per channel group. Its
pooled feature is the groups' features side by side, so kNN, the linear probe and export see one vector; its maps
are the groups' maps stacked along the channels. :class:`GroupHeads` gives each group's features its own head,
the embeddings side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from invprop.core.colour_space import ColourSpace, channel_range, rgb_to_lab, rgb_to_ycbcr
from invprop.models.feature_maps import FeatureMaps, feature_maps, map_backbone
from invprop.registry import Registry


@dataclass(frozen=True)
class ColourSplit:
    """A colour space and its channel groups, each seen by its own backbone.

    Attributes:
        convert: sRGB (B, 3, H, W) in [0, 1] -> the colour space (B, 3, H, W).
        groups: the channels of each group, in order.
        source: where the split comes from.
    """

    convert: ColourSpace
    groups: tuple[tuple[int, ...], ...]
    source: str


#: The colour splits ``model.colour_split`` may name.
COLOUR_SPLITS: Registry[ColourSplit] = Registry("colour split")
COLOUR_SPLITS.register("lab")(ColourSplit(rgb_to_lab, ((0,), (1, 2)), "Tian et al. (2019), CMC, Sec. 4.2 (L and ab)"))
COLOUR_SPLITS.register("ycbcr")(
    ColourSplit(rgb_to_ycbcr, ((0,), (1, 2)), "Tian et al. (2019), the authors' HobbitLong/CMC, README (--view YCbCr)")
)


class ColourSplitBackbone(nn.Module):
    """One backbone per channel group of a colour space.

    Args:
        split: the registered name of the :class:`ColourSplit`.
        make: ``make(in_channels)`` -> a backbone for images of that many channels (called once per group).
        mean, std: (3,) the normalisation of the batches it is given (not saved with the weights: a checkpoint read
            for another dataset undoes that dataset's own normalisation).

    Example:
        >>> from invprop.models.backbones import SmallConvNet
        >>> net = ColourSplitBackbone("lab", lambda c: SmallConvNet(in_channels=c), (0.5,) * 3, (0.25,) * 3)
        >>> net.feature_dim == 2 * SmallConvNet().feature_dim, tuple(net(torch.rand(2, 3, 32, 32)).shape)
        (True, (2, 512))
    """

    mean: Tensor
    std: Tensor
    centre: Tensor
    half_range: Tensor

    def __init__(
        self, split: str, make: Callable[[int], nn.Module], mean: Sequence[float], std: Sequence[float]
    ) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"a {split} colour split undoes the batches' normalisation: give the mean and std of the "
                             f"3 channels, not {len(mean)} and {len(std)} value(s)")  # fmt: skip
        self.split = COLOUR_SPLITS.get(split)
        self.branches = nn.ModuleList(make(len(group)) for group in self.split.groups)
        low, high = channel_range(self.split.convert)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("centre", ((low + high) / 2).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("half_range", ((high - low) / 2).view(1, 3, 1, 1), persistent=False)
        self.group_dims = tuple(int(getattr(branch, "feature_dim")) for branch in self.branches)
        self.feature_dim = sum(self.group_dims)

    def colour_groups(self, x: Tensor) -> list[Tensor]:
        """The channel groups of a normalised sRGB batch (B, 3, H, W) in the split's colour space, each channel
        scaled to [-1, 1] over its range on the sRGB cube; in ``x``'s dtype."""
        rgb = (x.float() * self.std + self.mean).clamp(0, 1)
        scaled = ((self.split.convert(rgb) - self.centre) / self.half_range).to(x.dtype)
        return [scaled[:, list(group)] for group in self.split.groups]

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([branch(part) for branch, part in zip(self.branches, self.colour_groups(x), strict=True)], 1)

    def forward_maps(self, x: Tensor, stages: int = 1) -> FeatureMaps:
        """Each group's maps, stacked along the channels (the groups' backbones are alike, so their maps have one
        size), and the pooled features of :meth:`forward`."""
        found = [feature_maps(b, part, stages) for b, part in zip(self.branches, self.colour_groups(x), strict=True)]
        stacked = tuple(torch.cat(maps, dim=1) for maps in zip(*(f.stages for f in found), strict=True))
        return FeatureMaps(torch.cat([f.pooled for f in found], dim=1), stacked)

    @property
    def stage_channels(self) -> tuple[int, ...]:
        widths = [map_backbone(branch).stage_channels for branch in self.branches]
        return tuple(sum(stage) for stage in zip(*widths, strict=True))


class GroupHeads(nn.Module):
    """One head per group of a :class:`ColourSplitBackbone`'s features: (B, sum(group_dims)) -> (B, groups x D),
    each group's embedding in its own block of D columns.

    Args:
        group_dims: the width of each group's features, in order.
        make: ``make(in_dim)`` -> a head from that width to D.
    """

    def __init__(self, group_dims: Sequence[int], make: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.group_dims = tuple(group_dims)
        self.heads = nn.ModuleList(make(width) for width in self.group_dims)

    def forward(self, features: Tensor) -> Tensor:
        parts = torch.split(features, list(self.group_dims), dim=1)
        return torch.cat([head(part) for head, part in zip(self.heads, parts, strict=True)], dim=1)


__all__ = ["COLOUR_SPLITS", "ColourSplit", "ColourSplitBackbone", "GroupHeads"]
