"""``invprop eval distill``: SimCLRv2's third stage (Chen et al., 2020b, Sec. 2.3) -- the network fine-tuned on a few
labels teaches a student, on every training image and none of their labels, to predict its soft labels.

For each label fraction of the semi-supervised protocol (1% and 10%, the same class-balanced subsets as ``eval
semi``): the teacher is the checkpoint fine-tuned on the subset (``eval semi``'s recipe, from
``eval.from_head_layer``), and the student a randomly initialised network of the same architecture (the paper's
self-distillation) trained from scratch with the soft-label loss
(:func:`invprop.core.distillation_losses.soft_label_distillation_loss`, ``eval.distill_temperature``) on augmented
views of all training images, by the fine-tuning recipe (``eval.finetune_*``). The teacher sees the same augmented
view as the student. Reported: the teacher's and the student's test top-1/top-5.

Not here: the paper's optional mix of the distillation loss with the labelled images' cross-entropy, and
distillation into a smaller student (the student is the teacher's architecture).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from invprop.config import Config
from invprop.core.distillation_losses import soft_label_distillation_loss
from invprop.data import DataSplits
from invprop.evaluation.classifier import Classifier, held_out_accuracy
from invprop.evaluation.finetune import (
    SEMI_FRACTIONS,
    SUBSET_SEED,
    balanced_subset,
    finetuned_classifier,
    fresh_encoder,
    pretrained_copy,
    train_by_finetune_recipe,
    training_labels,
)
from invprop.evaluation.loading import load_eval_context, record_result

#: Offsets the student's seed from the run's (its initialisation and batch order differ from the teacher's).
STUDENT_SEED_OFFSET = 1


def distilled_student(
    teacher: nn.Module, student: Classifier, splits: DataSplits, cfg: Config, device: torch.device, seed: int
) -> Classifier:
    """``student`` trained on every training image's augmented views to match ``teacher``'s soft labels (the
    labels are drawn by the batches but never read); returned in eval mode."""
    teacher.eval()

    def soft_label_loss(images: Tensor, _: Tensor) -> Tensor:
        with torch.no_grad():
            soft = teacher(images)
        return soft_label_distillation_loss(student(images), soft, cfg.eval.distill_temperature)

    everything = torch.arange(len(splits.train))
    train_by_finetune_recipe(student, splits, everything, cfg, device, seed, soft_label_loss)
    return student


def evaluate_distill(
    checkpoint: Path | None,
    dataset: str | None = None,
    overrides: dict[str, Any] | None = None,
    fractions: Sequence[float] = SEMI_FRACTIONS,
) -> dict[str, Any]:
    """The distillation protocol (module docstring); results recorded in the run's ``metrics.json``."""
    ctx = load_eval_context(checkpoint, dataset, overrides)
    labels = training_labels(ctx.splits)
    cfg = ctx.cfg
    results: dict[str, Any] = {
        **ctx.describe(),
        "finetune_epochs": cfg.eval.finetune_epochs,
        "distill_temperature": cfg.eval.distill_temperature,
    }
    for fraction in fractions:
        key = f"distill_{round(fraction * 100):g}pct"
        positions = balanced_subset(labels, fraction, SUBSET_SEED)
        teacher = finetuned_classifier(pretrained_copy(ctx), ctx.splits, positions, cfg, ctx.device)
        taught = held_out_accuracy(teacher, ctx.splits, cfg, ctx.device)
        seed = cfg.seed + STUDENT_SEED_OFFSET
        student = Classifier(fresh_encoder(ctx, seed), ctx.splits.num_classes).to(ctx.device)
        student = distilled_student(teacher, student, ctx.splits, cfg, ctx.device, seed)
        learnt = held_out_accuracy(student, ctx.splits, cfg, ctx.device)
        results.update({
            f"{key}_images": int(positions.numel()),
            f"{key}_teacher_top1": taught["top1"], f"{key}_teacher_top5": taught["top5"],
            f"{key}_student_top1": learnt["top1"], f"{key}_student_top5": learnt["top5"],
        })  # fmt: skip
    record_result(ctx, "distill", results)
    return results


__all__ = ["STUDENT_SEED_OFFSET", "distilled_student", "evaluate_distill"]
