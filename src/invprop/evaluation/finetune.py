"""``invprop eval semi`` and ``invprop eval transfer``: fine-tuning the whole network with few (or all) labels.

``semi`` fine-tunes with 1% and 10% of the training labels -- class-balanced subsets drawn with a fixed seed, their
indices saved next to the checkpoint -- and reports top-1/top-5 on the test split, beside a supervised-from-scratch
baseline trained on the same subset with the same budget, so the gain from pretraining is visible.
``transfer`` evaluates a checkpoint on another dataset: the linear probe plus fine-tuning with all of its labels.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from invprop.config import Config
from invprop.data import DataSplits, IndexedDataset
from invprop.data.datasets import take_subset
from invprop.data.image_sequences import to_float
from invprop.data.loader import epoch_order, eval_batches, num_batches
from invprop.engine.monitor import EXTRACT_BATCH, extract
from invprop.errors import DataError
from invprop.evaluation.classifier import (
    EPOCH_SEED_STRIDE,
    FINETUNE_MOMENTUM,
    FINETUNE_WEIGHT_DECAY,
    Classifier,
    held_out_accuracy,
)
from invprop.evaluation.linear import linear_protocol
from invprop.evaluation.linear_probe import fit_linear_probe
from invprop.evaluation.loading import EvalContext, load_eval_context, record_result, recording_into
from invprop.evaluation.s4l import s4l_classifier
from invprop.files import write_text_atomically
from invprop.models import Encoder, encoder_from, from_head_layer

#: Label fractions of the semi-supervised protocol.
SEMI_FRACTIONS = (0.01, 0.10)
#: Seed of the labelled subsets (fixed, so every checkpoint is compared on the same images).
SUBSET_SEED = 0
SUBSETS_NAME = "semi-subsets.json"
#: Weight decay of the linear probe that initialises the fine-tuned classifier.
PROBE_WEIGHT_DECAY = 1e-3


def balanced_subset(labels: Tensor, fraction: float, seed: int = SUBSET_SEED) -> Tensor:
    """Sorted positions of a class-balanced subset: ``round(N * fraction / C)`` images of every class (at least one,
    at most the class size), drawn with ``seed``."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    classes = labels.unique(sorted=True)
    per_class = max(1, round(labels.numel() * fraction / classes.numel()))
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for cls in classes:
        members = (labels == cls).nonzero().squeeze(1)
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values


