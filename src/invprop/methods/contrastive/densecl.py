"""DenseCL (Wang, Zhang, Shen, Kong & Li, CVPR 2021) as a training method: ``method: densecl``.

MoCo v2 (``invprop.methods.contrastive.moco``) plus a dense term: a second projector, 1x1 convolutions over the
backbone's last feature map (:class:`invprop.models.dense_head.DenseProjector`), gives a projection per location.
Each location of the first view's map is matched to the most similar location of the second view's map, by cosine
similarity of the *backbone* features (:func:`invprop.core.dense_losses.dense_correspondence`); the matched key
is its positive and a second queue of average-pooled dense keys holds the negatives
(:func:`invprop.core.dense_losses.dense_contrastive_loss`). The loss is ``(1 - lambda) L_global + lambda L_dense``
(Eq. 3). The key encoder and its dense projector both follow the online ones by momentum.

Everything else is MoCo's in this library (its momentum schedule and, by default, the symmetric loss of "MoCo
v2+", which here swaps the views of both terms), so that a compare of ``moco`` and ``densecl`` differs by the
dense term alone. ``densecl.warmup_steps`` keeps lambda at 0 for the first steps: the paper's warm-up, which the
released configs leave off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from invprop.core.contrastive_losses import info_nce_queue_loss
from invprop.core.dense_losses import dense_contrastive_loss, dense_correspondence
from invprop.core.momentum import ema_update_, frozen_copy
from invprop.core.queue import FeatureQueue
from invprop.methods.citations import MOCO_V2, QUEUE_CIFAR, QUEUE_DIGITS, SOLO
from invprop.methods.contrastive.moco import MoCo, MoCoSettings
from invprop.methods.method import Batch, BuildContext, StepOutput
from invprop.methods.recipes import paper_sgd, solo_sgd
from invprop.methods.spec import Curve, MethodSpec, register_method
from invprop.methods.two_views import halves
from invprop.models.dense_head import DenseProjector
from invprop.models.feature_maps import map_channels
from invprop.settings import AT_LEAST_ONE, FRACTION, NON_NEGATIVE, Reference, setting

_PAPER = "Wang et al. (2021), DenseCL"
_CODE = "Wang et al. (2021), the authors' WXinlong/DenseCL"
_CONFIG = f"{_CODE}, configs/selfsup/densecl/densecl_imagenet_200ep.py"


@dataclass
class DenseCLSettings(MoCoSettings):
    """The ``densecl`` section: MoCo's settings, the dense term's weight, warm-up and projector width."""

    weight: float = setting(0.5, "lambda, the dense term's share of the loss: (1 - lambda) global + lambda dense",
                            bounds=FRACTION)  # fmt: skip
    warmup_steps: int = setting(0, "optimiser steps with lambda = 0 before the dense term starts (0: none)",
                                bounds=NON_NEGATIVE)  # fmt: skip
    dense_hidden_dim: int | None = setting(
        None, "the dense projector's hidden width; null = the backbone map's channels", bounds=AT_LEAST_ONE
    )


SPEC = MethodSpec(
    "DenseCL: MoCo v2 plus a contrastive loss between matched locations of the two views' feature maps "
    "(Wang et al., 2021)",
    DenseCLSettings,
    section="densecl",
    section_help="DenseCL's key encoder, two queues and the weight of its dense term",
    presets={
        "digits": {"model": {"head": "mlp"}, "densecl": {"queue_size": 1024}},
        "cifar10": {
            "model": {"head": "mlp", "hidden_dim": 2048, "embedding_dim": 256},
            "densecl": {"queue_size": 16384},
        },
    },  # fmt: skip
    recipes={
        "*": paper_sgd(
            f"{_CONFIG} (SGD 0.03 at batch 256, momentum 0.9, wd 1e-4, cosine)", lr=0.03, weight_decay=1e-4
        ),  # fmt: skip
        "cifar10": solo_sgd("mocov2plus", lr=0.3, weight_decay=1e-4),
        "digits": solo_sgd("mocov2plus", lr=0.3, weight_decay=1e-4),
    },
    references={
        "*": {
            "densecl.weight": Reference(0.5, f"{_PAPER}, Sec. 4.2 (lambda = 0.5); {_CONFIG} (loss_lambda)"),
            "densecl.warmup_steps": Reference(0, f"{_CONFIG} (the warm-up hook is not enabled)"),
            "densecl.temperature": Reference(0.2, f"{_CONFIG} (temperature); {MOCO_V2}, Sec. 2"),
            "densecl.queue_size": Reference(65536, f"{_CODE}, models/densecl.py (both queues)"),
            "densecl.base_momentum": Reference(0.999, f"{_CODE}, models/densecl.py (fixed)"),
            "densecl.final_momentum": Reference(0.999, f"{_CODE}, models/densecl.py (fixed)"),
            "densecl.symmetric": Reference(False, f"{_CODE}, models/densecl.py (one direction)"),
            "model.embedding_dim": Reference(128, f"{_CODE}, DenseCLNeck (out_channels)"),
        },
    },
    deviations={
        "*": {
            "densecl.base_momentum": f"MoCo's in this library ({SOLO.format('mocov2plus')}: 0.99 rising to 0.999), "
            "so that densecl and moco differ by the dense term alone",
            "densecl.symmetric": f"MoCo's in this library ({SOLO.format('mocov2plus')}: both directions), both "
            "terms swapped",
            "densecl.queue_size": "4096 for datasets of a few tens of thousands of images; presets adapt it",
            "model.embedding_dim": "MoCo's in this library, so that densecl and moco differ by the dense term alone",
        },
        "digits": {"densecl.queue_size": QUEUE_DIGITS},
        "cifar10": {"densecl.queue_size": QUEUE_CIFAR},
    },
    headline=("densecl.weight", "densecl.temperature", "densecl.queue_size"),
    terms=("loss_global", "loss_dense"),
    curves=(Curve("InfoNCE, global and dense", ("loss_global", "loss_dense")),),
)


@dataclass
class DenseKeyUpdate:
    """What a step leaves for after the optimiser: the global keys and the pooled dense keys to enqueue, and the
    key encoder's momentum at the step."""

    keys: list[Tensor]
    dense_keys: list[Tensor]
    momentum: float


