"""A few labels, when the user has them: ``invprop compare --labels FILE.csv`` fills the kNN and linear columns
from those images alone.

The file has one ``path,label`` row per labelled image (a first row ``path,label`` is a header); a path is relative
to the image folder (or absolute), a label any text (the class's name). Since the images are few, every measure
is cross-validated: stratified folds, each scored by a kNN and a linear probe fitted on the other folds, and the
accuracies averaged over the images.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from invprop.config import Config, data_for
from invprop.core import knn_class_scores, topk_accuracy
from invprop.data import DataSplits, IndexedDataset
from invprop.data.bands import folder_reads_bands
from invprop.data.dicom import FILE_WINDOW
from invprop.data.image_sequences import ImageFiles
from invprop.engine import resolve_device
from invprop.engine.monitor import extract
from invprop.errors import DataError
from invprop.evaluation.linear import linear_protocol
from invprop.evaluation.loading import load_eval_context
from invprop.models import Encoder, encoder_from

#: Most folds of the cross-validation (fewer when the rarest class has fewer images).
MAX_FOLDS = 5
#: Seed of the folds (fixed: every method is scored on the same folds).
FOLDS_SEED = 0
#: Header words of a labels file.
HEADER = ("path", "label")


@dataclass(frozen=True)
class Labels:
    """The labelled images of a labels file.

    Attributes:
        files: the images (resolved paths), with their class indices.
        source: the labels file.
    """

    files: ImageFiles
    source: Path

    @property
    def key(self) -> str:
        """What the scores depend on: the images and their labels (a changed file is scored again)."""
        digest = hashlib.sha256()
        for image, label in zip(self.files.files, self.files.targets):
            digest.update(f"{image.resolve()}|{label}\n".encode())
        return digest.hexdigest()[:16]

    @property
    def folds(self) -> int:
        """The cross-validation's folds: :data:`MAX_FOLDS`, or the rarest class's images."""
        counts = torch.bincount(torch.tensor(self.files.targets))
        return int(min(MAX_FOLDS, counts[counts > 0].min().item()))


def read_labels(path: Path, folder: Path, window: str = FILE_WINDOW) -> Labels:
    """The labels file ``path`` for the images of ``folder`` (read as the run reads them: DICOM files windowed by
    ``window``, band arrays as arrays); a one-line error for a missing file or image, a bad row, or too few labels to
    cross-validate (two classes with two images each at least)."""
    if not path.is_file():
        raise DataError(f"--labels {path}: no such file; give a CSV of path,label rows")
    with path.open(newline="") as handle:
        rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    if rows and tuple(cell.strip().lower() for cell in rows[0]) == HEADER:
        rows = rows[1:]
    files, names = [], []
    for number, row in enumerate(rows, start=1):
        if len(row) != 2 or not row[1].strip():
            raise DataError(f"--labels {path}, row {number}: expected path,label, got {','.join(row)!r}")
        image = Path(row[0].strip()).expanduser()
        image = image if image.is_absolute() else folder / image
        if not image.is_file():
            raise DataError(f"--labels {path}, row {number}: no image {image}; paths are relative to {folder}")
        files.append(image)
        names.append(row[1].strip())
    classes = sorted(set(names))
    labels = [classes.index(name) for name in names]
    counts = [labels.count(c) for c in range(len(classes))]
    if len(classes) < 2 or min(counts) < 2:
        raise DataError(
            f"--labels {path}: {len(files)} images in {len(classes)} classes; label at least two images of each of "
            "at least two classes to cross-validate"
        )
    return Labels(ImageFiles(files, labels, classes, window, bands=folder_reads_bands(files)), path)


def stratified_folds(labels: Tensor, folds: int, generator: torch.Generator) -> list[Tensor]:
    """``folds`` disjoint sets of positions covering ``labels``, each class dealt round-robin after a shuffle."""
    parts: list[list[int]] = [[] for _ in range(folds)]
    for cls in labels.unique(sorted=True):
        members = (labels == cls).nonzero().squeeze(1)
        for i, position in enumerate(members[torch.randperm(members.numel(), generator=generator)].tolist()):
            parts[i % folds].append(position)
    return [torch.tensor(sorted(part), dtype=torch.long) for part in parts]


def cross_validated(
    x: Tensor, y: Tensor, classes: int, folds: list[Tensor], knn_k: int, knn_sigma: float, linear: bool = True
) -> dict[str, float]:
    """Weighted-kNN top-1 (``knn``) and, with ``linear``, the linear protocol's top-1 (``linear``) of features ``x``
    (N, D) with labels ``y``, each fold predicted from the others, averaged over the N images."""
    knn_hits = linear_hits = 0.0
    for held in folds:
        fit = torch.tensor(sorted(set(range(len(y))) - set(held.tolist())), dtype=torch.long)
        scores = knn_class_scores(x[fit], y[fit], x[held], classes, k=min(knn_k, len(fit)), sigma=knn_sigma)
        knn_hits += topk_accuracy(scores, y[held], (1,))[1] * len(held)
        if linear:
            linear_hits += linear_protocol(x[fit], y[fit], x[held], y[held], classes)["linear_top1"] * len(held)
    return {"knn": knn_hits / len(y), **({"linear": linear_hits / len(y)} if linear else {})}


def few_label_scores(
    encoder: Encoder, splits: DataSplits, labels: Labels, cfg: Config, device: torch.device
) -> dict[str, Any]:
    """kNN top-1 of the head embeddings and of the backbone features, and the linear probe's top-1 on the backbone,
    each cross-validated over the labelled images alone."""
    if splits.plain_transform is None:
        raise DataError("--labels needs an image folder (its images are read from their files)")
    dataset = IndexedDataset(labels.files, splits.plain_transform)
    extracted = extract(encoder, dataset, device, cfg.data.num_workers)
    y = extracted.labels
    classes = len(labels.files.classes)
    folds = stratified_folds(y, labels.folds, torch.Generator().manual_seed(FOLDS_SEED))
    k, sigma = cfg.eval.knn_k, cfg.eval.knn_sigma
    head = cross_validated(extracted.embeddings, y, classes, folds, k, sigma, linear=False)
    back = cross_validated(extracted.features, y, classes, folds, k, sigma)
    return {
        "knn_top1": head["knn"],
        "knn_backbone_top1": back["knn"],
        "linear_top1": back["linear"],
        "labelled_images": len(y),
        "folds": len(folds),
    }


@torch.no_grad()
def few_label_entry(run_dir: Path, cfg: Config, labels: Labels) -> dict[str, Any]:
    """The ``compare.json`` entry of ``labels`` for the run in ``run_dir``: the trained encoder's scores and the
    untrained encoder's (same architecture and seed: the floors), with the labels' key."""
    ctx = load_eval_context(run_dir, require_labels=False)
    trained = few_label_scores(ctx.encoder, ctx.splits, labels, ctx.cfg, ctx.device)
    splits = data_for(cfg)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    fresh = encoder_from(cfg.model, splits.in_channels, splits.image_size, (splits.mean, splits.std)).to(device).eval()
    untrained = few_label_scores(fresh, splits, labels, cfg, device)
    return {"key": labels.key, "file": str(labels.source), "trained": trained, "untrained": untrained}


__all__ = [
    "Labels",
    "MAX_FOLDS",
    "cross_validated",
    "few_label_entry",
    "few_label_scores",
    "read_labels",
    "stratified_folds",
]
