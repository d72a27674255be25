"""Multi-crop batches from both data pipelines: shapes, the crops' sizes, and the settings that ask for them."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms as T

from invprop.config import from_dict, preset, validate
from invprop.data import build_datasets
from invprop.data.batch_transforms import BatchRandomResizedCrop, build_batch_augment
from invprop.data.multi_crop import SmallCrops, default_small_side, small_crop_augment, small_crop_transform
from invprop.data.splits import small_crops_from
from invprop.engine.batches import BatchPipeline
from invprop.errors import ConfigError, DataError


def test_small_side_follows_swav_ratio():
    assert default_small_side(224) == 96 and default_small_side(32) == 14


def test_small_crop_transform_replaces_or_adds_the_crop():
    crops = SmallCrops(2, 5, (0.1, 0.3))
    cifar = T.Compose([T.RandomResizedCrop(32, scale=(0.2, 1.0)), T.RandomGrayscale(0.2)])
    made = small_crop_transform(cifar, crops)
    crop = made.transforms[0]
    assert isinstance(crop, T.RandomResizedCrop) and crop.size == (5, 5) and crop.scale == (0.1, 0.3)
    assert len(made.transforms) == 2
    plain = small_crop_transform(T.Compose([T.RandomGrayscale(0.2)]), crops)
    assert isinstance(plain.transforms[0], T.RandomResizedCrop) and len(plain.transforms) == 2


def test_small_crop_augment_replaces_the_batch_crop():
    augment = build_batch_augment("cifar_flip", 32, (0.5,) * 3, (0.25,) * 3)
    small = small_crop_augment(augment, SmallCrops(2, 12, (0.05, 0.14)))
    crop = small.ops[0]
    assert isinstance(crop, BatchRandomResizedCrop) and crop.size == 12 and crop.scale == (0.05, 0.14)
    assert crop.flip_p == 0.5  # the preset's flip is kept
    out = small(torch.rand(3, 3, 32, 32), torch.Generator().manual_seed(0))
    assert out.shape == (3, 3, 12, 12)


@pytest.mark.parametrize("pipeline", ["tensor", "per_image"])
def test_both_pipelines_give_large_and_small_crops_view_major(pipeline):
    data = build_datasets("digits", pipeline=pipeline, small_crops=SmallCrops(3, 4, (0.3, 0.6)))
    batches = BatchPipeline(data, 16, torch.device("cpu"), views=2)
    indices, images = next(iter(batches.epoch(seed=1)))
    assert isinstance(images, list) and len(images) == 2
    large, small = images
    assert large.shape == (32, 1, 8, 8) and small.shape == (48, 1, 4, 4) and indices.shape == (16,)
    assert not torch.equal(small[:16], small[16:32])  # each small crop is its own draw
    again = next(iter(batches.epoch(seed=1)))[1]
    assert torch.equal(again[0], large) and torch.equal(again[1], small)  # seeded
    skipped = next(iter(batches.epoch(seed=1, skip=1)))[1]
    second = list(batches.epoch(seed=1))[1][1]
    assert torch.equal(skipped[1], second[1])  # resuming mid-epoch gives the same crops
    plain = next(iter(batches.plain_epoch(seed=1)))[1]
    assert isinstance(plain, torch.Tensor) and plain.shape == (16, 1, 8, 8)


def test_settings_resolve_and_refuse():
    cfg = from_dict({"method": "swav", "data": {"small_crops": 4}}, base=preset("cifar10", "swav"))
    crops = small_crops_from(cfg.data)
    assert crops is not None and crops.count == 4 and crops.size is None and crops.scale == (0.05, 0.14)
    with pytest.raises(DataError, match="small_crop_scale must be two numbers"):
        small_crops_from(from_dict({"data": {"small_crops": 1, "small_crop_scale": [0.1]}}).data)
    with pytest.raises(DataError, match="0 < low <= high <= 1"):
        small_crops_from(from_dict({"data": {"small_crops": 1, "small_crop_scale": [0.5, 0.1]}}).data)
    with pytest.raises(ConfigError, match="method invp does not use multi-crop small crops; set data.small_crops=0"):
        validate(from_dict({"method": "invp", "data": {"small_crops": 2}}))
