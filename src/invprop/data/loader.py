"""Epoch-seeded batch iteration for both data pipelines.

Every epoch's order and augmentation are a function of one epoch seed, so a resumed run repeats an uninterrupted
one exactly and the per-image pipeline gives the same batches with any number of workers.
"""

from __future__ import annotations

import re
import signal
import time
from typing import Any, Callable, Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler, default_collate

from invprop.data.datasets import IndexedDataset
from invprop.data.image_sequences import TensorImages, Unreadable, to_float
from invprop.data.transforms import Normalize
from invprop.errors import WorkerLost
from invprop.machine import available_cores


def ignore_interrupts_in_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: Ctrl-C reaches the whole process group; only the main process handles it
    (saving a checkpoint), so workers must not die of it mid-epoch."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def collate_readable(items: list[tuple[int, Any, int]]) -> tuple[Tensor, Any, Tensor, list[Unreadable]]:
    """DataLoader ``collate_fn`` of training batches: ``(indices, images, labels)`` of the items that could be read,
    and the :class:`~invprop.data.image_sequences.Unreadable` ones apart (indices empty and images None when no
    item of the batch could be read)."""
    lost = [image for _, image, _ in items if isinstance(image, Unreadable)]
    kept = [item for item in items if not isinstance(item[1], Unreadable)]
    if not kept:
        return torch.empty(0, dtype=torch.long), None, torch.empty(0, dtype=torch.long), lost
    indices, images, labels = default_collate(kept)
    return indices, images, labels, lost


#: How torch reports a DataLoader worker's death: from its SIGCHLD handler, or from its check of the workers.
_WORKER_DEATH = re.compile(
    r"DataLoader worker \(pids?(?:\(s\))? ([\d, ]+)\) (?:is killed by signal: ([^.]+)|exited unexpectedly)"
)


def worker_lost(err: BaseException) -> WorkerLost | None:
    """The one-line :class:`~invprop.errors.WorkerLost` for torch's report of a dead DataLoader worker (None for any
    other error).

    Example:
        >>> str(worker_lost(RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed. ")))[:60]
        'a data-loading worker process (pid 4242) was killed by signa'
    """
    match = _WORKER_DEATH.search(str(err)) if isinstance(err, RuntimeError) else None
    if match is None:
        return None
    how = f"was killed by signal {match.group(2).strip()}" if match.group(2) else "ended unexpectedly"
    return WorkerLost(match.group(1).strip(), how, shared_memory="Bus error" in (match.group(2) or ""))


#: How long a failed read from the workers waits for a dying worker's exit to show.
WORKER_EXIT_WAIT_S = 2.0


def _how_it_ended(exitcode: int) -> str:
    """``was killed by signal SIGKILL`` / ``exited with code 1`` for a process's exit code."""
    if exitcode >= 0:
        return f"exited with code {exitcode}"
    try:
        return f"was killed by signal {signal.Signals(-exitcode).name}"
    except ValueError:  # a real-time signal has no name
        return f"was killed by signal {-exitcode}"


def dead_worker(loader_iterator: object) -> WorkerLost | None:
    """The :class:`~invprop.errors.WorkerLost` of a worker of ``loader_iterator`` (a DataLoader's multi-process
    iterator) that has ended, waiting up to :data:`WORKER_EXIT_WAIT_S` for a dying one; None when all live. A read
    from a worker killed mid-transfer fails with ``ConnectionResetError`` or ``EOFError`` before torch notices."""
    workers = list(getattr(loader_iterator, "_workers", []))
    deadline = time.monotonic() + WORKER_EXIT_WAIT_S
    while workers:
        for worker in workers:
            code = worker.exitcode
            if code is not None:
                return WorkerLost(str(worker.pid), _how_it_ended(code), shared_memory=code == -signal.SIGBUS)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)
    return None


def worker_count(requested: int) -> int:
    """DataLoader workers actually started: ``requested``, capped at the machine's CPU count."""
    return max(0, min(requested, available_cores()))


