"""Spatial feature maps of a backbone: what the dense and predictive methods read (DenseCL, DIM, AMDIM, CPC, ...).

Every backbone maps images to one pooled vector (``forward``: what evaluation and export use) and, through
``forward_maps(x, stages)``, gives the same pooled vector together with its last ``stages`` stage outputs as
``(B, C, h, w)`` maps -- the last one the map right before pooling. ``stage_channels`` says each stage's width, early
to late. A ViT's patch tokens are its map (the class token and other prefix tokens left out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

from torch import Tensor, nn

from invprop.errors import ConfigError


@dataclass(frozen=True)
class FeatureMaps:
    """One pass of a backbone: ``pooled`` (B, feature_dim), the very numbers ``forward`` gives, and ``stages``, the
    last stage outputs, early to late, each (B, C_i, h_i, w_i); ``stages[-1]`` is the map that is pooled."""

    pooled: Tensor
    stages: tuple[Tensor, ...]

    @property
    def last(self) -> Tensor:
        """The pre-pool map (B, C, h, w)."""
        return self.stages[-1]


@runtime_checkable
class MapBackbone(Protocol):
    """A backbone that gives its feature maps (every backbone of invprop does)."""

    stage_channels: tuple[int, ...]

    def forward_maps(self, x: Tensor, stages: int = 1) -> FeatureMaps: ...


def check_stages(stages: int, available: int, backbone: str) -> None:
    """A one-line error unless ``1 <= stages <= available`` (the backbone ``backbone`` has ``available`` stages)."""
    if not 1 <= stages <= available:
        raise ConfigError(f"{backbone} has {available} feature-map stage(s); asked for the last {stages}: ask for 1 to "
                          f"{available}")  # fmt: skip


def sequential_maps(
    layers: nn.Sequential, stage_ends: Sequence[int], x: Tensor, stages: int, name: str = "the backbone"
) -> FeatureMaps:
    """Run ``layers`` on ``x`` keeping the outputs after the layers numbered ``stage_ends`` (exclusive ends, early
    to late); the layers after the last end pool the last map. Same modules, same order: the pooled vector is the
    one ``layers(x)`` gives. ``name`` names the backbone in the error for a ``stages`` it does not have.

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten())
        >>> maps = sequential_maps(net, (1, 2), torch.rand(1, 1, 4, 4), stages=1)
        >>> tuple(maps.last.shape), tuple(maps.pooled.shape)
        ((1, 2, 4, 4), (1, 32))
    """
    check_stages(stages, len(stage_ends), name)
    kept: list[Tensor] = []
    start = 0
    for end in stage_ends:
        x = layers[start:end](x)
        kept.append(x)
        start = end
    return FeatureMaps(layers[start:](x), tuple(kept[-stages:]))


def map_backbone(backbone: nn.Module) -> MapBackbone:
    """``backbone`` as a :class:`MapBackbone`, or a one-line error for a backbone that cannot give maps."""
    if not isinstance(backbone, MapBackbone):
        raise ConfigError(f"the backbone {type(backbone).__name__} gives no feature maps (no forward_maps); the dense "
                          "methods need one of invprop's backbones or a timm model")  # fmt: skip
    return backbone


def map_channels(backbone: nn.Module, stage: int = -1) -> int:
    """The width of ``backbone``'s stage ``stage`` (default: the last, pre-pool map); a one-line error for a
    backbone that cannot give maps."""
    channels = map_backbone(backbone).stage_channels
    available = len(channels)
    if not -available <= stage < available:
        raise ConfigError(f"{type(backbone).__name__} has {available} feature-map stage(s); stage {stage} asked for: "
                          f"count from the last with 1 to {available}")  # fmt: skip
    return int(channels[stage])


def feature_maps(backbone: nn.Module, x: Tensor, stages: int = 1) -> FeatureMaps:
    """``backbone``'s pooled features of ``x`` and its last ``stages`` maps; a one-line error for a backbone that
    cannot give maps."""
    return map_backbone(backbone).forward_maps(x, stages)


__all__ = [
    "FeatureMaps",
    "MapBackbone",
    "check_stages",
    "feature_maps",
    "map_backbone",
    "map_channels",
    "sequential_maps",
]