@torch.no_grad()
def recalibrate_batchnorm(
    encoder: Encoder, dataset: IndexedDataset, device: torch.device, num_workers: int = 0
) -> None:
    """Set every BatchNorm's running statistics to the exact averages over ``dataset`` (train-mode forward passes).

    Afterwards eval-mode features match what the network sees while fine-tuning, which the probe initialisation
    needs (a freshly initialised network's running statistics are placeholders).
    """
    norms = [m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: the exact mean over batches
    was_training = encoder.training
    encoder.train()
    for images, _ in eval_batches(dataset, EXTRACT_BATCH, device, num_workers):
        if images.shape[0] > 1:
            encoder.backbone(images)
    encoder.train(was_training)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum


def train_batches(
    splits: DataSplits, positions: Tensor, batch_size: int, seed: int, device: torch.device
) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of augmented ``(images, labels)`` batches over the training ``positions``."""
    order = positions[epoch_order(positions.numel(), seed)]
    steps = num_batches(
        order.numel(), batch_size, drop_last=order.numel() % batch_size == 1
    )  # no batch of one (BatchNorm)
    if splits.train_images is not None and splits.batch_augment is not None:
        images, labels = splits.train_images.images, splits.train_images.labels
        augment = splits.batch_augment.to(device)
        generator = torch.Generator(device=device).manual_seed(seed)
        for b in range(steps):
            rows = order[b * batch_size : (b + 1) * batch_size]
            yield augment(to_float(images[rows].to(device)), generator), labels[rows].to(device)
        return
    dataset = splits.train
    for b in range(steps):
        chosen = order[b * batch_size : (b + 1) * batch_size].tolist()
        items = [dataset.augmented(seed, r) for r in chosen]
        yield torch.stack([x for x, _ in items]).to(device), torch.tensor([y for _, y in items], device=device)


def finetuned_classifier(
    encoder: Encoder, splits: DataSplits, positions: Tensor, cfg: Config, device: torch.device, seed: int = SUBSET_SEED
) -> Classifier:
    """``encoder``'s backbone plus a linear layer fine-tuned on the training ``positions`` (in eval mode).

    The linear layer starts from a linear probe fitted on the subset's frozen features (LP-FT, Kumar et al. 2022),
    so fine-tuning starts from a sensible classifier instead of distorting the features to fit a random one. The
    same recipe is used for the from-scratch baseline.
    """
    assert splits.train_plain is not None
    model = Classifier(encoder, splits.num_classes).to(device)
    subset = IndexedDataset(take_subset(splits.train_plain.source, positions.tolist()), splits.train_plain.transform)
    recalibrate_batchnorm(encoder, subset, device, cfg.data.num_workers)
    frozen = extract(encoder, subset, device, cfg.data.num_workers)
    probe = fit_linear_probe(frozen.features, frozen.labels, splits.num_classes, PROBE_WEIGHT_DECAY)
    with torch.no_grad():  # fold the probe's standardisation into the layer
        model.fc.weight.copy_(probe.weight / probe.std)
        model.fc.bias.copy_(probe.bias - (probe.weight * (probe.mean / probe.std)).sum(dim=1))
    train_by_finetune_recipe(
        model,
        splits,
        positions,
        cfg,
        device,
        seed,
        lambda images, labels: nn.functional.cross_entropy(model(images), labels),
    )
    return model


def train_by_finetune_recipe(
    model: nn.Module,
    splits: DataSplits,
    positions: Tensor,
    cfg: Config,
    device: torch.device,
    seed: int,
    loss_of: Callable[[Tensor, Tensor], Tensor],
) -> nn.Module:
    """Train ``model`` on augmented batches of the training ``positions`` by the fine-tuning recipe (SGD with
    momentum, ``eval.finetune_lr`` on a cosine, ``eval.finetune_epochs``, ``eval.finetune_batch_size``), each step
    minimising ``loss_of(images, labels)``; returned in eval mode."""
    optimizer = torch.optim.SGD(
        model.parameters(), lr=cfg.eval.finetune_lr, momentum=FINETUNE_MOMENTUM, weight_decay=FINETUNE_WEIGHT_DECAY
    )
    epochs = cfg.eval.finetune_epochs
    batch_size = max(2, min(cfg.eval.finetune_batch_size, positions.numel()))
    total = epochs * max(1, positions.numel() // batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    torch.manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        for images, labels in train_batches(splits, positions, batch_size, seed * EPOCH_SEED_STRIDE + epoch, device):
            loss = loss_of(images, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler.last_epoch < total:
                scheduler.step()
    return model.eval()


def finetune(
    encoder: Encoder, splits: DataSplits, positions: Tensor, cfg: Config, device: torch.device, seed: int = SUBSET_SEED
) -> dict[str, float]:
    """Fine-tune ``encoder`` on the training ``positions`` (:func:`finetuned_classifier`); test top-1/top-5."""
    return held_out_accuracy(finetuned_classifier(encoder, splits, positions, cfg, device, seed), splits, cfg, device)


def fresh_encoder(ctx: EvalContext, seed: int) -> Encoder:
    """A randomly initialised encoder of ``ctx``'s architecture (cut at ``eval.from_head_layer`` as its is)."""
    torch.manual_seed(seed)
    cfg = ctx.cfg
    encoder = encoder_from(cfg.model, ctx.splits.in_channels, ctx.image_size, (ctx.splits.mean, ctx.splits.std))
    return from_head_layer(encoder, cfg.eval.from_head_layer).to(ctx.device)


def pretrained_copy(ctx: EvalContext) -> Encoder:
    """A copy of ``ctx``'s encoder to fine-tune (the context's own stays as loaded)."""
    return copy.deepcopy(ctx.encoder)


def training_labels(splits: DataSplits) -> Tensor:
    labels = splits.train.labels
    if bool((labels < 0).any()):
        raise DataError("fine-tuning needs every training image labelled; this dataset's training split is not")
    return labels


def evaluate_semi(
    checkpoint: Path | None,
    dataset: str | None = None,
    overrides: dict[str, Any] | None = None,
    fractions: Sequence[float] = SEMI_FRACTIONS,
) -> dict[str, Any]:
    """The semi-supervised protocol (module docstring); results and subset indices saved beside the checkpoint."""
    ctx = load_eval_context(checkpoint, dataset, overrides)
    task = ctx.cfg.eval.s4l
    labels = training_labels(ctx.splits)
    results: dict[str, Any] = {**ctx.describe(), "finetune_epochs": ctx.cfg.eval.finetune_epochs}
    subsets: dict[str, list[int]] = {}
    for fraction in fractions:
        key = f"semi_{round(fraction * 100):g}pct"
        positions = balanced_subset(labels, fraction)
        subsets[key] = positions.tolist()
        pretrained = finetune(pretrained_copy(ctx), ctx.splits, positions, ctx.cfg, ctx.device)
        scratch = finetune(fresh_encoder(ctx, ctx.cfg.seed), ctx.splits, positions, ctx.cfg, ctx.device)
        results.update({
            f"{key}_images": int(positions.numel()),
            f"{key}_top1": pretrained["top1"], f"{key}_top5": pretrained["top5"],
            f"{key}_scratch_top1": scratch["top1"], f"{key}_scratch_top5": scratch["top5"],
        })  # fmt: skip
        if task is not None:
            model = s4l_classifier(fresh_encoder(ctx, ctx.cfg.seed), ctx.splits, positions, task, ctx.cfg, ctx.device,
                                   ctx.cfg.seed)  # fmt: skip
            s4l = held_out_accuracy(model, ctx.splits, ctx.cfg, ctx.device)
            results.update({f"{key}_s4l_{task}_top1": s4l["top1"], f"{key}_s4l_{task}_top5": s4l["top5"]})
    if ctx.checkpoint is not None:
        path = ctx.checkpoint.parent / SUBSETS_NAME
        with recording_into(ctx.checkpoint.parent, "semi") as free:
            if free:
                write_text_atomically(
                    path, json.dumps({"seed": SUBSET_SEED, "dataset": ctx.dataset, "subsets": subsets}) + "\n"
                )
                results["subsets_file"] = str(path)
    record_result(ctx, "semi", results)
    return results


def evaluate_transfer(
    checkpoint: Path | None, dataset: str | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Linear probe and full fine-tuning (all labels) of ``checkpoint`` on ``dataset``, beside training from scratch."""
    if dataset is None:
        raise DataError("transfer needs --dataset, the dataset to transfer to")
    ctx = load_eval_context(checkpoint, dataset, overrides)
    labels = training_labels(ctx.splits)
    assert ctx.splits.memory is not None and ctx.splits.test is not None
    train = extract(ctx.encoder, ctx.splits.memory, ctx.device, ctx.cfg.data.num_workers)
    test = extract(ctx.encoder, ctx.splits.test, ctx.device, ctx.cfg.data.num_workers)
    results: dict[str, Any] = {**ctx.describe(), "finetune_epochs": ctx.cfg.eval.finetune_epochs}
    results.update(linear_protocol(train.features, train.labels, test.features, test.labels, ctx.splits.num_classes))
    everything = torch.arange(labels.numel())
    pretrained = finetune(pretrained_copy(ctx), ctx.splits, everything, ctx.cfg, ctx.device)
    scratch = finetune(fresh_encoder(ctx, ctx.cfg.seed), ctx.splits, everything, ctx.cfg, ctx.device)
    results.update({"finetune_top1": pretrained["top1"], "finetune_top5": pretrained["top5"],
                    "scratch_top1": scratch["top1"], "scratch_top5": scratch["top5"]})  # fmt: skip
    record_result(ctx, "transfer", results)
    return results


__all__ = [
    "SEMI_FRACTIONS",
    "balanced_subset",
    "evaluate_semi",
    "evaluate_transfer",
    "finetune",
    "finetuned_classifier",
    "fresh_encoder",
    "pretrained_copy",
    "train_batches",
    "train_by_finetune_recipe",
    "training_labels",
]
