from __future__ import annotations

import pytest
import torch

from invprop.data import EpochBatchSampler, IndexedDataset, TensorBatches, TensorImages, epoch_order, epoch_plan
from invprop.data.transforms import RandomDigitAugment


def test_epoch_order_is_a_seeded_permutation() -> None:
    a, b = epoch_order(50, 7), epoch_order(50, 7)
    assert torch.equal(a, b) and sorted(a.tolist()) == list(range(50))
    assert not torch.equal(a, epoch_order(50, 8))


def test_sampler_keys_carry_the_epoch_seed() -> None:
    sampler = EpochBatchSampler(10, batch_size=4)
    sampler.set_epoch_seed(3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3 and [len(b) for b in batches] == [4, 4, 2]
    keys = [key for batch in batches for key in batch]
    assert all(seed == 3 for seed, _ in keys)
    assert [i for _, i in keys] == epoch_order(10, 3).tolist()
    sampler.set_start(2)
    assert list(sampler) == batches[2:]


def test_epoch_plan_keeps_global_batches_for_any_process_count() -> None:
    assert epoch_plan(10, 4) == [(0, 4), (4, 4), (8, 2)]
    assert epoch_plan(9, 4) == [(0, 4), (4, 4)]  # a last batch of one image is dropped
    assert epoch_plan(10, 4, world_size=2) == [(0, 2), (4, 2)]  # 2 left: one each is below the minimum of 2
    assert epoch_plan(13, 4, world_size=2) == [(0, 2), (4, 2), (8, 2)]
    assert [start for start, _ in epoch_plan(16, 4, world_size=2)] == [start for start, _ in epoch_plan(16, 4)]
    with pytest.raises(ValueError, match="multiple"):
        epoch_plan(10, 5, world_size=2)


def test_ranks_split_each_global_batch_in_order() -> None:
    whole = EpochBatchSampler(23, batch_size=6)
    ranks = [EpochBatchSampler(23, batch_size=6, world_size=3, rank=r) for r in range(3)]
    for sampler in (whole, *ranks):
        sampler.set_epoch_seed(5)
    per_rank = [list(s) for s in ranks]
    assert [len(b) for b in per_rank[0]] == [2, 2, 2]  # 23 = 3 x 6 + 5 -> the last global batch gives 1 each: dropped
    for step, batch in enumerate(list(whole)[:3]):
        assert sum((per_rank[r][step] for r in range(3)), []) == batch
    with pytest.raises(ValueError, match="rank"):
        EpochBatchSampler(10, 4, world_size=2, rank=2)


def test_seeded_items_do_not_depend_on_call_order_or_global_rng() -> None:
    images = TensorImages(torch.rand(6, 1, 8, 8), torch.arange(6))
    data = IndexedDataset(images, RandomDigitAugment())
    forward = [data[(5, i)][1] for i in range(6)]
    torch.manual_seed(123)
    backward = [data[(5, i)][1] for i in reversed(range(6))][::-1]
    for x, y in zip(forward, backward):
        assert torch.equal(x, y)
    assert not torch.equal(data[(5, 0)][1], data[(6, 0)][1])
    state = torch.get_rng_state()
    data[(5, 1)]
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone


def test_tensor_batches_cover_each_image_once() -> None:
    images = TensorImages(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2), torch.arange(10))
    batches = TensorBatches(images, 4, device=torch.device("cpu"))
    seen = []
    for indices, pixels in batches.epoch(1):
        assert pixels.dtype == torch.float32
        torch.testing.assert_close(pixels[:, 0, 0, 0], indices.float() / 255)
        seen += indices.tolist()
    assert len(batches) == 3 and sorted(seen) == list(range(10))
    halves = [TensorBatches(images, 4, torch.device("cpu"), world_size=2, rank=r) for r in range(2)]
    assert len(halves[0]) == 2  # the last 2 images would give each process one: dropped
    for (a, _), (b, _), (whole, _) in zip(halves[0].epoch(1), halves[1].epoch(1), batches.epoch(1)):
        assert torch.cat([a, b]).tolist() == whole.tolist()


def test_eval_batches_equal_the_per_item_path() -> None:
    from invprop.data import build_datasets
    from invprop.data.loader import eval_batches

    splits = build_datasets("digits", pipeline="tensor")
    fast = list(eval_batches(splits.test, 100, torch.device("cpu")))
    assert [len(y) for _, y in fast] == [100, 100, 100, 100, 50]
    images = torch.cat([x for x, _ in fast])
    per_item = torch.stack([splits.test[i][1] for i in range(len(splits.test))])
    assert torch.equal(images, per_item)
    assert torch.equal(torch.cat([y for _, y in fast]), splits.test.labels)
    # A non-tensor dataset goes through a DataLoader and gives the same batches.
    slow = build_datasets("digits", pipeline="per_image")
    slow_images = torch.cat([x for x, _ in eval_batches(slow.test, 100, torch.device("cpu"))])
    assert torch.equal(slow_images, per_item)
