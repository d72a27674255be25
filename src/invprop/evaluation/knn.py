"""``invprop eval knn``: weighted kNN of a checkpoint's encoder on a labelled dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from invprop.config import from_dict
from invprop.data import build_datasets
from invprop.engine import CHECKPOINT_NAME, METRICS_NAME, load_checkpoint, resolve_device
from invprop.engine.monitor import knn_monitor
from invprop.errors import DataError
from invprop.models import build_encoder

ENCODER_PREFIX = "encoder."


def evaluate_knn(checkpoint: Path, dataset: str | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """kNN top-1/top-5 (head and backbone features) of the encoder in ``checkpoint``.

    Results are appended to the run's ``metrics.json`` under ``eval`` when the checkpoint sits in a run directory.
    """
    path = checkpoint / CHECKPOINT_NAME if checkpoint.is_dir() else checkpoint
    state = load_checkpoint(path)
    cfg = from_dict(overrides or {}, base=from_dict(state["config"]))
    name = dataset or cfg.data.name
    splits = build_datasets(
        name,
        cfg.data.root,
        None if dataset else cfg.data.augment,
        None if dataset else cfg.data.image_size,
        pipeline="auto" if dataset else cfg.data.pipeline,
        cache_dir=cfg.data.cache_dir,
    )
    if not splits.labelled:
        raise DataError(f"dataset {name!r} has no labelled held-out split; kNN evaluation needs one")
    device = resolve_device(cfg.device)
    encoder = build_encoder(cfg.model.backbone, cfg.model.head, cfg.model.embedding_dim, cfg.model.hidden_dim, splits.in_channels)
    weights = {k[len(ENCODER_PREFIX) :]: v for k, v in state["model"].items() if k.startswith(ENCODER_PREFIX)}
    try:
        encoder.load_state_dict(weights)
    except RuntimeError:
        raise DataError(f"the encoder in {path} does not fit dataset {name!r} (different image channels?)") from None
    encoder.to(device)
    assert splits.memory is not None and splits.test is not None
    results: dict[str, Any] = {"checkpoint": str(path), "dataset": name, "epoch": int(state["epoch"]), "knn_k": cfg.eval.knn_k}
    results.update(
        knn_monitor(encoder, splits.memory, splits.test, splits.num_classes, device, cfg.eval.knn_k, cfg.eval.knn_sigma, cfg.data.num_workers)
    )
    metrics_path = path.parent / METRICS_NAME
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        metrics.setdefault("eval", []).append({"protocol": "knn", **results})
        metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    return results
