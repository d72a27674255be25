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
from typing import Sequence

import torch
from torch import Tensor, nn

from invprop.core.contrastive_losses import info_nce_queue_loss
from invprop.core.crop_pairs import mean_over_pairs, target_pairs
from invprop.core.momentum import ema_update_, frozen_copy
from invprop.core.queue import FeatureQueue
from invprop.methods.citations import MOCO, MOCO_V2, QUEUE_CIFAR, QUEUE_DIGITS, SOLO
from invprop.methods.method import Batch, BuildContext, StepOutput
from invprop.methods.recipes import paper_sgd, solo_sgd
from invprop.methods.spec import Curve, MethodSpec, register_method
from invprop.methods.two_views import TwoViewMethod, halves, momentum_schedule, warn_if_queue_holds_the_dataset
from invprop.settings import AT_LEAST_ONE, FRACTION, POSITIVE, Reference, setting


@dataclass
class MoCoSettings:
    """The ``moco`` section."""

    temperature: float = setting(0.2, "tau of InfoNCE", bounds=POSITIVE)
    queue_size: int = setting(4096, "K, keys in the queue of negatives (keep it below the dataset size)",
                              bounds=AT_LEAST_ONE)  # fmt: skip
    base_momentum: float = setting(0.99, "momentum of the key encoder at the first step", bounds=FRACTION)
    final_momentum: float = setting(
        0.999, "momentum at the last step (cosine schedule; = base: fixed)", bounds=FRACTION
    )
    symmetric: bool = setting(True, "also the loss with the views swapped, both views' keys enqueued (MoCo v2+)")


SPEC = MethodSpec(
    "MoCo v2: momentum key encoder, a queue of negatives, InfoNCE (Chen et al., 2020)",
    MoCoSettings,
    section="moco",
    section_help="MoCo's key encoder, queue and loss",
    multi_crop=True,
    presets={
        "digits": {"model": {"head": "mlp"}, "moco": {"queue_size": 1024}},
        "cifar10": {"model": {"head": "mlp", "hidden_dim": 2048, "embedding_dim": 256}, "moco": {"queue_size": 16384}},
    },
    recipes={
        "*": paper_sgd(
            f"{MOCO_V2}, the authors' main_moco.py and README (0.03 at batch 256, --cos)", lr=0.03, weight_decay=1e-4
        ),
        "cifar10": solo_sgd("mocov2plus", lr=0.3, weight_decay=1e-4),
        "digits": solo_sgd("mocov2plus", lr=0.3, weight_decay=1e-4),
    },
    references={
        "*": {
            "moco.temperature": Reference(0.2, f"{MOCO_V2}, Sec. 2"),
            "moco.queue_size": Reference(65536, f"{MOCO}, Sec. 4 (ImageNet)"),
            "moco.base_momentum": Reference(0.999, f"{MOCO}, Sec. 3.2 (fixed)"),
            "moco.final_momentum": Reference(0.999, f"{MOCO}, Sec. 3.2 (fixed)"),
            "moco.symmetric": Reference(False, f"{MOCO}, Alg. 1 (one direction)"),
        },
    },
    deviations={
        "*": {
            "moco.base_momentum": f"{SOLO.format('mocov2plus')}: 0.99 rising to 0.999 (short schedules on small data)",
            "moco.symmetric": f"{SOLO.format('mocov2plus')} ('MoCo v2+'): the symmetric loss",
            "moco.queue_size": "4096 for datasets of a few tens of thousands of images; presets adapt it",
        },
        "digits": {"moco.queue_size": QUEUE_DIGITS},
        "cifar10": {"moco.queue_size": QUEUE_CIFAR},
    },
    headline=("moco.temperature", "moco.queue_size", "moco.base_momentum"),
    terms=("loss_nce",),
    curves=(Curve("InfoNCE", ("loss_nce",)),),
)


@dataclass
class KeyUpdate:
    """What a step leaves for after the optimiser: the keys to enqueue, and the key encoder's momentum at the step."""

    keys: list[Tensor]
    momentum: float


@register_method("moco", SPEC)
class MoCo(TwoViewMethod):
    """Queries from the encoder, keys from its momentum copy, negatives from the queue (He et al., 2020, Alg. 1).

    Args:
        settings: the ``moco`` section.
        encoder: backbone + projector (the query encoder).
        context: D (the queue's width), the planned steps (the momentum's schedule), and the process group (keys
            are gathered from every process before they are enqueued).
    """

    #: The settings section, which names the queue and momentum settings in messages.
    section = "moco"

    def __init__(self, settings: MoCoSettings, encoder: nn.Module, context: BuildContext) -> None:
        super().__init__(encoder, context)
        warn_if_queue_holds_the_dataset(f"{self.section}.queue_size", settings.queue_size, context.num_samples)
        self.options = settings
        self.momentum = momentum_schedule(
            f"{self.section}.base_momentum", settings.base_momentum, settings.final_momentum, context
        )
        self.key_encoder = frozen_copy(encoder)
        self.queue = FeatureQueue(settings.queue_size, context.embedding_dim)

    def training_step(self, batch: Batch) -> StepOutput:
        loss, _, keys = self.contrast(batch)
        return StepOutput(loss, {"loss_nce": loss.detach()}, KeyUpdate(keys, self.momentum(batch.step)))

    def contrast(self, batch: Batch) -> tuple[Tensor, Tensor, list[Tensor]]:
        """InfoNCE of a two-view batch, the first views' queries (B, D), and the keys to enqueue after the step.

        The second view's keys are the targets of the first view's queries (and, symmetric, the first view's keys of
        the second's); multi-crop's small crops are further queries against the same keys."""
        queries = self.encode_views(batch)
        with torch.no_grad():
            k1, k2 = halves(self.key_encoder(batch.images))
        keys = (k1, k2)
        negatives = self.queue.rows()
        tau = self.options.temperature
        targets = (0, 1) if self.options.symmetric else (1,)
        pairs = target_pairs(len(queries), targets)
        loss = mean_over_pairs(lambda t, c: info_nce_queue_loss(queries[c], keys[t], negatives, tau), pairs)
        return loss, queries[0], [k2, k1] if self.options.symmetric else [k2]

    @torch.no_grad()
    def after_step(self, outputs: Sequence[StepOutput]) -> None:
        if not outputs:
            return
        ema_update_(self.key_encoder, self.encoder, outputs[-1].update.momentum)  # once per optimiser step
        for output in outputs:  # each view's keys gathered in rank order: the global batch's order, on every process
            keys = torch.cat([self.gather_constant(k) for k in output.update.keys])
            self.queue.enqueue(nn.functional.normalize(keys.float(), dim=1))


__all__ = ["SPEC", "MoCo", "MoCoSettings"]
