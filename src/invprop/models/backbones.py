"""Backbones, registered by name. Each returns an ``nn.Module`` mapping images to (B, feature_dim) features and
exposing ``feature_dim``, and its stage maps through ``forward_maps`` (:mod:`invprop.models.feature_maps`)."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch
import torchvision
from torch import Tensor, nn

from invprop.models.feature_maps import FeatureMaps, check_stages, sequential_maps
from invprop.models.timm_backbone import TIMM_PREFIX, TimmBackbone, TimmOptions, is_timm_backbone
from invprop.registry import Registry

BACKBONES: Registry[Callable[..., nn.Module]] = Registry("backbone")


class BackboneNames:
    """The values ``model.backbone`` may take: a registered backbone, or ``timm:NAME`` for any timm model (whose
    name is checked against timm's own list by :func:`invprop.models.timm_backbone.timm_architecture`).

    Example:
        >>> "resnet18" in BackboneNames(), "timm:convnext_atto" in BackboneNames(), "resnet19" in BackboneNames()
        (True, True, False)
    """

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in BACKBONES or is_timm_backbone(name))

    def __iter__(self) -> Iterator[str]:
        return iter([*BACKBONES.names(), f"{TIMM_PREFIX}NAME"])

    def __len__(self) -> int:
        return len(BACKBONES) + 1


def build_backbone(
    name: str, in_channels: int = 3, image_size: int | None = None, timm_options: TimmOptions = TimmOptions()
) -> nn.Module:
    """The backbone ``name`` (registered, or ``timm:NAME``) for images of ``in_channels`` channels and side
    ``image_size`` (used by timm's patch-based models; None = the model's own)."""
    if is_timm_backbone(name):
        return TimmBackbone(name, in_channels, image_size, timm_options)
    return BACKBONES.get(name)(in_channels=in_channels)


#: Channel widths of the digits network's three conv stages and the width of its feature vector.
DIGITS_CHANNELS = (32, 64, 128)
DIGITS_FEATURE_DIM = 256
#: Side of the spatial grid the digits network flattens (8x8 input, pooled once).
DIGITS_GRID = 4


def grid_feature_layers(width: int, feature_dim: int) -> list[nn.Module]:
    """Pool a (B, width, H, W) map to a 4x4 grid, flatten it, and project to ``feature_dim`` (BN + ReLU)."""
    return [
        nn.AdaptiveAvgPool2d(DIGITS_GRID),  # identity on a 4x4 map; larger inputs are pooled to the same grid
        nn.Flatten(),
        nn.Linear(width * DIGITS_GRID * DIGITS_GRID, feature_dim, bias=False),
        nn.BatchNorm1d(feature_dim),
        nn.ReLU(inplace=True),
    ]


class DigitsConvNet(nn.Module):
    """A small conv net for 8x8 single-channel digits that keeps spatial layout.

    Global average pooling over an 8x8 map throws away where strokes are, and learns poorly on digits; this net
    pools once (8x8 -> 4x4) and flattens the 4x4 map into a fully connected layer instead.
    """

    def __init__(self, in_channels: int = 1, feature_dim: int = DIGITS_FEATURE_DIM) -> None:
        super().__init__()
        c1, c2, c3 = DIGITS_CHANNELS
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 3, padding=1, bias=False),
            nn.BatchNorm2d(c2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1, bias=False),
            nn.BatchNorm2d(c3),
            nn.ReLU(inplace=True),
            *grid_feature_layers(c3, feature_dim),
        )
        self.feature_dim = feature_dim
        #: The maps after each conv block (8x8, then 4x4 after the pool, then 4x4), before the grid layers.
        self.stage_ends = (3, 7, 10)
        self.stage_channels = DIGITS_CHANNELS

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward_maps(self, x: Tensor, stages: int = 1) -> FeatureMaps:
        """The pooled features and the last ``stages`` block outputs (:class:`FeatureMaps`)."""
        return sequential_maps(self.features, self.stage_ends, x, stages, "digits_convnet")


#: Channel widths of the small CPU network's three conv stages (each followed by a 2x2 max-pool).
SMALL_CHANNELS = (32, 64, 128)
SMALL_FEATURE_DIM = 256


class SmallConvNet(nn.Module):
    """A three-stage conv net for 32x32 colour images on a CPU: about 10M multiply-adds per image (ResNet-18 with
    the CIFAR stem: about 560M). Each stage is conv-BN-ReLU then a 2x2 max-pool (32 -> 16 -> 8 -> 4); the 4x4 map
    is flattened into a fully connected feature layer, as in :class:`DigitsConvNet`."""

    def __init__(self, in_channels: int = 3, feature_dim: int = SMALL_FEATURE_DIM) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for channels in SMALL_CHANNELS:
            layers += [
                nn.Conv2d(width, channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            width = channels
        self.features = nn.Sequential(*layers, *grid_feature_layers(width, feature_dim))
        self.feature_dim = feature_dim
        #: The maps after each stage's max-pool (16x16, 8x8, 4x4 at 32x32 input).
        self.stage_ends = tuple(4 * (i + 1) for i in range(len(SMALL_CHANNELS)))
        self.stage_channels = SMALL_CHANNELS

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward_maps(self, x: Tensor, stages: int = 1) -> FeatureMaps:
        """The pooled features and the last ``stages`` stage outputs (:class:`FeatureMaps`)."""
        return sequential_maps(self.features, self.stage_ends, x, stages, "small_convnet")


def adapt_resnet_stem(net: nn.Module, in_channels: int = 3, cifar_stem: bool = False) -> nn.Module:
    """A torchvision ResNet with ``in_channels`` inputs; ``cifar_stem`` swaps in a 3x3 stride-1 conv, no max-pool."""
    if cifar_stem or in_channels != 3:
        kernel, stride, padding = (3, 1, 1) if cifar_stem else (7, 2, 3)
        net.conv1 = nn.Conv2d(in_channels, 64, kernel, stride=stride, padding=padding, bias=False)
    if cifar_stem:
        net.maxpool = nn.Identity()
    return net


class TorchvisionResNet(nn.Module):
    """A torchvision ResNet without its classifier; ``cifar_stem`` swaps in a 3x3 stride-1 conv and drops the
    max-pool, the usual stem for 32x32 images. ``self.net`` keeps torchvision's parameter names, so its
    ``state_dict()`` loads into ``torchvision.models.resnetXX()`` (minus ``fc``)."""

    def __init__(self, arch: str, in_channels: int = 3, cifar_stem: bool = False) -> None:
        super().__init__()
        net = adapt_resnet_stem(getattr(torchvision.models, arch)(weights=None), in_channels, cifar_stem)
        self.feature_dim = int(getattr(net.fc, "in_features"))
        net.fc = nn.Identity()
        self.net = net
        self.arch = arch
        self.stage_channels = tuple(_stage_width(getattr(net, name)) for name in RESNET_STAGES)

    def forward(self, x: Tensor) -> Tensor:
        return torch.flatten(self.net(x), 1)

    def forward_maps(self, x: Tensor, stages: int = 1) -> FeatureMaps:
        """The pooled features and the last ``stages`` of ``layer1``-``layer4``'s outputs (:class:`FeatureMaps`),
        through torchvision's own layers in its own order."""
        check_stages(stages, len(RESNET_STAGES), self.arch)
        net: Any = self.net  # torchvision.models.ResNet: its layers by name
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        kept: list[Tensor] = []
        for name in RESNET_STAGES:
            x = getattr(net, name)(x)
            kept.append(x)
        return FeatureMaps(torch.flatten(net.avgpool(x), 1), tuple(kept[-stages:]))


#: The residual stages of a torchvision ResNet, early to late.
RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")


def _stage_width(stage: nn.Module) -> int:
    """The output channels of a ResNet stage: its last block's last batch norm."""
    norms = [m for m in stage.modules() if isinstance(m, nn.BatchNorm2d)]
    return int(norms[-1].num_features)


@BACKBONES.register("digits_convnet")
def digits_convnet(in_channels: int = 1) -> nn.Module:
    return DigitsConvNet(in_channels)


@BACKBONES.register("small_convnet")
def small_convnet(in_channels: int = 3) -> nn.Module:
    return SmallConvNet(in_channels)


@BACKBONES.register("resnet18_cifar")
def resnet18_cifar(in_channels: int = 3) -> nn.Module:
    return TorchvisionResNet("resnet18", in_channels, cifar_stem=True)


@BACKBONES.register("resnet18")
def resnet18(in_channels: int = 3) -> nn.Module:
    return TorchvisionResNet("resnet18", in_channels)


@BACKBONES.register("resnet50")
def resnet50(in_channels: int = 3) -> nn.Module:
    return TorchvisionResNet("resnet50", in_channels)
