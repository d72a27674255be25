"""What the fine-tuning protocols train and score: a backbone with a linear classification layer, its optimiser's
fixed values, and its accuracy on the test split."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from invprop.config import Config
from invprop.core.knn_classifier import topk_accuracy
from invprop.data import DataSplits
from invprop.data.loader import eval_batches
from invprop.engine.monitor import EXTRACT_BATCH
from invprop.models import Encoder

FINETUNE_MOMENTUM = 0.9
FINETUNE_WEIGHT_DECAY = 5e-4
#: An epoch's seed is ``seed * EPOCH_SEED_STRIDE + epoch`` (a prime: the epochs of different seeds do not meet).
EPOCH_SEED_STRIDE = 1_000_003


class Classifier(nn.Module):
    """A backbone with a linear classification layer on its features."""

    def __init__(self, encoder: Encoder, num_classes: int) -> None:
        super().__init__()
        self.backbone = encoder.backbone
        self.fc = nn.Linear(encoder.feature_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.backbone(x))


@torch.no_grad()
def held_out_accuracy(model: nn.Module, splits: DataSplits, cfg: Config, device: torch.device) -> dict[str, float]:
    """Top-1 and top-5 of a classifier (images -> logits) on the test split."""
    assert splits.test is not None
    logits, targets = [], []
    for images, labels in eval_batches(splits.test, EXTRACT_BATCH, device, cfg.data.num_workers):
        logits.append(model(images).float().cpu())
        targets.append(labels)
    acc = topk_accuracy(torch.cat(logits), torch.cat(targets), (1, 5))
    return {"top1": acc[1], "top5": acc[5]}


__all__ = ["EPOCH_SEED_STRIDE", "FINETUNE_MOMENTUM", "FINETUNE_WEIGHT_DECAY", "Classifier", "held_out_accuracy"]
