"""MoCo v2 (Chen, Fan, Girshick & He, 2020) as a training method: ``method: moco``.

A query encoder (backbone + projector, trained) and a key encoder, its momentum copy; InfoNCE of each query
against its key and a queue of earlier keys (:func:`invprop.core.contrastive_losses.info_nce_queue_loss`). After
each optimiser step the key encoder follows the query encoder (:func:`invprop.core.momentum.ema_update_`), and
the step's keys -- gathered from every process first, so that every process holds the same queue -- are enqueued.
``moco.symmetric`` adds the loss with the views swapped ("MoCo v2+" in solo-learn) and enqueues both views' keys.
The momentum rises from ``moco.base_momentum`` to ``moco.final_momentum`` on BYOL's cosine schedule (equal values:
fixed, as in the paper). BatchNorm is not shuffled across processes (shuffle-BN); use ``distributed.sync_bn``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from invprop.core.contrastive_losses import info_nce_queue_loss
from invprop.core.momentum import cosine_momentum, ema_update_, frozen_copy
from invprop.core.queue import FeatureQueue
from invprop.methods.base import METHODS, BuildContext, MethodSpec, StepOutput
from invprop.methods.field_published import FIELD_DEVIATIONS, FIELD_PRESETS, FIELD_REFERENCES
from invprop.methods.two_views import TwoViewMethod, warn_if_queue_holds_the_dataset
from invprop.settings import AT_LEAST_ONE, FRACTION, POSITIVE, section, setting


@dataclass
class MoCoOptions:
    """The ``moco`` section."""

    temperature: float = setting(0.2, "tau of InfoNCE", bounds=POSITIVE)
    queue_size: int = setting(4096, "K, keys in the queue of negatives (keep it below the dataset size)",
                              bounds=AT_LEAST_ONE)  # fmt: skip
    base_momentum: float = setting(0.99, "momentum of the key encoder at the first step", bounds=FRACTION)
    final_momentum: float = setting(
        0.999, "momentum at the last step (cosine schedule; = base: fixed)", bounds=FRACTION
    )
    symmetric: bool = setting(True, "also the loss with the views swapped, both views' keys enqueued (MoCo v2+)")


@dataclass
class MoCoSettings:
    moco: MoCoOptions = section(MoCoOptions, "MoCo's key encoder, queue and loss")


class MoCo(TwoViewMethod):
    """Queries from the encoder, keys from its momentum copy, negatives from the queue (He et al., 2020, Alg. 1).

    Args:
        encoder: backbone + projector (the query encoder).
        embedding_dim: D of the projections (the queue's width).
        options: the ``moco`` section.
        distributed: gather keys from every process before enqueueing them.
    """

    def __init__(self, encoder: nn.Module, embedding_dim: int, options: MoCoOptions, distributed: bool = False) -> None:
        super().__init__(encoder, distributed)
        self.options = options
        self.key_encoder = frozen_copy(encoder)
        self.queue = FeatureQueue(options.queue_size, embedding_dim)
        self._keys: list[Tensor] = []

    def momentum(self) -> float:
        """The key encoder's momentum at the current step."""
        o = self.options
        return cosine_momentum(o.base_momentum, int(self.step), self.total_steps, o.final_momentum)

    def training_step(self, indices: Tensor, images: Tensor, epoch: int) -> StepOutput:
        loss, _ = self.contrast(images)
        return StepOutput(loss, {"loss_nce": loss.detach()})

    def contrast(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """InfoNCE of a two-view batch (its keys kept for the queue) and the first views' queries (B, D)."""
        q1, q2 = self.pair(images)
        with torch.no_grad():
            k1, k2 = self.halves(self.key_encoder(images))
        negatives = self.queue.rows()
        tau = self.options.temperature
        loss = info_nce_queue_loss(q1, k2, negatives, tau)
        if self.options.symmetric:
            loss = (loss + info_nce_queue_loss(q2, k1, negatives, tau)) / 2
            self._keys = [k2, k1]
        else:
            self._keys = [k2]
        return loss, q1

    @torch.no_grad()
    def after_step(self) -> None:
        ema_update_(self.key_encoder, self.encoder, self.momentum())
        if self._keys:  # each view's keys gathered in rank order: the global batch's order, on every process
            keys = torch.cat([self.gather_constant(k) for k in self._keys])
            self.queue.enqueue(nn.functional.normalize(keys.float(), dim=1))
            self._keys = []
        super().after_step()


def build_moco(settings: MoCoSettings, encoder: nn.Module, context: BuildContext) -> MoCo:
    warn_if_queue_holds_the_dataset("moco.queue_size", settings.moco.queue_size, context.num_samples)
    return MoCo(encoder, context.embedding_dim, settings.moco, context.distributed)


METHODS.register("moco")(
    MethodSpec(
        "MoCo v2: momentum key encoder, a queue of negatives, InfoNCE (Chen et al., 2020)",
        MoCoSettings,
        build_moco,
        presets=FIELD_PRESETS["moco"],
        headline=("moco.temperature", "moco.queue_size", "moco.base_momentum"),
        references=FIELD_REFERENCES["moco"],
        deviations=FIELD_DEVIATIONS["moco"],
    )
)

__all__ = ["MoCo", "MoCoOptions", "MoCoSettings", "build_moco"]