def epoch_order(n: int, seed: int) -> Tensor:
    """The permutation of ``range(n)`` used by the epoch with ``seed``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


#: ``(n, seed) -> order``: the epoch's sequence of dataset indices (a permutation of ``range(n)`` by default; a
#: method may draw another, e.g. DeepCluster's sampling uniform over clusters).
OrderFn = Callable[[int, int], Tensor]


def cluster_balanced_order(labels: Tensor, seed: int) -> Tensor:
    """N indices drawn uniformly over the non-empty clusters of ``labels`` (N,), as DeepCluster samples its epochs
    (Caron et al., 2018, Sec. 3.3): each cluster contributes ``N // clusters + 1`` images (with replacement when it
    has fewer), the result is shuffled and cut to N.

    Example:
        >>> order = cluster_balanced_order(torch.tensor([0] * 9 + [1]), seed=0)
        >>> int((order == 9).sum())   # the lone image of cluster 1: 6 of the 12 draws, 10 of them kept
        4
    """
    n = labels.shape[0]
    generator = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    # Members of each cluster in a random order: sort by label, ties broken by a random key.
    keys = torch.rand(n, generator=generator, dtype=torch.float64)
    members = torch.argsort(labels.double() + keys.mul_(0.5))
    counts = torch.bincount(labels)
    starts = torch.cumsum(counts, 0) - counts
    clusters = (counts > 0).nonzero().flatten()
    per_cluster = n // clusters.numel() + 1
    slot = torch.arange(per_cluster).unsqueeze(0)  # (1, per) slots of each cluster
    size = counts[clusters].unsqueeze(1)
    drawn = (torch.rand(clusters.numel(), per_cluster, generator=generator) * size).long()
    position = torch.where(size >= per_cluster, slot, drawn)  # without replacement when the cluster is large enough
    picks = members[(starts[clusters].unsqueeze(1) + position).flatten()]
    return picks[torch.randperm(picks.numel(), generator=generator)][:n]


def num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


#: Smallest batch a process trains on: a batch of one image breaks BatchNorm.
MIN_PROCESS_BATCH = 2


def epoch_plan(n: int, batch_size: int, world_size: int = 1) -> list[tuple[int, int]]:
    """The global batches of an epoch: ``(first position in the epoch's order, images per process)`` each.

    A global batch of ``batch_size`` images gives every one of the ``world_size`` processes ``batch_size / W``
    consecutive images of the epoch's order, rank 0 first. A final partial batch of r images gives each process
    ``r // W`` (the last ``r % W`` images of the order sit this epoch out) and is dropped when that is below
    :data:`MIN_PROCESS_BATCH`. The plan -- hence the global batches -- is the same for any W that divides
    ``batch_size``, so a run can resume with another number of processes.
    """
    if batch_size < 1 or world_size < 1 or batch_size % world_size:
        raise ValueError(f"batch_size {batch_size} must be a positive multiple of the number of processes {world_size}")
    per_process = batch_size // world_size
    plan = [(start, per_process) for start in range(0, n - batch_size + 1, batch_size)]
    rest = n - len(plan) * batch_size
    if rest // world_size >= MIN_PROCESS_BATCH:
        plan.append((len(plan) * batch_size, rest // world_size))
    return plan


def rank_positions(start: int, per_process: int, rank: int) -> slice:
    """Positions in the epoch's order of ``rank``'s share of the global batch starting at ``start``."""
    return slice(start + rank * per_process, start + (rank + 1) * per_process)


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields this process's batches of ``(seed, index)`` keys, for :class:`invprop.data.IndexedDataset`.

    The order is the epoch's permutation (:func:`epoch_order`), cut as :func:`epoch_plan` says: a reproducible
    distributed sampler whose global batches do not depend on the number of processes. Call :meth:`set_epoch_seed`
    before each epoch; it works with persistent DataLoader workers, because the sampler runs in the main process and
    the seed travels with every key.

    Args:
        n: dataset size.
        batch_size: the global batch size.
        world_size: number of processes W.
        rank: this process.
    """

    def __init__(
        self, n: int, batch_size: int, world_size: int = 1, rank: int = 0, order: OrderFn = epoch_order
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.order = order
        self.plan = epoch_plan(n, batch_size, world_size)
        self.n = n
        self.rank = rank
        self.seed = 0
        self.first_step = 0

    def set_epoch_seed(self, seed: int) -> None:
        self.seed = seed
        self.first_step = 0

    def set_start(self, step: int) -> None:
        """Begin the next pass at batch ``step`` of the epoch (to continue an interrupted epoch)."""
        self.first_step = step

    def __len__(self) -> int:
        return len(self.plan) - self.first_step

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = self.order(self.n, self.seed).tolist()
        for start, per_process in self.plan[self.first_step :]:
            yield [(self.seed, index) for index in order[rank_positions(start, per_process, self.rank)]]


class TensorBatches:
    """This process's batches of ``(indices, images in [0, 1])`` from a :class:`TensorImages` on the training device.

    The images are moved to ``device`` once (uint8: 150 MB for CIFAR-10); each batch is gathered and converted to
    float there, ready for a :class:`invprop.data.batch_transforms.BatchAugment`. Batches follow :func:`epoch_plan`.

    Args:
        images: the training images.
        batch_size: the global batch size.
        device: where batches are produced.
        world_size: number of processes W.
        rank: this process.
        order: the epoch's order of indices (default: a permutation).
    """

    def __init__(
        self, images: TensorImages, batch_size: int, device: torch.device, world_size: int = 1, rank: int = 0,
        order: OrderFn = epoch_order,
    ) -> None:  # fmt: skip
        self.order = order
        self.images = images.images.to(device)
        self.plan = epoch_plan(self.images.shape[0], batch_size, world_size)
        self.rank = rank
        self.device = device

    def __len__(self) -> int:
        return len(self.plan)

    def epoch(self, seed: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The batches of the epoch with ``seed``."""
        order = self.order(self.images.shape[0], seed).to(self.device)
        for start, per_process in self.plan:
            indices = order[rank_positions(start, per_process, self.rank)]
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
