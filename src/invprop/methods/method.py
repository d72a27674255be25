"""What a training method is: an encoder plus an objective and its state, with the narrow contract a training loop
drives -- :meth:`Method.training_step` on a :class:`Batch`, the optimiser step, then :meth:`Method.after_step` with
the step's outputs -- and what it is given once, at construction (:class:`BuildContext`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from invprop.data.loader import epoch_order
from invprop.distributed.collectives import all_reduce_sum, world_size
from invprop.distributed.partition import RowPartition
from invprop.models.encoder import EncodedMaps, EncodedTokens
from invprop.models.vit_tokens import MaskedPatches


@dataclass(frozen=True, eq=False)
class Batch:
    """One training batch.

    Attributes:
        indices: (B,) int64, each image's row in the training set ``[0, N)``.
        groups: the views of the batch grouped by image size, each group view-major: ``(V_g x B, C, H_g, W_g)``,
            rows ``[v B, (v + 1) B)`` holding view ``v`` of the group. The first group holds the full-size views (one
            for InvP, two for the two-view methods); a second one holds multi-crop's small crops.
        epoch: the epoch, counting from 1 (schedules inside methods read it, e.g. InvP's ramp-up).
        step: the optimiser step this batch trains towards, counting from 0 over the run (schedules inside methods
            read it, e.g. BYOL's and MoCo's momentum).
    """

    indices: Tensor
    groups: tuple[Tensor, ...]
    epoch: int = 1
    step: int = 0

    @classmethod
    def of(cls, indices: Tensor, *views: Tensor, epoch: int = 1, step: int = 0) -> "Batch":
        """A batch from its views, each (B, C, H, W) (views of equal size are stacked into one group).

        Example:
            >>> batch = Batch.of(torch.arange(4), torch.zeros(4, 1, 8, 8), torch.ones(4, 1, 8, 8))
            >>> batch.images.shape, len(batch.views)
            (torch.Size([8, 1, 8, 8]), 2)
        """
        groups: list[list[Tensor]] = []
        for view in views:
            if groups and groups[-1][0].shape[1:] == view.shape[1:]:
                groups[-1].append(view)
            else:
                groups.append([view])
        return cls(indices, tuple(torch.cat(group) for group in groups), epoch, step)

    @property
    def size(self) -> int:
        """B, the images of the batch."""
        return int(self.indices.shape[0])

    @property
    def images(self) -> Tensor:
        """The full-size views, stacked view-major: (V x B, C, H, W)."""
        return self.groups[0]

    @property
    def views(self) -> list[Tensor]:
        """Every view, (B, C, H, W) each: the full-size views first, then the small crops."""
        return [view for group in self.groups for view in group.split(self.size)]


@dataclass
class StepOutput:
    """One training step's result.

    Attributes:
        loss: the loss to backpropagate (0-d).
        terms: values to log (0-d tensors, on the training device, or floats); the engine averages them over the
            epoch and knows none of them by name.
        update: what :meth:`Method.after_step` must apply once the optimiser has stepped (bank rows, keys to
            enqueue, ...); None when nothing.
    """

    loss: Tensor
    terms: dict[str, Tensor | float] = field(default_factory=dict)
    update: Any = None


@dataclass(frozen=True, eq=False)
class BuildContext:
    """What a method is given at construction, beyond its own settings.

    Attributes:
        num_samples: N, training images (bank rows, classes).
        embedding_dim: D, the width of the encoder's embeddings.
        distributed: True inside a torch.distributed run (the default process group is initialised).
        in_channels: channels of the training images.
        mean, std: the per-channel normalisation of the training batches (empty when unknown).
        total_steps: the optimiser steps the run plans, for schedules inside the method (BYOL's momentum); None when
            not known (a method that needs it says so at construction).
        labels: (N,) labels of the training images (-1 unknown), for logged diagnostics only, never the loss.
        features: ``features(encoder) -> (N, D)``: the embeddings through ``encoder`` (the method's encoder or a
            copy, e.g. a momentum encoder) of every training image, not augmented, in eval mode and index order, for
            methods that cluster the dataset.
        forward: the module that runs the encoder's training forwards (e.g. ``DistributedDataParallel(encoder)``);
            None: the encoder itself.
        seed: the run's seed, for draws a method makes as a function of (seed, step, image) rather than from a
            generator's state (DeeperCluster's rotations).
        image_size: the side of the training views (the reconstruction methods' decoders are built for it); None
            when not known (a method that needs it says so at construction).
    """

    num_samples: int
    embedding_dim: int
    distributed: bool = False
    in_channels: int = 3
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    total_steps: int | None = None
    labels: Tensor | None = None
    features: Callable[[nn.Module], Tensor] | None = None
    forward: nn.Module | None = None
    seed: int = 0
    image_size: int | None = None


class Method(nn.Module):
    """Base class: ``encoder`` (any ``nn.Module`` mapping images to (B, D) embeddings) plus an objective and its
    state (in buffers, so that it is saved and resumed with the weights).

    A training loop calls, per optimiser step, :meth:`training_step` once (or several times, accumulating
    gradients), :meth:`before_optimizer_step`, the optimiser, then :meth:`after_step` with every output since the
    last step -- a method with further optimisers (:class:`~invprop.methods.Part`): for each optimiser of the stage
    in order, its loss (:meth:`part_step`, or :meth:`training_step` for the main one), its backward pass and its
    step, then :meth:`after_step` with all their outputs; :meth:`before_training` once before epoch 1,
    :meth:`on_epoch_start` and :meth:`on_epoch_end` around epochs (:meth:`on_stage` at each epoch's start).
    Everything the method needs from the loop comes in the :class:`BuildContext` at construction.
    """

    #: Full-size augmented views per image in a training batch.
    views: int = 1
    _forward: nn.Module | None

    def __init__(self, encoder: nn.Module, context: BuildContext) -> None:
        super().__init__()
        self.encoder = encoder
        self.distributed = context.distributed
        object.__setattr__(self, "_forward", context.forward)  # not registered: no duplicate parameters

    def encode(self, images: Tensor) -> Tensor:
        """Embeddings of training images, through the context's ``forward`` (e.g. the data-parallel wrapper)."""
        forward = self._forward
        return forward(images) if forward is not None else self.encoder(images)

    def encode_maps(self, images: Tensor, stages: int = 1) -> EncodedMaps:
        """Embeddings of training images with the backbone's last ``stages`` feature maps (:class:`EncodedMaps`),
        through the same ``forward`` as :meth:`encode`."""
        forward = self._forward if self._forward is not None else self.encoder
        return forward(images, maps=stages)

    def encode_tokens(self, images: Tensor, masked: MaskedPatches = MaskedPatches()) -> EncodedTokens:
        """Embeddings of training images and of each of their patch tokens, the patches ``masked`` says hidden
        (:class:`EncodedTokens`; a ViT backbone), through the same ``forward`` as :meth:`encode`."""
        forward = self._forward if self._forward is not None else self.encoder
        return forward(images, tokens=masked)

    def training_step(self, batch: Batch) -> StepOutput:
        """The loss of one batch, its logged terms, and the update to apply after the optimiser step. Terms: the
        same keys at every step and on every process of a run (a value undefined on a batch is NaN)."""
        raise NotImplementedError

    def views_of(self, batch: Batch) -> Tensor:
        """The batch's full-size views, stacked view-major ((views x B, C, H, W)); a one-line error when the batch
        does not carry this method's number of views (e.g. one view given to a two-view method)."""
        images = batch.images
        if images.shape[0] != self.views * batch.size:
            raise ValueError(f"{type(self).__name__} takes {self.views} view(s) of each of the batch's {batch.size} "
                             f"images (stacked view-major), got {images.shape[0]} rows: Batch.of(indices, "
                             f"{', '.join(f'view{i + 1}' for i in range(self.views))})")  # fmt: skip
        return images

    def before_optimizer_step(self) -> None:
        """Between the backward pass and the optimiser step: averages the gradients of :meth:`shared_modules` over
        processes when ``distributed`` (the encoder's are averaged by its data-parallel wrapper)."""
        if not self.distributed:
            return
        grads = [p.grad for m in self.shared_modules() for p in m.parameters() if p.grad is not None]
        if grads:
            flat = torch.cat([g.reshape(-1) for g in grads])
            flat = all_reduce_sum(flat.detach()) / world_size()
            for g, part in zip(grads, torch.split(flat, [g.numel() for g in grads]), strict=True):
                g.copy_(part.view_as(g))

    @torch.no_grad()
    def after_step(self, outputs: Sequence[StepOutput]) -> None:
        """After the optimiser step: apply the ``update`` of each output since the last step, in order, and the
        once-per-step upkeep (momentum encoders, step counters). Default: nothing."""

    def part_modules(self, name: str) -> list[nn.Module]:
        """The modules whose parameters the optimiser of part ``name`` owns (a :class:`~invprop.methods.Part` of the
        method's spec); the main optimiser owns every other parameter."""
        raise NotImplementedError(f"{type(self).__name__} has no part {name!r}")

    def part_step(self, name: str, batch: Batch) -> StepOutput:
        """The loss of part ``name`` on ``batch``, whose gradients that part's optimiser alone applies (the main
        optimiser's loss is :meth:`training_step`'s). Parts are stepped in the order of the run's stage, each after
        the previous one's optimiser step."""
        raise NotImplementedError(f"{type(self).__name__} has no part {name!r}")

    def on_stage(self, stage: str) -> None:
        """At the start of every epoch of a method with stages (:class:`~invprop.methods.Stage`), after the loop set
        training mode, and on resuming inside one: what the stage ``stage`` needs, e.g. a frozen network put in
        evaluation mode (default: nothing)."""

    @torch.no_grad()
    def before_training(self, batches: Iterable[tuple[Tensor, Tensor]]) -> None:
        """Called once before epoch 1 of a new run with this process's ``(indices, images)`` of one epoch, one view
        (default: nothing)."""

    @torch.no_grad()
    def on_epoch_start(self, epoch: int) -> dict[str, float]:
        """Per-epoch preparation before the epoch's first step (not called when resuming in the middle of it);
        returns metrics to record with the epoch (default none)."""
        return {}

    @torch.no_grad()
    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        """Per-epoch upkeep; returns metrics to record with the epoch (default none)."""
        return {}

    def epoch_order(self, n: int, seed: int) -> Tensor:
        """The indices of the ``n`` training images an epoch with ``seed`` visits, in order (default: a permutation);
        called when the epoch's batches start, after :meth:`on_epoch_start`."""
        return epoch_order(n, seed)

    def reinitialised_parameters(self) -> list[nn.Parameter]:
        """Parameters that :meth:`on_epoch_start` re-initialises; the loop clears their optimiser state after it
        (default none)."""
        return []

    def sharded_parameters(self) -> list[tuple[nn.Parameter, RowPartition]]:
        """Parameters split by rows over processes, with their partitions (their optimiser state is gathered into
        checkpoints; default none)."""
        return []

    def shared_modules(self) -> list[nn.Module]:
        """Trained modules outside the encoder (predictors, classifiers, prototypes): in a distributed run their
        gradients are averaged over processes by :meth:`before_optimizer_step` (default none)."""
        return []


__all__ = ["Batch", "BuildContext", "Method", "StepOutput"]
