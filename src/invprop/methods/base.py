"""What a training method is: an encoder plus an objective, with hooks the engine calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn

from invprop.config import Config
from invprop.models import Encoder
from invprop.registry import Registry


@dataclass
class StepOutput:
    """One training step's loss (differentiable) and its logged terms (floats or 0-d tensors)."""

    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)


class Method(nn.Module):
    """Base class: ``encoder`` maps images to embeddings; subclasses define the objective and its state."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def training_step(self, indices: Tensor, images: Tensor, epoch: int) -> StepOutput:
        """Loss for one batch at ``epoch`` (counting from 1)."""
        raise NotImplementedError

    def set_diagnostic_labels(self, labels: Tensor | None) -> None:
        """Give the method the training labels for logged diagnostics only (default: ignored)."""

    @torch.no_grad()
    def after_step(self) -> None:
        """Update non-gradient state (banks, graphs) after the optimiser step."""

    @torch.no_grad()
    def on_epoch_end(self, epoch: int) -> None:
        """Per-epoch upkeep."""


METHODS: Registry[Callable[[Config, Encoder, int], Method]] = Registry("method")
