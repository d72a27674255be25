"""Epoch-seeded batch iteration for both data pipelines.

Every epoch's order and augmentation are a function of one epoch seed, so a resumed run repeats an uninterrupted
one exactly and the per-image pipeline gives the same batches with any number of workers.
"""

from __future__ import annotations

import os
import signal
from typing import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from invprop.data.datasets import IndexedDataset
from invprop.data.image_sequences import TensorImages, to_float
from invprop.data.transforms import Normalize


def ignore_interrupts_in_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: Ctrl-C reaches the whole process group; only the main process handles it
    (saving a checkpoint), so workers must not die of it mid-epoch."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def worker_count(requested: int) -> int:
    """DataLoader workers actually started: ``requested``, capped at the machine's CPU count."""
    return max(0, min(requested, os.cpu_count() or 1))


def epoch_order(n: int, seed: int) -> Tensor:
    """The permutation of ``range(n)`` used by the epoch with ``seed``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(seed, index)`` keys in the epoch's order, for :class:`invprop.data.IndexedDataset`.

    Call :meth:`set_epoch_seed` before each epoch; it works with persistent DataLoader workers, because the sampler
    runs in the main process and the seed travels with every key.
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n = n
        self.seed = seed
        self.start = 0

    def set_epoch_seed(self, seed: int) -> None:
        self.seed = seed
        self.start = 0

    def set_start(self, position: int) -> None:
        """Begin the next pass at ``position`` of the epoch's order (to continue an interrupted epoch)."""
        self.start = position

    def __len__(self) -> int:
        return self.n - self.start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in epoch_order(self.n, self.seed)[self.start :].tolist():
            yield self.seed, index


class TensorBatches:
    """Batches of ``(indices, images in [0, 1])`` from a :class:`TensorImages` held on the training device.

    The images are moved to ``device`` once (uint8: 150 MB for CIFAR-10); each batch is gathered and converted to
    float there, ready for a :class:`invprop.data.batch_transforms.BatchAugment`.

    Args:
        images: the training images.
        batch_size: images per batch.
        drop_last: drop a final incomplete batch.
        device: where batches are produced.
    """

    def __init__(self, images: TensorImages, batch_size: int, drop_last: bool, device: torch.device) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.images = images.images.to(device)
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.device = device

    def __len__(self) -> int:
        return num_batches(self.images.shape[0], self.batch_size, self.drop_last)

    def epoch(self, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The batches of the epoch with ``seed``."""
        order = epoch_order(self.images.shape[0], seed).to(self.device)
        for b in range(len(self)):
            indices = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield indices, to_float(self.images[indices])


def eval_batches(
    dataset: IndexedDataset, batch_size: int, device: torch.device, num_workers: int = 0
) -> Iterator[tuple[Tensor, Tensor]]:
    """``(images, labels)`` batches of a deterministic (eval) dataset, in order, images on ``device``.

    Tensor-backed datasets whose transform is a plain normalisation (the tensor pipeline's eval sets) are sliced
    and normalised on ``device`` directly; anything else goes through a DataLoader.
    """
    source = dataset.source
    if isinstance(source, TensorImages) and isinstance(dataset.transform, Normalize):
        for start in range(0, len(source), batch_size):
            images = to_float(source.images[start : start + batch_size].to(device, non_blocking=True))
            yield dataset.transform(images), source.labels[start : start + batch_size]
        return
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=worker_count(num_workers))
    for _, images, labels in loader:
        yield images.to(device, non_blocking=True), labels
