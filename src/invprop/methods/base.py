"""What a training method is: an encoder plus an objective, with hooks the engine calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
from torch import Tensor, nn

from invprop.config import Config
from invprop.distributed.partition import RowPartition
from invprop.models import Encoder
from invprop.registry import Registry


@dataclass
class StepOutput:
    """One training step's loss (differentiable) and its logged terms (floats or 0-d tensors)."""

    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)


class Method(nn.Module):
    """Base class: ``encoder`` maps images to embeddings; subclasses define the objective and its state.

    Subclasses run the encoder through :meth:`encode`, so that the engine can route training forwards through a
    wrapper (DistributedDataParallel) without the wrapper becoming part of the method's state dict.
    """

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder
        self._encoder_wrapper: nn.Module | None = None

    def set_encoder_wrapper(self, wrapper: nn.Module | None) -> None:
        """Run training forwards through ``wrapper`` (e.g. ``DistributedDataParallel(self.encoder)``)."""
        object.__setattr__(self, "_encoder_wrapper", wrapper)  # not registered: no duplicate parameters

    def encode(self, images: Tensor) -> Tensor:
        """Embeddings of a training batch (through the wrapper, if one is set)."""
        wrapper = self._encoder_wrapper
        return wrapper(images) if wrapper is not None else self.encoder(images)

    def training_step(self, indices: Tensor, images: Tensor, epoch: int) -> StepOutput:
        """Loss for one batch at ``epoch`` (counting from 1)."""
        raise NotImplementedError

    def set_diagnostic_labels(self, labels: Tensor | None) -> None:
        """Give the method the training labels for logged diagnostics only (default: ignored)."""

    #: Augmented views per image in a training batch (the engine stacks them view-major: (views x B, C, H, W)).
    views: int = 1

    @torch.no_grad()
    def before_training(self, batches: Iterable[tuple[Tensor, Tensor]]) -> None:
        """Called once before epoch 1 of a new run with this process's ``(indices, images)`` of one epoch, one view
        (default: nothing)."""

    @torch.no_grad()
    def on_epoch_start(self, epoch: int) -> None:
        """Per-epoch preparation before the epoch's first step (not called when resuming in the middle of it)."""

    def sharded_parameters(self) -> list[tuple[nn.Parameter, RowPartition]]:
        """Parameters split by rows over processes, with their partitions (their optimiser state is gathered into
        checkpoints; default none)."""
        return []

    @torch.no_grad()
    def after_step(self) -> None:
        """Update non-gradient state (banks, graphs) after the optimiser step."""

    @torch.no_grad()
    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        """Per-epoch upkeep; returns metrics to record with the epoch (default none)."""
        return {}


#: Method builders: ``(cfg, encoder, num_samples, distributed) -> Method``. ``distributed`` is True inside a
#: torch.distributed run of several processes (the default process group is initialised).
METHODS: Registry[Callable[[Config, Encoder, int, bool], Method]] = Registry("method")
