"""Multi-crop (Caron et al., 2020, SwAV, Sec. 3.2): besides the method's full-size views, ``count`` small crops per
image, in both data pipelines.

A small crop is the training augmentation with its random resized crop replaced by one of side ``size`` over the
area fraction ``scale`` (SwAV: 96 pixels of a 224 image, 5-14 % of its area); an augmentation without a crop (the
digits preset) gets one in front. A multi-crop batch is a list of two tensors, ``[large (views x B, C, H, W),
small (count x B, C, s, s)]``, each view-major.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchvision.transforms as T
from torch import Tensor

from invprop.data.batch_transforms import BatchAugment, BatchRandomResizedCrop
from invprop.data.transforms import Transform

#: SwAV's small crops (Sec. 3.2 and its ImageNet setting): side 96 for images of 224, scale of the area 0.05-0.14.
SMALL_CROP_SIDE_RATIO = 96 / 224
SMALL_CROP_SCALE = (0.05, 0.14)


@dataclass(frozen=True)
class SmallCrops:
    """``count`` small crops of side ``size`` (None: not resolved yet, see :func:`default_small_side`) covering
    ``scale`` of the image's area."""

    count: int
    size: int | None
    scale: tuple[float, float] = SMALL_CROP_SCALE

    def __post_init__(self) -> None:
        if self.count < 1 or (self.size is not None and self.size < 1):
            raise ValueError(f"small crops need a count and a side of at least 1, got {self.count} and {self.size}")
        low, high = self.scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"the small crops' scale must satisfy 0 < low <= high <= 1, got {list(self.scale)}")


def default_small_side(image_size: int, multiple: int = 1) -> int:
    """SwAV's ratio of the small crop's side to the image's: 96 / 224 (14 pixels for 32-pixel images), rounded to a
    multiple of ``multiple`` (a ViT's patch side: 12 pixels for 32-pixel images and 4-pixel patches).

    Example:
        >>> default_small_side(32), default_small_side(32, multiple=4), default_small_side(224, multiple=16)
        (14, 12, 96)
    """
    return max(1, round(image_size * SMALL_CROP_SIDE_RATIO / multiple)) * multiple


def _side(crops: SmallCrops) -> int:
    if crops.size is None:
        raise ValueError("the small crops' side is not resolved; build them through build_datasets")
    return crops.size


def small_crop_transform(train: Transform, crops: SmallCrops) -> T.Compose:
    """The per-image training transform ``train`` (a ``Compose``) making small crops: its RandomResizedCrop replaced
    (or one put first)."""
    if not isinstance(train, T.Compose):
        raise TypeError(f"small crops need a Compose training transform, got {type(train).__name__}")
    side = _side(crops)
    ops = list(train.transforms)
    places = [i for i, op in enumerate(ops) if isinstance(op, T.RandomResizedCrop)]
    if places:
        ops[places[0]] = T.RandomResizedCrop(side, scale=crops.scale, ratio=ops[places[0]].ratio, antialias=True)
    else:
        ops.insert(0, T.RandomResizedCrop(side, scale=crops.scale, antialias=True))
    return T.Compose(ops)


def small_crop_augment(augment: BatchAugment, crops: SmallCrops) -> BatchAugment:
    """The batch counterpart of :func:`small_crop_transform`."""
    ops = list(augment.ops)
    places = [i for i, op in enumerate(ops) if isinstance(op, BatchRandomResizedCrop)]
    if places:
        old = ops[places[0]]
        assert isinstance(old, BatchRandomResizedCrop)
        ops[places[0]] = BatchRandomResizedCrop(_side(crops), crops.scale, old.ratio, old.flip_p)
    else:
        ops.insert(0, BatchRandomResizedCrop(_side(crops), crops.scale, flip_p=0.0))
    mean = tuple(augment.mean.flatten().tolist())
    std = tuple(augment.std.flatten().tolist())
    return BatchAugment(ops, mean, std)


class MultiCrop:
    """Per image: ``views`` draws of the full-size transform, then ``small.count`` draws of the small-crop one;
    returns the list of the (C, H, W) and (C, s, s) tensors (a DataLoader collates it position by position)."""

    def __init__(self, large: Transform, views: int, small: Transform, count: int) -> None:
        self.large = large
        self.views = views
        self.small = small
        self.count = count

    def __call__(self, image: object) -> list[Tensor]:
        return [self.large(image) for _ in range(self.views)] + [self.small(image) for _ in range(self.count)]


def group_crops(crops: list[Tensor], views: int) -> list[Tensor]:
    """Collated per-position crops ``[(B, C, H, W)] x views + [(B, C, s, s)] x count`` -> ``[large, small]``, each
    view-major."""
    return [torch.cat(crops[:views]), torch.cat(crops[views:])]


__all__ = [
    "SMALL_CROP_SCALE",
    "SMALL_CROP_SIDE_RATIO",
    "MultiCrop",
    "SmallCrops",
    "default_small_side",
    "group_crops",
    "small_crop_augment",
    "small_crop_transform",
]