@register_method("densecl", SPEC)
class DenseCL(MoCo):
    """MoCo's global InfoNCE and DenseCL's dense InfoNCE over matched locations (Wang et al., 2021, Eq. 1-3).

    Args:
        settings: the ``densecl`` section.
        encoder: backbone + projector (the query encoder); its backbone gives its last feature map.
        context: as for :class:`~invprop.methods.contrastive.moco.MoCo`.
    """

    section = "densecl"

    def __init__(self, settings: DenseCLSettings, encoder: nn.Module, context: BuildContext) -> None:
        channels = map_channels(getattr(encoder, "backbone", encoder))  # refuses a backbone without maps first
        super().__init__(settings, encoder, context)
        self.options: DenseCLSettings = settings
        self.dense_head = DenseProjector(channels, settings.dense_hidden_dim or channels, context.embedding_dim)
        self.key_dense_head = frozen_copy(self.dense_head)
        self.dense_queue = FeatureQueue(settings.queue_size, context.embedding_dim)

    def shared_modules(self) -> list[nn.Module]:
        return [self.dense_head]

    def training_step(self, batch: Batch) -> StepOutput:
        images = self.views_of(batch)
        online = self.encode_maps(images)
        q1, q2 = halves(online.embedding)
        r1, r2 = halves(self.dense_head(online.maps.last))
        b1, b2 = halves(online.maps.last)
        with torch.no_grad():
            key = self.key_encoder(images, maps=1)
            k1, k2 = halves(key.embedding)
            t1, t2 = halves(self.key_dense_head(key.maps.last))
            c1, c2 = halves(key.maps.last)
        tau, negatives, dense_negatives = self.options.temperature, self.queue.rows(), self.dense_queue.rows()
        global_loss = info_nce_queue_loss(q1, k2, negatives, tau)
        dense_loss = dense_contrastive_loss(r1, t2, dense_correspondence(b1, c2), dense_negatives, tau)
        keys, dense_keys = [k2], [t2]
        if self.options.symmetric:
            global_loss = (global_loss + info_nce_queue_loss(q2, k1, negatives, tau)) / 2
            dense_loss = (dense_loss + dense_contrastive_loss(r2, t1, dense_correspondence(b2, c1), dense_negatives,
                                                              tau)) / 2  # fmt: skip
            keys, dense_keys = [k2, k1], [t2, t1]
        weight = self.options.weight if batch.step >= self.options.warmup_steps else 0.0
        loss = (1 - weight) * global_loss + weight * dense_loss  # Eq. 3
        pooled = [t.mean(dim=(2, 3)) for t in dense_keys]  # the second queue holds average-pooled dense keys
        terms: dict[str, Tensor | float] = {"loss_global": global_loss.detach(), "loss_dense": dense_loss.detach()}
        return StepOutput(loss, terms, DenseKeyUpdate(keys, pooled, self.momentum(batch.step)))

    @torch.no_grad()
    def after_step(self, outputs: Sequence[StepOutput]) -> None:
        if not outputs:
            return
        super().after_step(outputs)  # the key encoder's momentum update and the global queue
        ema_update_(self.key_dense_head, self.dense_head, outputs[-1].update.momentum)
        for output in outputs:
            keys = torch.cat([self.gather_constant(k) for k in output.update.dense_keys])
            self.dense_queue.enqueue(nn.functional.normalize(keys.float(), dim=1))


__all__ = ["SPEC", "DenseCL", "DenseCLSettings"]
