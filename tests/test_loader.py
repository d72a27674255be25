from __future__ import annotations

import torch

from invprop.data import EpochSampler, IndexedDataset, TensorBatches, TensorImages, epoch_order
from invprop.data.transforms import RandomDigitAugment


def test_epoch_order_is_a_seeded_permutation() -> None:
    a, b = epoch_order(50, 7), epoch_order(50, 7)
    assert torch.equal(a, b) and sorted(a.tolist()) == list(range(50))
    assert not torch.equal(a, epoch_order(50, 8))


def test_sampler_keys_carry_the_epoch_seed() -> None:
    sampler = EpochSampler(10)
    sampler.set_epoch_seed(3)
    keys = list(sampler)
    assert len(keys) == len(sampler) == 10
    assert all(seed == 3 for seed, _ in keys)
    assert [i for _, i in keys] == epoch_order(10, 3).tolist()


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
    batches = TensorBatches(images, 4, drop_last=False, device=torch.device("cpu"))
    seen = []
    for indices, pixels in batches.epoch(1):
        assert pixels.dtype == torch.float32
        torch.testing.assert_close(pixels[:, 0, 0, 0], indices.float() / 255)
        seen += indices.tolist()
    assert len(batches) == 3 and sorted(seen) == list(range(10))
    dropped = TensorBatches(images, 4, drop_last=True, device=torch.device("cpu"))
    assert len(dropped) == 2 and sum(len(i) for i, _ in dropped.epoch(1)) == 8


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
