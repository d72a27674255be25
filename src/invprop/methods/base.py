"""What a training method is: an encoder plus an objective, with hooks the engine calls; and how a method is
registered -- its settings sections, its builder, its defaults -- in :data:`METHODS`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import Tensor, nn

from invprop.data.loader import epoch_order
from invprop.distributed.collectives import all_reduce_sum, world_size
from invprop.distributed.partition import RowPartition
from invprop.errors import ConfigError
from invprop.registry import Registry
from invprop.settings import Reference, check, merge


@dataclass
class StepOutput:
    """One training step's loss (differentiable) and its logged terms (floats or 0-d tensors)."""

    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)


class Method(nn.Module):
    """Base class: ``encoder`` (any ``nn.Module`` mapping images to (B, D) embeddings) plus an objective and its
    state.

    A training loop calls, per step, :meth:`training_step` (the loss to backpropagate), the optimiser, then
    :meth:`after_step` (state that is not trained by gradients, e.g. a memory bank and its graph, in the order the
    method needs); and :meth:`before_training`, :meth:`on_epoch_start` and :meth:`on_epoch_end` around epochs.
    Subclasses run the encoder through :meth:`encode`, so that the engine can route training forwards through a
    wrapper (DistributedDataParallel) without the wrapper becoming part of the method's state dict.
    """

    def __init__(self, encoder: nn.Module, distributed: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.distributed = distributed
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

    def multi_crop_step(self, indices: Tensor, crops: list[Tensor], epoch: int) -> StepOutput:
        """Loss for a multi-crop batch ``[large (views x B, C, H, W), small (count x B, C, s, s)]`` (methods whose
        spec sets ``multi_crop``)."""
        raise NotImplementedError(f"{type(self).__name__} does not take multi-crop batches")

    def epoch_order(self, n: int, seed: int) -> Tensor:
        """The indices of the ``n`` training images an epoch with ``seed`` visits, in order (default: a permutation);
        called when the epoch's batches start, after :meth:`on_epoch_start`."""
        return epoch_order(n, seed)

    def set_feature_source(self, source: Callable[[nn.Module], Tensor]) -> None:
        """Give the method ``source(encoder) -> (N, D)``: the embeddings through ``encoder`` (the method's encoder or
        a copy of it, e.g. a momentum encoder) of every training image, not augmented, in eval mode and index order,
        for methods that cluster the dataset (default: ignored)."""

    def reinitialised_parameters(self) -> list[nn.Parameter]:
        """Parameters re-initialised by the last :meth:`on_epoch_start`; the engine clears their optimiser state
        (default none)."""
        return []

    def set_diagnostic_labels(self, labels: Tensor | None) -> None:
        """Give the method the training labels for logged diagnostics only (default: ignored)."""

    #: Augmented views per image in a training batch (the engine stacks them view-major: (views x B, C, H, W)).
    views: int = 1

    def set_total_steps(self, total_steps: int) -> None:
        """The run's planned optimiser steps, for schedules inside the method (e.g. BYOL's momentum); called by the
        engine before training and again when a resumed run changes ``epochs`` (default: ignored)."""

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

    def shared_modules(self) -> list[nn.Module]:
        """Trained modules outside the encoder (predictors, classifiers, prototypes): in a distributed run their
        gradients are averaged over processes by :meth:`before_optimizer_step`, as the engine's data-parallel wrapper
        does for the encoder's (default none)."""
        return []

    def before_optimizer_step(self) -> None:
        """Called between the backward pass and the optimiser step: averages the gradients of
        :meth:`shared_modules` over processes when ``distributed``."""
        if not self.distributed:
            return
        grads = [p.grad for m in self.shared_modules() for p in m.parameters() if p.grad is not None]
        if grads:
            flat = torch.cat([g.reshape(-1) for g in grads])
            flat = all_reduce_sum(flat.detach()) / world_size()
            for g, part in zip(grads, torch.split(flat, [g.numel() for g in grads]), strict=True):
                g.copy_(part.view_as(g))

    @torch.no_grad()
    def after_step(self) -> None:
        """Update non-gradient state (banks, graphs) after the optimiser step."""

    @torch.no_grad()
    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        """Per-epoch upkeep; returns metrics to record with the epoch (default none)."""
        return {}


@dataclass(frozen=True)
class BuildContext:
    """What a method builder needs beyond its own settings.

    Attributes:
        num_samples: N, training images (bank rows, classes).
        embedding_dim: D, the width of the encoder's embeddings.
        distributed: True inside a torch.distributed run (the default process group is initialised).
        in_channels: channels of the training images.
        mean, std: the per-channel normalisation of the training batches (empty when unknown).
    """

    num_samples: int
    embedding_dim: int
    distributed: bool = False
    in_channels: int = 3
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()


#: The most epochs a method's default warm-up share may give (``optim.warmup_epochs: null``).
MAX_DEFAULT_WARMUP_EPOCHS = 10


@dataclass(frozen=True)
class MethodSpec:
    """A training method as the registry holds it.

    Attributes:
        summary: one line for listings.
        settings: the dataclass of the method's own settings; each of its fields is a section of the run's settings
            (e.g. InvP's ``bank`` and ``loss``), declared next to the method.
        build: ``(settings, encoder, context) -> Method``.
        presets: per dataset preset, overrides of the method's sections (applied along the preset's ``extends``).
        warmup_share: the share of the epochs warmed up when ``optim.warmup_epochs`` is null (at most
            :data:`MAX_DEFAULT_WARMUP_EPOCHS`).
        preflight: checks of the environment before any work (e.g. an optional package that the settings need).
        headline: the dotted keys listings show for the method.
        references: per dataset preset (``"*"``: every preset), the published value of dotted keys -- any key,
            shared sections included -- from the method's paper or its authors' code (applied along ``extends``).
        deviations: per preset (``"*"``: the library defaults), why a default differs from its reference.
            ``invprop presets --keys`` prints both, and a test requires a reason for every difference.
        multi_crop: the method takes multi-crop batches (``data.small_crops``) through
            :meth:`Method.multi_crop_step`.
        colour_only: the method needs three-channel images (:meth:`check_images`).
    """

    summary: str
    settings: type
    build: Callable[[Any, nn.Module, BuildContext], Method]
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    warmup_share: float = 0.0
    preflight: Callable[[Any], None] | None = None
    headline: tuple[str, ...] = ()
    references: Mapping[str, Mapping[str, Reference]] = field(default_factory=dict)
    deviations: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    multi_crop: bool = False
    colour_only: bool = False

    def check_images(self, name: str, in_channels: int) -> None:
        """A one-line error when method ``name`` cannot train on images of ``in_channels`` channels."""
        if self.colour_only and in_channels != 3:
            raise ConfigError(f"method {name} needs colour images, and these have {in_channels} channel(s); choose "
                              "a colour dataset (e.g. --preset cifar10) or another method")  # fmt: skip

    def sections(self) -> tuple[str, ...]:
        """Names of the method's settings sections."""
        return tuple(f.name for f in dataclasses.fields(self.settings))

    def default_warmup_epochs(self, epochs: int) -> int:
        return min(int(epochs * self.warmup_share), MAX_DEFAULT_WARMUP_EPOCHS)


#: Every training method, by name.
METHODS: Registry[MethodSpec] = Registry("method")


def create_method(
    name: str, encoder: nn.Module, num_samples: int, embedding_dim: int, **sections: Mapping[str, Any]
) -> Method:
    """A registered method for your own training loop, its settings from ``sections`` over the method's defaults.

    Args:
        name: a registered method (``invp``, ``knn-positives``, ``insdis``, ``insdis-hard``, ``instance-classifier``,
            ...; the registry lists them).
        encoder: any module mapping a batch of images to (B, ``embedding_dim``) embeddings.
        num_samples: N, the training images (indices run over ``[0, N)``).
        embedding_dim: D.
        sections: the method's settings sections as mappings, e.g. ``loss={"temperature": 0.2}``.

    Example:
        >>> encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, 16))
        >>> method = create_method("invp", encoder, num_samples=100, embedding_dim=16, loss={"n_background": 50})
        >>> out = method.training_step(torch.arange(8), torch.randn(8, 1, 8, 8), epoch=40)
        >>> out.loss.backward(); method.after_step()      # after the optimiser step: neighbour refresh, then EMA
        >>> sorted(out.terms)[:2]
        ['loss_ins', 'loss_inv']
    """
    spec = METHODS.get(name)
    settings = spec.settings()
    merge(settings, sections)
    check(settings)
    return spec.build(settings, encoder, BuildContext(num_samples, embedding_dim))
