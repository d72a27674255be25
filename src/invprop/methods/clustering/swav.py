"""SwAV (Caron et al., 2020) as a training method: ``method: swav``.

The embeddings (backbone + ``model.head``) of every view are L2-normalised and scored against K learnable
prototypes (unit rows, renormalised after each optimiser step). The two full-size views are assigned codes by Sinkhorn-Knopp
(:func:`invprop.core.clustering.sinkhorn_knopp`; over every process's batch in a distributed run), optionally with
the embeddings of earlier batches from a queue in front (needed with small batches; the codes of the batch's own
rows are kept). Every other view -- the other full-size one and any multi-crop small crop (``data.small_crops``)
-- predicts those codes (:func:`invprop.core.clustering_losses.swapped_prediction_loss`). The prototypes are frozen
for the first ``swav.freeze_prototypes_epochs`` epochs. Its settings are one section, ``swav``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invprop.core.clustering import sinkhorn_knopp
from invprop.core.clustering_losses import swapped_prediction_loss
from invprop.core.queue import FeatureQueue
from invprop.distributed.collectives import LOCAL, world_size
from invprop.errors import ConfigError
from invprop.methods.citations import SOLO
from invprop.methods.method import Batch, BuildContext, Method, StepOutput
from invprop.methods.recipes import paper_lars, solo_lars
from invprop.methods.spec import Accumulation, Curve, MethodSpec, SmokeRun, register_method
from invprop.settings import AT_LEAST_ONE, AT_LEAST_TWO, NON_NEGATIVE, POSITIVE, Reference, setting

#: The views that are assigned codes: SwAV's two full-size crops.
ASSIGNED_VIEWS = 2


@dataclass
class SwAVSettings:
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


_CARON = "Caron et al. (2020)"
SPEC = MethodSpec(
    "SwAV: swapped prediction of Sinkhorn cluster codes, multi-crop (Caron et al., 2020)",
    SwAVSettings,
    section="swav",
    section_help="SwAV's prototypes, Sinkhorn codes and queue",
    accumulation=Accumulation.REFUSED,
    accumulation_note="Sinkhorn-Knopp assigns the codes over the whole batch",
    recipes={
        "*": paper_lars(
            "Caron et al. (2020), the authors' swav_200ep_bs256_pretrain.sh (LARC without clip nor exclusions, 0.6 at "
            "batch 256 -- 4.8 at 4096 -- to 0.0006, no warm-up)",
            lr=0.6,
            weight_decay=1e-6,
            exclude_norm_and_bias=False,
            warmup_epochs=0,
            final_lr=0.001,
        ),
        "cifar10": solo_lars("swav", lr=0.6, weight_decay=1e-6),
        "digits": solo_lars("swav", lr=0.6, weight_decay=1e-6),
    },
    presets={
        "digits": {"model": {"head": "mlp_bn"}, "swav": {"prototypes": 30}},
        "cifar10": {
            "model": {"head": "mlp_bn", "hidden_dim": 2048, "embedding_dim": 128},
            "swav": {"queue_size": 3840, "queue_start_epoch": 50, "freeze_prototypes_epochs": 2},
        },
    },  # fmt: skip
    references={
        "*": {
            "swav.prototypes": Reference(3000, f"{_CARON}, Sec. 4 (ImageNet)"),
            "swav.temperature": Reference(0.1, f"{_CARON}, App. A.1"),
            "swav.epsilon": Reference(0.05, f"{_CARON}, App. A.1"),
            "swav.sinkhorn_iterations": Reference(3, f"{_CARON}, Sec. 3.1"),
            "swav.freeze_prototypes_epochs": Reference(1, f"{_CARON}, App. A.1 (the first epoch)"),
            "swav.queue_size": Reference(3840, "the authors' code, small-batch setting (batch 256)"),
            "swav.queue_start_epoch": Reference(15, "the authors' code, small-batch setting"),
            "data.small_crops": Reference(6, f"{_CARON}, Sec. 4 (2 x 224 + 6 x 96 on ImageNet)"),
        },
    },
    deviations={
        "*": {
            "swav.queue_size": "off unless asked for: a queue only helps once it is full, and the right size depends on "
            "the batch and the dataset",
            "data.small_crops": "multi-crop is opt-in (data.small_crops); the two full-size views are SwAV's baseline "
            "setting (Caron et al., 2020, Table 3)",
        },
        "digits": {
            "swav.prototypes": "3 per class of the 10 digits: 3000 prototypes for 1,347 images leave most unused"
        },
        "cifar10": {
            "swav.freeze_prototypes_epochs": SOLO.format("swav"),
            "swav.queue_start_epoch": f"{SOLO.format('swav')} (its schedules are 1000 epochs)",
            "data.small_crops": f"{SOLO.format('swav')} trains CIFAR with the two 32-pixel views",
        },
    },
    headline=("swav.prototypes", "swav.queue_size", "data.small_crops"),
    terms=("loss_swav",),
    curves=(Curve("swapped prediction", ("loss_swav",)),),
    smoke=SmokeRun(settings={"swav": {"queue_size": 16, "queue_start_epoch": 1}}),  # the queue from the first step
    multi_crop=True,
)


@register_method("swav", SPEC)
class SwAV(Method):
    """Swapped prediction of Sinkhorn codes over multi-crop views (Caron et al., 2020, Eq. 1-3).

    Args:
        settings: the ``swav`` section.
        encoder: backbone + projection head.
        context: D, and the process group: Sinkhorn over every process's batch; prototype gradients averaged; each
            process queues its own rows (``queue_size / processes`` of them), so the processes' queues together hold
            the same rows as one process's.

    While the prototypes are frozen (the first ``swav.freeze_prototypes_epochs`` epochs) the scores use their
    weights detached: the embeddings still learn from them, the prototypes get no gradient.
    """

    views = ASSIGNED_VIEWS

    def __init__(self, settings: SwAVSettings, encoder: nn.Module, context: BuildContext) -> None:
        distributed = context.distributed
        if settings.queue_size and distributed and settings.queue_size % world_size():
            raise ConfigError(
                f"swav.queue_size={settings.queue_size} must be a multiple of the {world_size()} processes"
            )
        super().__init__(encoder, context)
        options = settings
        embedding_dim = context.embedding_dim
        self.options = options
        self.prototypes = nn.Linear(embedding_dim, options.prototypes, bias=False)
        self._normalise_prototypes()
        rows = options.queue_size // world_size() if distributed else options.queue_size
        self.queues: list[FeatureQueue] = nn.ModuleList(  # type: ignore[assignment]
            [FeatureQueue(rows, embedding_dim) for _ in range(ASSIGNED_VIEWS)] if rows else []
        )

    def shared_modules(self) -> list[nn.Module]:
        return [self.prototypes]

    def training_step(self, batch: Batch) -> StepOutput:
        self.views_of(batch)  # (checks the full-size views; the small crops are the batch's second group)
        b = batch.size
        frozen = batch.epoch <= self.options.freeze_prototypes_epochs
        weight = self.prototypes.weight.detach() if frozen else self.prototypes.weight
        embeddings = [F.normalize(self.encode(group).float(), dim=1) for group in batch.groups]
        views = [view for group in embeddings for view in group.split(b)]
        scores = [F.linear(view, weight) for view in views]
        codes = [self.codes(i, scores[i].detach()) for i in range(ASSIGNED_VIEWS)]
        loss = swapped_prediction_loss(scores, codes, self.options.temperature)
        queued = self.queues and batch.epoch >= self.options.queue_start_epoch
        update = [views[i].detach() for i in range(ASSIGNED_VIEWS)] if queued else None
        return StepOutput(loss, {"loss_swav": loss.detach()}, update)

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

    @torch.no_grad()
    def _normalise_prototypes(self) -> None:
        """Unit rows (Caron et al., 2020, Sec. 3.1): at construction and after every optimiser step, never inside a
        step (two steps accumulating gradients share the weights)."""
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    @torch.no_grad()
    def after_step(self, outputs: Sequence[StepOutput]) -> None:
        self._normalise_prototypes()
        for output in outputs:
            if output.update is not None:
                for queue, rows in zip(self.queues, output.update, strict=True):
                    queue.enqueue(rows)


__all__ = ["SPEC", "SwAV", "SwAVSettings"]
