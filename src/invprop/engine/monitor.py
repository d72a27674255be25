"""The per-epoch monitor: weighted kNN on the held-out split from FRESH features of non-augmented training images,
and the effective rank (RankMe) of the held-out embeddings, labelled or not.

The authors' monitor scores against the bank (EMA rows of augmented views); this one re-extracts features in eval
mode, so it measures the encoder actually being trained.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from invprop.core import knn_class_scores, topk_accuracy
from invprop.core.label_free import COLLAPSED_RANK, rankme
from invprop.data import IndexedDataset
from invprop.data.loader import eval_batches
from invprop.models import Encoder

logger = logging.getLogger(__name__)

#: Images per forward pass when extracting features.
EXTRACT_BATCH = 512
#: The raw-pixel baseline is skipped for images with more values than this (e.g. 224x224 ImageNet crops).
RAW_BASELINE_MAX_VALUES = 64 * 64 * 3


@dataclass
class Extracted:
    embeddings: Tensor
    features: Tensor
    labels: Tensor


@torch.no_grad()
def extract(
    encoder: Encoder, dataset: IndexedDataset, device: torch.device, num_workers: int = 0, keep_on_device: bool = False
) -> Extracted:
    """Head embeddings and backbone features of every image of ``dataset`` (eval mode), on the CPU (or left on
    ``device`` with ``keep_on_device``)."""
    store = device if keep_on_device else torch.device("cpu")
    was_training = encoder.training
    encoder.eval()
    embeddings, features, labels = [], [], []
    for images, batch_labels in eval_batches(dataset, EXTRACT_BATCH, device, num_workers):
        feats = encoder.features(images)
        embeddings.append(encoder.head(feats).float().to(store))
        features.append(feats.float().to(store))
        labels.append(batch_labels)
    encoder.train(was_training)
    return Extracted(torch.cat(embeddings), torch.cat(features), torch.cat(labels))


def knn_scores(
    train: Tensor, train_labels: Tensor, test: Tensor, test_labels: Tensor, num_classes: int, k: int, sigma: float
) -> dict[int, float]:
    scores = knn_class_scores(train, train_labels, test, num_classes, k=k, sigma=sigma)
    return topk_accuracy(scores, test_labels, (1, 5))


def rank_scores(held: Extracted) -> dict[str, float]:
    """RankMe of the held-out head embeddings (``rankme``) and backbone features (``rankme_backbone``): a collapsing
    representation shows as a rank falling towards 1, with or without labels."""
    return {"rankme": float(rankme(held.embeddings)), "rankme_backbone": float(rankme(held.features))}


def rank_monitor(
    encoder: Encoder, held_out: IndexedDataset, device: torch.device, num_workers: int = 0
) -> dict[str, float]:
    """:func:`rank_scores` of ``held_out`` (the monitor of unlabelled data)."""
    return rank_scores(extract(encoder, held_out, device, num_workers, keep_on_device=True))


def collapse_warning(record: Mapping[str, Any]) -> str | None:
    """The warning for an epoch's record whose head RankMe fell below :data:`COLLAPSED_RANK`, else None."""
    rank = record.get("rankme")
    if rank is None or rank >= COLLAPSED_RANK:
        return None
    return (
        f"epoch {record.get('epoch', '?')}: the held-out embeddings have collapsed (RankMe {rank:.2f}, below "
        f"{COLLAPSED_RANK:g}: nearly one direction) -- lower optim.lr, keep the method's own recipe "
        "(optim.recipe), or stop this run"
    )


def warn_if_collapsed(record: Mapping[str, Any]) -> None:
    """Log :func:`collapse_warning` of ``record``, if any."""
    warning = collapse_warning(record)
    if warning is not None:
        logger.warning("%s", warning)


def knn_monitor(
    encoder: Encoder,
    memory: IndexedDataset,
    test: IndexedDataset,
    num_classes: int,
    device: torch.device,
    k: int,
    sigma: float,
    num_workers: int = 0,
    probe: Callable[[Tensor, Tensor], float] | None = None,
) -> dict[str, float]:
    """kNN top-1/top-5 on the head embedding (``knn_*``) and on the backbone features (``knn_backbone_*``), scored
    on ``device``, with the :func:`rank_scores` of the held-out split; with ``probe`` (held-out backbone features and
    labels -> top-1), its score as ``online_probe_top1``."""
    ref = extract(encoder, memory, device, num_workers, keep_on_device=True)
    held = extract(encoder, test, device, num_workers, keep_on_device=True)
    head = knn_scores(ref.embeddings, ref.labels, held.embeddings, held.labels, num_classes, k, sigma)
    back = knn_scores(ref.features, ref.labels, held.features, held.labels, num_classes, k, sigma)
    knn = {"knn_top1": head[1], "knn_top5": head[5], "knn_backbone_top1": back[1], "knn_backbone_top5": back[5]}
    probed = {"online_probe_top1": probe(held.features, held.labels)} if probe is not None else {}
    return {**knn, **probed, **rank_scores(held)}


@torch.no_grad()
def raw_pixel_baseline(
    memory: IndexedDataset,
    test: IndexedDataset,
    num_classes: int,
    k: int,
    sigma: float,
    num_workers: int = 0,
    device: torch.device | None = None,
) -> dict[str, float] | None:
    """The same kNN on the (normalised) input pixels, scored on ``device`` (default CPU); None for images too large
    to compare pixel-wise."""
    device = device if device is not None else torch.device("cpu")
    _, first, _ = memory[0]
    if first.numel() > RAW_BASELINE_MAX_VALUES:
        return None

    def pixels(dataset: IndexedDataset) -> tuple[Tensor, Tensor]:
        batches = eval_batches(dataset, EXTRACT_BATCH, device, num_workers)
        xs, ys = zip(*[(x.flatten(1).float(), y) for x, y in batches])
        return torch.cat(xs), torch.cat(ys)

    train_x, train_y = pixels(memory)
    test_x, test_y = pixels(test)
    acc = knn_scores(train_x, train_y, test_x, test_y, num_classes, k, sigma)
    return {"baseline_raw_knn_top1": acc[1], "baseline_raw_knn_top5": acc[5]}
