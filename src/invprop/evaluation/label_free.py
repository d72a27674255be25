"""Label-free scores of an encoder on held-out images: what ``compare`` ranks by when the images have no labels.

On a fixed sample of the held-out split (``eval.label_free_images``), in eval mode, for the head embeddings and for
the backbone features (suffix ``_backbone``): RankMe, the cluster learnability, the TwoNN intrinsic dimension and
the uniformity; on ``eval.lidar_images`` images with ``eval.lidar_views`` augmented views each (the training
augmentation): LiDAR and the alignment of two views. The formulas are in :mod:`invprop.core.label_free`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor

from invprop.config import Config
from invprop.core.label_free import alignment, cluster_learnability, lidar, rankme, twonn_dimension, uniformity
from invprop.data import DataSplits, IndexedDataset
from invprop.data.datasets import take_subset
from invprop.data.image_sequences import TensorImages, to_float
from invprop.engine.monitor import extract
from invprop.errors import DataError
from invprop.evaluation.loading import load_eval_context, record_result
from invprop.models import Encoder

#: Images per forward pass of the augmented views.
VIEW_BATCH = 256
#: Offsets the seed of the criteria's draws (the sample, the views, k-means) from the run's.
CRITERIA_SEED_OFFSET = 104_729
#: Suffix of the scores of the backbone features.
BACKBONE = "_backbone"


def held_out(splits: DataSplits) -> IndexedDataset | None:
    """The images the criteria are computed on: the held-out split (None when the data has none)."""
    return splits.test if splits.test is not None else splits.holdout


def sample(dataset: IndexedDataset, count: int, generator: torch.Generator) -> IndexedDataset:
    """A fixed random sample of ``count`` images of ``dataset`` (all of them when it has fewer), same transform."""
    if count >= len(dataset):
        return dataset
    chosen = torch.randperm(len(dataset), generator=generator)[:count].sort().values
    return IndexedDataset(take_subset(dataset.source, chosen.tolist()), dataset.transform)


def _view_batches(
    splits: DataSplits, images: IndexedDataset, views: int, seed: int, device: torch.device
) -> Iterator[Tensor]:
    """(views, b, C, H, W) augmented views of successive batches of ``images``, by the training augmentation: the
    batch augmentation on tensor images, else the per-image transform under a seed per (view, image)."""
    source = images.source
    if splits.batch_augment is not None and isinstance(source, TensorImages):
        augment = splits.batch_augment.to(device)
        generator = torch.Generator(device=device).manual_seed(seed)
        for start in range(0, len(source), VIEW_BATCH):
            batch = to_float(source.images[start : start + VIEW_BATCH].to(device))
            yield torch.stack([augment(batch, generator) for _ in range(views)])
        return
    augmented = IndexedDataset(source, splits.train.transform)  # the held-out images, augmented as in training
    for start in range(0, len(images), VIEW_BATCH):
        stop = min(start + VIEW_BATCH, len(images))
        yield torch.stack([
            torch.stack([augmented.augmented(seed + view, index)[0] for index in range(start, stop)])
            for view in range(views)
        ]).to(device)  # fmt: skip


@torch.no_grad()
def _view_embeddings(
    encoder: Encoder, splits: DataSplits, images: IndexedDataset, views: int, seed: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """(n, q, D) head embeddings and (n, q, F) backbone features of ``views`` augmented views of each image (eval
    mode, as :func:`~invprop.engine.monitor.extract`)."""
    was_training = encoder.training
    encoder.eval()
    heads, features = [], []
    for batch in _view_batches(splits, images, views, seed, device):
        q, b = batch.shape[:2]
        feats = encoder.features(batch.flatten(0, 1))
        heads.append(encoder.head(feats).float().reshape(q, b, -1).transpose(0, 1).cpu())
        features.append(feats.float().reshape(q, b, -1).transpose(0, 1).cpu())
    encoder.train(was_training)
    return torch.cat(heads), torch.cat(features)


def default_clusters(images: int) -> int:
    """The cluster learnability's k-means clusters for ``images`` images: their square root, at least 2."""
    return max(2, round(math.sqrt(images)))


def scores_of(embeddings: Tensor, views: Tensor, clusters: int, generator: torch.Generator) -> dict[str, float]:
    """Every criterion of one space: RankMe, cluster learnability (``cl``), intrinsic dimension (``id``) and
    uniformity of ``embeddings`` (N, D); LiDAR and the alignment of the first two of ``views`` (n, q, D)."""
    return {
        "rankme": rankme(embeddings).item(),
        "cl": cluster_learnability(embeddings, clusters, generator).item(),
        "id": twonn_dimension(embeddings).item(),
        "uniformity": uniformity(embeddings).item(),
        "lidar": lidar(views).item(),
        "alignment": alignment(views[:, 0], views[:, 1]).item(),
    }


def label_free_scores(encoder: Encoder, splits: DataSplits, cfg: Config, device: torch.device) -> dict[str, float]:
    """The label-free criteria of ``encoder`` on ``splits``' held-out images (empty when there are none): the head
    embeddings' under their names, the backbone features' with the suffix ``_backbone``."""
    images = held_out(splits)
    if images is None or len(images) < 2:
        return {}
    e = cfg.eval
    seed = cfg.seed + CRITERIA_SEED_OFFSET
    generator = torch.Generator().manual_seed(seed)
    plain = sample(images, e.label_free_images, generator)
    for_views = sample(images, e.lidar_images, generator)
    extracted = extract(encoder, plain, device, cfg.data.num_workers)
    view_heads, view_features = _view_embeddings(encoder, splits, for_views, e.lidar_views, seed, device)
    clusters = max(1, min(e.cl_clusters or default_clusters(len(plain)), len(plain) // 2))
    head = scores_of(extracted.embeddings, view_heads, clusters, torch.Generator().manual_seed(seed))
    back = scores_of(extracted.features, view_features, clusters, torch.Generator().manual_seed(seed))
    return {**head, **{f"{key}{BACKBONE}": value for key, value in back.items()}}


def evaluate_label_free(
    checkpoint: Path | None, dataset: str | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``invprop eval label-free``: the label-free criteria of the encoder in ``checkpoint`` (None: untrained) on the
    held-out images, recorded in the run's ``metrics.json``; no labels are needed."""
    ctx = load_eval_context(checkpoint, dataset, overrides, require_labels=False)
    scores = label_free_scores(ctx.encoder, ctx.splits, ctx.cfg, ctx.device)
    if not scores:
        raise DataError(
            f"dataset {ctx.dataset!r} has no held-out images to compute the label-free criteria on "
            "(an image folder keeps data.holdout of its images out of training for them)"
        )
    results = {**ctx.describe(), **scores}
    record_result(ctx, "label-free", results)
    return results


__all__ = [
    "BACKBONE",
    "default_clusters",
    "evaluate_label_free",
    "held_out",
    "label_free_scores",
    "sample",
    "scores_of",
]
