"""S4L, self-supervised semi-supervised learning (Zhai, Oliver, Kolesnikov & Beyer, ICCV 2019): ``invprop eval semi
--s4l rotation|exemplar``.

A network of the checkpoint's architecture is trained from scratch on ``L_l + w L_u`` (Zhai et al., 2019, Eq. 1):
the cross-entropy of the labelled subset's classes plus a self-supervised loss on every training image -- the
labelled ones among them, as the authors' configurations apply it to both:
- ``rotation`` (S4L-Rotation): each image in its four quarter turns, a linear head on the features predicting the
  turn (:func:`invprop.data.pretext.rotated_batch`, cross-entropy);
- ``exemplar`` (S4L-Exemplar): ``eval.s4l_views`` augmented views of each image, a linear head to 1,000 dimensions,
  and the batch-hard triplet loss with a soft margin on the L2-normalised embeddings
  (:func:`invprop.core.margin_losses.batch_hard_triplet_loss`).

It sits beside ``eval semi``'s fine-tuned checkpoint and its supervised-from-scratch baseline: the same labelled
subsets, the same optimiser, learning rate, batch and epochs (``eval.finetune_*``), with an epoch over all training
images (the labelled subset cycled alongside). The paper's own schedule (ImageNet, 200 epochs with warm-up and
decays) is not applied; the weight is the authors' (``eval.s4l_weight``, 1).
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from invprop.config import Config
from invprop.core.margin_losses import batch_hard_triplet_loss
from invprop.data import DataSplits
from invprop.data.image_sequences import to_float
from invprop.data.loader import epoch_order
from invprop.data.pretext import ROTATIONS, rotated_batch
from invprop.evaluation.classifier import EPOCH_SEED_STRIDE, FINETUNE_MOMENTUM, FINETUNE_WEIGHT_DECAY, Classifier
from invprop.models import Encoder

#: S4L-Exemplar's embedding width (the authors' config/s4l_exemplar.sh, triplet_embed_dim).
EXEMPLAR_EMBEDDING = 1000
#: Offsets the seeds of the labelled stream from the unlabelled one's.
LABELLED_SEED_OFFSET = 7919


def augmented_views(splits: DataSplits, rows: Tensor, views: int, seed: int, device: torch.device) -> Tensor:
    """``views`` augmented views of the training images ``rows`` (B,), view-major: (views x B, C, H, W); the draws
    are a function of ``seed``."""
    if splits.train_images is not None and splits.batch_augment is not None:
        images = to_float(splits.train_images.images[rows].to(device))
        augment = splits.batch_augment.to(device)
        generator = torch.Generator(device=device).manual_seed(seed)
        return torch.cat([augment(images, generator) for _ in range(views)])
    dataset = splits.train
    return torch.stack(
        [dataset.augmented(seed * views + v, int(r))[0] for v in range(views) for r in rows.tolist()]
    ).to(device)


class S4LTask(nn.Module):
    """A self-supervised head on the classifier's features and its loss on a batch of unlabelled images."""

    views: int = 1

    def loss(self, model: Classifier, images: Tensor) -> Tensor:
        raise NotImplementedError


class RotationTask(S4LTask):
    """S4L-Rotation: predict each image's quarter turn from its features."""

    def __init__(self, feature_dim: int) -> None:
        super().__init__()
        self.head = nn.Linear(feature_dim, ROTATIONS)

    def loss(self, model: Classifier, images: Tensor) -> Tensor:
        rotated, turns = rotated_batch(images)
        return nn.functional.cross_entropy(self.head(model.backbone(rotated)).float(), turns)


class ExemplarTask(S4LTask):
    """S4L-Exemplar: the views of one image close, those of other images far (batch-hard, soft margin)."""

    def __init__(self, feature_dim: int, views: int) -> None:
        super().__init__()
        self.head = nn.Linear(feature_dim, EXEMPLAR_EMBEDDING)
        self.views = views

    def loss(self, model: Classifier, images: Tensor) -> Tensor:
        per_view = images.shape[0] // self.views
        groups = torch.arange(per_view, device=images.device).repeat(self.views)
        return batch_hard_triplet_loss(self.head(model.backbone(images)), groups)


#: ``eval.s4l``: the self-supervised task, built from (feature width, eval.s4l_views).
S4L_TASKS: dict[str, Callable[[int, int], S4LTask]] = {
    "rotation": lambda width, views: RotationTask(width),
    "exemplar": lambda width, views: ExemplarTask(width, views),
}


def _rows(count: int, batch_size: int, seed: int) -> Iterator[Tensor]:
    """Batches of positions in ``[0, count)`` (at most ``count`` each), epoch after epoch, each epoch in a new
    order."""
    size = min(batch_size, count)
    epoch = 0
    while True:
        order = epoch_order(count, seed * EPOCH_SEED_STRIDE + epoch)
        for start in range(0, count - size + 1, size):
            yield order[start : start + size]
        epoch += 1


def s4l_classifier(
    encoder: Encoder,
    splits: DataSplits,
    positions: Tensor,
    task: str,
    cfg: Config,
    device: torch.device,
    seed: int,
) -> Classifier:
    """``encoder`` (randomly initialised) with a linear classifier trained on ``L_l + w L_u`` (module docstring);
    returned in eval mode."""
    model = Classifier(encoder, splits.num_classes).to(device)
    ssl = S4L_TASKS[task](encoder.feature_dim, cfg.eval.s4l_views).to(device)
    labels = splits.train.labels
    parameters = [*model.parameters(), *ssl.parameters()]
    optimizer = torch.optim.SGD(
        parameters, lr=cfg.eval.finetune_lr, momentum=FINETUNE_MOMENTUM, weight_decay=FINETUNE_WEIGHT_DECAY
    )
    total_images = len(splits.train)
    batch_size = max(2, min(cfg.eval.finetune_batch_size, total_images))
    labelled_batch = max(2, min(cfg.eval.finetune_batch_size, positions.numel()))
    steps = cfg.eval.finetune_epochs * max(1, total_images // batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    unlabelled = _rows(total_images, batch_size, seed)
    labelled = _rows(positions.numel(), labelled_batch, seed + LABELLED_SEED_OFFSET)
    torch.manual_seed(seed)
    model.train()
    ssl.train()
    for step in range(steps):
        rows = positions[next(labelled)]
        x = augmented_views(splits, rows, 1, (seed + LABELLED_SEED_OFFSET) * steps + step, device)
        supervised = nn.functional.cross_entropy(model(x).float(), labels[rows].to(device))
        images = augmented_views(splits, next(unlabelled), ssl.views, seed * steps + step, device)
        loss = supervised + cfg.eval.s4l_weight * ssl.loss(model, images)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return model.eval()


__all__ = ["EXEMPLAR_EMBEDDING", "S4L_TASKS", "augmented_views", "s4l_classifier"]
