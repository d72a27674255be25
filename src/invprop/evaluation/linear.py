"""``invprop eval linear``: logistic regression on frozen, non-augmented backbone features.

Features are extracted once. The weight decay is chosen from :data:`WEIGHT_DECAYS` on a validation split carved
from the TRAINING set (stratified, seeded); the probe is then refitted on the whole training set with that value
and scored once on the test split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from invprop.core.knn_classifier import topk_accuracy
from invprop.engine.monitor import extract
from invprop.evaluation.linear_probe import fit_linear_probe, stratified_split
from invprop.evaluation.loading import load_eval_context, record_result

#: Fraction of every class of the training split held out to choose the weight decay.
VALIDATION_FRACTION = 0.1
#: Weight decays tried on the validation split.
WEIGHT_DECAYS = (0.0, 1e-5, 1e-4, 1e-3, 1e-2)
#: Seed of the validation split.
VALIDATION_SEED = 0


def linear_protocol(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    num_classes: int,
    weight_decays: Sequence[float] = WEIGHT_DECAYS,
    seed: int = VALIDATION_SEED,
    with_predictions: bool = False,
) -> dict[str, Any]:
    """The protocol on given features: sweep on a validation split of the training set, refit, test once.

    Returns:
        ``linear_top1``, ``linear_top5`` (test), ``linear_weight_decay`` (chosen) and ``linear_val_top1`` per decay;
        with ``with_predictions``, also ``predictions``, the (N_test,) classes the probe gives the test features.
    """
    fit_idx, val_idx = stratified_split(train_y, VALIDATION_FRACTION, torch.Generator().manual_seed(seed))
    sweep: dict[str, float] = {}
    for decay in weight_decays:
        probe = fit_linear_probe(train_x[fit_idx], train_y[fit_idx], num_classes, decay)
        sweep[str(decay)] = topk_accuracy(probe.logits(train_x[val_idx]), train_y[val_idx], (1,))[1]
    best = max(weight_decays, key=lambda d: (sweep[str(d)], d))  # ties: the stronger regularisation
    probe = fit_linear_probe(train_x, train_y, num_classes, best)
    logits = probe.logits(test_x)
    acc = topk_accuracy(logits, test_y, (1, 5))
    result = {"linear_top1": acc[1], "linear_top5": acc[5], "linear_weight_decay": best, "linear_val_top1": sweep}
    return {**result, "predictions": logits.argmax(dim=1)} if with_predictions else result


def evaluate_linear(
    checkpoint: Path | None, dataset: str | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The linear protocol on the backbone of ``checkpoint`` (None: an untrained encoder)."""
    ctx = load_eval_context(checkpoint, dataset, overrides)
    splits = ctx.splits
    assert splits.memory is not None and splits.test is not None
    train = extract(ctx.encoder, splits.memory, ctx.device, ctx.cfg.data.num_workers)
    test = extract(ctx.encoder, splits.test, ctx.device, ctx.cfg.data.num_workers)
    results = {
        **ctx.describe(),
        **linear_protocol(train.features, train.labels, test.features, test.labels, splits.num_classes),
    }
    record_result(ctx, "linear", results)
    return results
