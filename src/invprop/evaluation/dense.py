"""``invprop eval dense``: a dense task that fits a CPU -- a linear probe at every location of the frozen backbone's
last feature map, on mosaic segmentation made from the labelled data.

Each mosaic is four images of the split, drawn at random, set 2 x 2 into one image of twice the side; every
location of the backbone's map over it is labelled with the class of the image whose quadrant holds the location's
centre. One linear classifier, shared by all locations (a 1x1 convolution), is fitted on the training mosaics'
locations by the linear protocol (its weight decay chosen on locations held out of the training mosaics) and scored
on mosaics of held-out images: ``dense_top1``, the share of locations classified right, and ``dense_miou``, the
mean over classes of the intersection over union. Locations near the seams see two images: a representation that
keeps *where* things are (DenseCL's aim, Wang et al., 2021) should label them better than one pooled for the whole
image.

Not here: a real segmentation benchmark (VOC, COCO, Cityscapes); they need GPU-sized networks and images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from invprop.data import IndexedDataset
from invprop.evaluation.linear import linear_protocol
from invprop.evaluation.loading import load_eval_context, record_result
from invprop.models.feature_maps import feature_maps

#: Mosaics per side (2 x 2 images each) and the seeds of the mosaics drawn from the training and held-out splits.
MOSAIC_GRID = 2
TRAIN_SEED, TEST_SEED = 0, 1
#: Mosaics through the backbone at a time.
MOSAIC_BATCH = 64


def quadrant_mosaics(images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Set each run of four images 2 x 2 into one: image 4m + 2r + c at row r, column c of mosaic m.

    Args:
        images: (4M, C, H, W).
        labels: (4M,).

    Returns:
        ``(mosaics, quadrant_labels)``: (M, C, 2H, 2W) and (M, 2, 2).

    Example:
        >>> mosaics, quadrants = quadrant_mosaics(torch.arange(4.0).view(4, 1, 1, 1), torch.tensor([5, 6, 7, 8]))
        >>> mosaics[0, 0].tolist(), quadrants[0].tolist()
        ([[0.0, 1.0], [2.0, 3.0]], [[5, 6], [7, 8]])
    """
    n, c, h, w = images.shape
    m, g = n // MOSAIC_GRID**2, MOSAIC_GRID
    tiles = images[: m * g * g].reshape(m, g, g, c, h, w).permute(0, 3, 1, 4, 2, 5)
    return tiles.reshape(m, c, g * h, g * w), labels[: m * g * g].reshape(m, g, g)


def location_labels(quadrant_labels: Tensor, height: int, width: int) -> Tensor:
    """The label of each location of an ``height x width`` map over mosaics: the quadrant holding the location's
    centre ((i + 1/2) / height of the way down, (j + 1/2) / width across).

    Args:
        quadrant_labels: (M, 2, 2).

    Returns:
        (M, height, width).

    Example:
        >>> location_labels(torch.tensor([[[1, 2], [3, 4]]]), 3, 2)[0].tolist()
        [[1, 2], [3, 4], [3, 4]]
    """
    rows = ((torch.arange(height) + 0.5) * MOSAIC_GRID / height).long()
    cols = ((torch.arange(width) + 0.5) * MOSAIC_GRID / width).long()
    return quadrant_labels[:, rows][:, :, cols]


def mean_iou(predicted: Tensor, truth: Tensor, num_classes: int) -> float:
    """The mean over classes present in ``truth`` or ``predicted`` of |P n T| / |P u T|.

    Example:
        >>> round(mean_iou(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1]), 2), 4)  # (1/2 + 2/3) / 2
        0.5833
    """
    scores = []
    for k in range(num_classes):
        p, t = predicted == k, truth == k
        union = int((p | t).sum())
        if union:
            scores.append(int((p & t).sum()) / union)
    return sum(scores) / len(scores)


def _mosaics_of(dataset: IndexedDataset, count: int, seed: int) -> tuple[Tensor, Tensor]:
    """``count`` mosaics of images of ``dataset`` drawn without replacement (as many as the split allows)."""
    drawn = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    drawn = drawn[: min(count, len(dataset) // MOSAIC_GRID**2) * MOSAIC_GRID**2]
    items = [dataset[int(i)] for i in drawn]
    images = torch.stack([image for _, image, _ in items])
    return quadrant_mosaics(images, torch.tensor([label for _, _, label in items]))


def _location_rows(backbone: torch.nn.Module, mosaics: Tensor, device: torch.device) -> tuple[Tensor, int, int]:
    """Every location of the backbone's last map over ``mosaics`` as rows ((M x h x w, C), location-major within
    each mosaic), with the map's h and w."""
    rows = []
    with torch.no_grad():
        for start in range(0, mosaics.shape[0], MOSAIC_BATCH):
            found = feature_maps(backbone, mosaics[start : start + MOSAIC_BATCH].to(device)).last.float().cpu()
            rows.append(found)
    maps = torch.cat(rows)
    h, w = maps.shape[2:]
    return maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1]), int(h), int(w)


def evaluate_dense(
    checkpoint: Path | None, dataset: str | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The dense protocol (module docstring) on the backbone of ``checkpoint`` (None: an untrained encoder)."""
    ctx = load_eval_context(checkpoint, dataset, overrides)
    splits, cfg = ctx.splits, ctx.cfg
    assert splits.memory is not None and splits.test is not None
    backbone = ctx.encoder.backbone
    train_mosaics, train_quadrants = _mosaics_of(splits.memory, cfg.eval.dense_mosaics, TRAIN_SEED)
    test_mosaics, test_quadrants = _mosaics_of(splits.test, cfg.eval.dense_mosaics, TEST_SEED)
    train_x, h, w = _location_rows(backbone, train_mosaics, ctx.device)
    test_x, _, _ = _location_rows(backbone, test_mosaics, ctx.device)
    train_y = location_labels(train_quadrants, h, w).reshape(-1)
    test_y = location_labels(test_quadrants, h, w).reshape(-1)
    probe = linear_protocol(train_x, train_y, test_x, test_y, splits.num_classes, with_predictions=True)
    results = {
        **ctx.describe(),
        "dense_mosaics": int(train_mosaics.shape[0]),
        "dense_test_mosaics": int(test_mosaics.shape[0]),
        "dense_map": [h, w],
        "dense_top1": probe["linear_top1"],
        "dense_miou": mean_iou(probe["predictions"], test_y, splits.num_classes),
        "dense_weight_decay": probe["linear_weight_decay"],
    }
    record_result(ctx, "dense", results)
    return results


__all__ = ["evaluate_dense", "location_labels", "mean_iou", "quadrant_mosaics"]
