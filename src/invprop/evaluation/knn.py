"""``invprop eval knn``: weighted kNN of an encoder on a labelled dataset (head and backbone features)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from invprop.engine.monitor import knn_monitor
from invprop.evaluation.loading import load_eval_context, record_result


def evaluate_knn(
    checkpoint: Path | None, dataset: str | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """kNN top-1/top-5 (head and backbone features) of the encoder in ``checkpoint`` (None: untrained).

    Results are appended to the run's ``metrics.json`` under ``eval`` when the checkpoint sits in a run directory.
    """
    ctx = load_eval_context(checkpoint, dataset, overrides)
    cfg, splits = ctx.cfg, ctx.splits
    assert splits.memory is not None and splits.test is not None
    results: dict[str, Any] = {**ctx.describe(), "knn_k": cfg.eval.knn_k, "knn_sigma": cfg.eval.knn_sigma}
    results.update(
        knn_monitor(
            ctx.encoder,
            splits.memory,
            splits.test,
            splits.num_classes,
            ctx.device,
            cfg.eval.knn_k,
            cfg.eval.knn_sigma,
            cfg.data.num_workers,
        )
    )
    record_result(ctx, "knn", results)
    return results
