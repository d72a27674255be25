"""The training batches of a run: this process's ``(indices, augmented images)`` on the training device, by epoch.

Two pipelines give the same kind of batches. The tensor pipeline keeps every image on the training device as uint8
and augments whole batches there with a generator seeded from the epoch (and the rank). The per-image pipeline runs
torchvision transforms in DataLoader workers, each image seeded from (epoch seed, index). Either way an epoch's
batches are a function of its seed, and an interrupted epoch continues exactly from any step.

With multi-crop small crops (``data.small_crops``) a batch's images are a list ``[large, small]``
(:mod:`invprop.data.multi_crop`); otherwise one tensor.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator, Union

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from invprop.data import DataSplits, EpochBatchSampler, TensorBatches
from invprop.data.image_sequences import Unreadable
from invprop.data.loader import (
    OrderFn,
    collate_readable,
    dead_worker,
    epoch_order,
    epoch_plan,
    ignore_interrupts_in_worker,
    worker_count,
    worker_lost,
)
from invprop.data.multi_crop import MultiCrop, group_crops
from invprop.data.transforms import MultiView
from invprop.errors import DataError

logger = logging.getLogger(__name__)

#: A batch's images: one view-major tensor, or ``[large, small]`` with multi-crop.
Images = Union[Tensor, list[Tensor]]

#: The fewest images of a batch, after files that could not be read are left out, that a step trains on.
MIN_READABLE = 2

#: Offsets each process's batch-augmentation seed in a distributed run (rank 0 keeps the single-process seed).
RANK_SEED_STRIDE = 7_919


class BatchPipeline:
    """Batches of ``batch_size`` images (the global batch; this process gets its share) with ``views`` views each.

    Args:
        data: the run's datasets (the tensor pipeline when ``data.train_images`` is set).
        batch_size: the global batch size.
        device: where batches are produced.
        views: augmented views per image, stacked view-major: (views x B, C, H, W).
        num_workers: DataLoader workers of the per-image pipeline.
        world_size: number of processes W.
        rank: this process.
        order: the epoch's order of indices, ``(n, seed) -> indices`` (default: a permutation).
        strict: stop with one line naming it when a training image file cannot be read any more (removed or damaged
            while the run trains); otherwise its batches go on without it, and it is counted in
            :attr:`unreadable` (a distributed run always stops: its processes' batches must stay the same size).
    """

    def __init__(
        self, data: DataSplits, batch_size: int, device: torch.device, views: int = 1, num_workers: int = 0,
        world_size: int = 1, rank: int = 0, order: OrderFn = epoch_order, strict: bool = False,
    ) -> None:  # fmt: skip
        self.device = device
        self.strict_asked = strict
        self.strict = strict or world_size > 1
        #: Training files that could not be read during the run, path -> reason (the per-image pipeline).
        self.unreadable: dict[str, str] = {}
        self.views = views
        self.rank = rank
        #: The global batches of an epoch (a final batch too small for BatchNorm on every process is dropped).
        self.steps_per_epoch = len(epoch_plan(len(data.train), batch_size, world_size))
        self._tensor_batches: TensorBatches | None = None
        self._loader: DataLoader | None = None
        self.small_count = data.small_crops.count if data.small_crops is not None else 0
        if data.train_images is not None:
            assert data.batch_augment is not None
            self._tensor_batches = TensorBatches(data.train_images, batch_size, device, world_size, rank, order)
            self._augment = data.batch_augment.to(device)
            self._small_augment = data.small_augment.to(device) if data.small_augment is not None else None
            return
        self._sampler = EpochBatchSampler(len(data.train), batch_size, world_size, rank, order)
        if self.small_count:  # each item is a list: views full-size crops, then the small ones
            assert data.small_transform is not None
            data.train.transform = MultiCrop(  # type: ignore[assignment]  # items are lists of crops
                data.train.transform, views, data.small_transform, self.small_count
            )
        elif views > 1:  # each item carries all of its views: (views, C, H, W)
            data.train.transform = MultiView(data.train.transform, views)
        workers = worker_count(num_workers)
        self._loader = DataLoader(
            data.train,
            batch_sampler=self._sampler,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
            worker_init_fn=ignore_interrupts_in_worker,
            collate_fn=collate_readable,
            # Its own generator: starting its workers draws nothing from the global one, whose stream (masks, noise)
            # must not depend on whether a run resumed (the images' augmentations are seeded per image anyway).
            generator=torch.Generator(),
        )

    def plain_epoch(self, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The epoch with ``seed`` with one full-size view and no small crops."""
        for indices, images in self.epoch(seed, views=1):
            assert isinstance(images, Tensor)
            yield indices, images

    def epoch(self, seed: int, skip: int = 0, views: int | None = None) -> Iterator[tuple[Tensor, Images]]:
        """The batches of the epoch with ``seed``, from batch ``skip`` on, with ``views`` views (default: all, and
        the small crops; a number: that many full-size views, no small crops)."""
        small = self.small_count if views is None else 0
        views = self.views if views is None else views
        if self._tensor_batches is not None:
            generator = torch.Generator(device=self.device).manual_seed(seed + RANK_SEED_STRIDE * self.rank)
            for step, (indices, images) in enumerate(self._tensor_batches.epoch(seed)):
                # Skipped batches are augmented too: they advance the generator.
                augmented = torch.cat([self._augment(images, generator) for _ in range(views)])
                if small and self._small_augment is not None:
                    crops = torch.cat([self._small_augment(images, generator) for _ in range(small)])
                    if step >= skip:
                        yield indices, [augmented, crops]
                elif step >= skip:
                    yield indices, augmented
            return
        assert self._loader is not None
        self._sampler.set_epoch_seed(seed)
        self._sampler.set_start(skip)  # per-image seeds make skipping exact
        for indices, images, _, lost in _surviving_workers(iter(self._loader)):
            if lost:
                self._lose(lost)
                if indices.numel() < MIN_READABLE:  # BatchNorm, and the in-batch losses, need two
                    raise DataError(
                        f"{indices.numel()} image(s) of a training batch of {indices.numel() + len(lost)} could be "
                        f"read (e.g. not {lost[0].path}: {lost[0].reason}), too few to train on: the folder changed "
                        "while the run trained; restore its files, then resume"
                    )
            indices = indices.to(self.device, non_blocking=True)
            if isinstance(images, list):  # from MultiCrop: per position, (B, C, H, W)
                if small:
                    yield indices, [t.to(self.device, non_blocking=True) for t in group_crops(images, self.views)]
                    continue
                images = torch.stack(images[:views], dim=1)
            if images.dim() == 5:  # (B, views, C, H, W) from MultiView
                images = images[:, :views].transpose(0, 1).reshape(-1, *images.shape[2:])
            yield indices, images.to(self.device, non_blocking=True)

    def _lose(self, lost: list[Unreadable]) -> None:
        """Count training files that could not be read; stop with one line when :attr:`strict`."""
        first = lost[0]
        if self.strict:
            raise DataError(
                f"{first.path} could not be read during training ({first.reason}): the folder changed while the run "
                "trained; restore the file and resume"
                + (", or drop --strict-data to skip it" if self.strict_asked else " (a distributed run cannot skip it)")
            )
        for item in lost:
            if item.path not in self.unreadable:
                self.unreadable[item.path] = item.reason
                logger.warning("%s could not be read during training (%s): its batches go on without it (%d such "
                               "file(s) in this run; --strict-data stops instead)", item.path, item.reason,
                               len(self.unreadable))  # fmt: skip


def _surviving_workers(batches: Iterator[Any]) -> Iterator[Any]:
    """``batches`` of a DataLoader, where a worker's death (the out-of-memory killer) ends in one line
    (:class:`~invprop.errors.WorkerLost`), not in the failed read's traceback."""
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as err:  # noqa: BLE001 - re-raised unless a worker died
            lost = worker_lost(err) or dead_worker(batches)
            if lost is None:
                raise
            raise lost from None
        yield batch


__all__ = ["RANK_SEED_STRIDE", "BatchPipeline", "Images"]
