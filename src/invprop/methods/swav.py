"""SwAV (Caron et al., 2020) as a training method: ``method: swav``.

The embeddings (backbone + ``model.head``) of every view are L2-normalised and scored against K learnable
prototypes (unit rows, renormalised before each step). The two full-size views are assigned codes by Sinkhorn-Knopp
(:func:`invprop.core.clustering.sinkhorn_knopp`; over every process's batch in a distributed run), optionally with
the embeddings of earlier batches from a queue in front (needed with small batches; the codes of the batch's own
rows are kept). Every other view -- the other full-size one and any multi-crop small crop (``data.small_crops``)
-- predicts those codes (:func:`invprop.core.clustering_losses.swapped_prediction_loss`). The prototypes are frozen
for the first ``swav.freeze_prototypes_epochs`` epochs. Its settings are one section, ``swav``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invprop.core.clustering import sinkhorn_knopp
from invprop.core.clustering_losses import swapped_prediction_loss
from invprop.core.queue import FeatureQueue
from invprop.distributed.collectives import LOCAL, world_size
from invprop.errors import ConfigError
from invprop.methods.base import METHODS, BuildContext, Method, MethodSpec, StepOutput
from invprop.methods.field_published import FIELD_DEVIATIONS, FIELD_PRESETS, FIELD_REFERENCES
from invprop.settings import AT_LEAST_ONE, AT_LEAST_TWO, NON_NEGATIVE, POSITIVE, section, setting

#: The views that are assigned codes: SwAV's two full-size crops.
ASSIGNED_VIEWS = 2


@dataclass
class SwAVOptions:
    """The ``swav`` section."""

    prototypes: int = setting(3000, "K, the learnable prototypes", bounds=AT_LEAST_TWO)
    temperature: float = setting(0.1, "tau of the softmax over prototype scores", bounds=POSITIVE)
    epsilon: float = setting(0.05, "Sinkhorn-Knopp's entropic regularisation", bounds=POSITIVE)
    sinkhorn_iterations: int = setting(3, "Sinkhorn-Knopp's normalisation rounds", bounds=AT_LEAST_ONE)
    freeze_prototypes_epochs: int = setting(1, "epochs at the start during which the prototypes are not updated",
                                            bounds=NON_NEGATIVE)  # fmt: skip
    queue_size: int = setting(
        0, "embeddings of earlier batches per assigned view put in front of Sinkhorn's input (0: no queue; summed over "
        "the processes of a distributed run)", bounds=NON_NEGATIVE,
    )  # fmt: skip
    queue_start_epoch: int = setting(15, "the epoch from which the queue is filled (it is used once full)",
                                     bounds=AT_LEAST_ONE)  # fmt: skip


@dataclass
class SwAVSettings:
    swav: SwAVOptions = section(SwAVOptions, "SwAV's prototypes, Sinkhorn codes and queue")


class SwAV(Method):
    """Swapped prediction of Sinkhorn codes over multi-crop views (Caron et al., 2020, Eq. 1-3).

    Args:
        encoder: backbone + projection head.
        embedding_dim: D.
        options: the ``swav`` section.
        distributed: Sinkhorn over every process's batch; prototype gradients averaged; each process queues its own
            rows (``queue_size / processes`` of them), so the processes' queues together hold the same rows as one
            process's.
    """

    views = ASSIGNED_VIEWS

    def __init__(self, encoder: nn.Module, embedding_dim: int, options: SwAVOptions, distributed: bool = False) -> None:
        super().__init__(encoder, distributed)
        self.options = options
        self.prototypes = nn.Linear(embedding_dim, options.prototypes, bias=False)
        rows = options.queue_size // world_size() if distributed else options.queue_size
        self.queues: list[FeatureQueue] = nn.ModuleList(  # type: ignore[assignment]
            [FeatureQueue(rows, embedding_dim) for _ in range(ASSIGNED_VIEWS)] if rows else []
        )
        self._epoch = 1
        self._pending: list[Tensor] | None = None

    def shared_modules(self) -> list[nn.Module]:
        return [self.prototypes]

    def training_step(self, indices: Tensor, images: Tensor, epoch: int) -> StepOutput:
        return self.multi_crop_step(indices, [images], epoch)

    def multi_crop_step(self, indices: Tensor, crops: list[Tensor], epoch: int) -> StepOutput:
        self._epoch = epoch
        b = indices.shape[0]
        with torch.no_grad():
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))
        embeddings = [F.normalize(self.encode(group).float(), dim=1) for group in crops]
        views = [view for group in embeddings for view in group.split(b)]
        scores = [self.prototypes(view) for view in views]
        codes = [self.codes(i, scores[i].detach()) for i in range(ASSIGNED_VIEWS)]
        loss = swapped_prediction_loss(scores, codes, self.options.temperature)
        if self.queues and epoch >= self.options.queue_start_epoch:
            self._pending = [views[i].detach() for i in range(ASSIGNED_VIEWS)]
        return StepOutput(loss, {"loss_swav": loss.detach()})

    @torch.no_grad()
    def codes(self, view: int, scores: Tensor) -> Tensor:
        """Sinkhorn codes (B, K) of one assigned view, with the queue's rows in front once it is full."""
        b = scores.shape[0]
        if self.queues:
            queue = self.queues[view]
            if int(queue.count) == queue.size and queue.size:
                scores = torch.cat([self.prototypes(queue.rows()), scores])
        group = None if self.distributed else LOCAL
        o = self.options
        return sinkhorn_knopp(scores, o.epsilon, o.sinkhorn_iterations, group)[-b:]

    def before_optimizer_step(self) -> None:
        super().before_optimizer_step()
        if self._epoch <= self.options.freeze_prototypes_epochs:
            self.prototypes.weight.grad = None

    @torch.no_grad()
    def after_step(self) -> None:
        if self._pending is not None:
            for queue, rows in zip(self.queues, self._pending, strict=True):
                queue.enqueue(rows)
            self._pending = None


def build_swav(settings: SwAVSettings, encoder: nn.Module, context: BuildContext) -> SwAV:
    o = settings.swav
    if o.queue_size and context.distributed and o.queue_size % world_size():
        raise ConfigError(f"swav.queue_size={o.queue_size} must be a multiple of the {world_size()} processes")
    return SwAV(encoder, context.embedding_dim, o, context.distributed)


METHODS.register("swav")(
    MethodSpec(
        "SwAV: swapped prediction of Sinkhorn cluster codes, multi-crop (Caron et al., 2020)",
        SwAVSettings,
        build_swav,
        presets=FIELD_PRESETS["swav"],
        headline=("swav.prototypes", "swav.queue_size", "data.small_crops"),
        references=FIELD_REFERENCES["swav"],
        deviations=FIELD_DEVIATIONS["swav"],
        multi_crop=True,
    )
)

__all__ = ["SwAV", "SwAVOptions", "SwAVSettings", "build_swav"]
