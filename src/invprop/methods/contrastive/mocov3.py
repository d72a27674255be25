"""MoCo v3 (Chen, Xie & He, 2021) as a training method: ``method: mocov3``.

A query encoder (backbone + projector, then a predictor) and a momentum encoder (the momentum copy of backbone +
projector). Each view's query is contrasted with the other view's keys of the whole batch -- gathered from every
process, no queue -- its own image's key the positive (:func:`invprop.core.contrastive_losses.batch_keys_loss`,
scaled by 2 tau as the authors' code does), both directions summed. After each optimiser step the momentum
encoder follows with a momentum raised from ``mocov3.base_momentum`` towards ``mocov3.final_momentum`` on a cosine
over the run's steps.

The ResNet settings are the defaults (tau 1.0, the two-layer projector ``mlp_bn_std_out``, a predictor without a
last BatchNorm, LARS). The ``cifar10-vit`` preset gives the paper's ViT settings: ``model.head=mlp3_bn_std_out``,
``mocov3.temperature=0.2``, ``mocov3.predictor_output_bn=true``, ``model.freeze_patch_embed=true`` (the random patch
projection, the paper's remedy for unstable ViT training) and its AdamW recipe (lr 1.5e-4 x B/256, weight decay
0.1 on every parameter, 40 warm-up epochs).

Differences from the authors' code: both views go through one forward pass (BatchNorm statistics over the 2B
images, as for every two-view method here; the authors run each view alone); a ViT keeps timm's learned position
embedding (theirs is a fixed 2-D sine-cosine one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
from torch import nn

from invprop.core.contrastive_losses import batch_keys_loss
from invprop.core.crop_pairs import mean_over_pairs, target_pairs
from invprop.core.momentum import ema_update_, frozen_copy
from invprop.distributed.collectives import rank
from invprop.methods.citations import DIGITS_WIDTH, SOLO
from invprop.methods.method import Batch, BuildContext, StepOutput
from invprop.methods.recipes import paper_lars, solo_lars
from invprop.methods.spec import Accumulation, Curve, MethodSpec, register_method
from invprop.methods.two_views import TwoViewMethod, halves, momentum_schedule, split_views
from invprop.models.heads import standardised_mlp
from invprop.settings import AT_LEAST_ONE, FRACTION, POSITIVE, Reference, setting


@dataclass
class MoCoV3Settings:
    """The ``mocov3`` section."""

    temperature: float = setting(1.0, "tau of the contrastive loss (the paper's ResNet value; 0.2 for ViTs)",
                                 bounds=POSITIVE)  # fmt: skip
    base_momentum: float = setting(0.99, "the momentum encoder's momentum at the first step", bounds=FRACTION)
    final_momentum: float = setting(1.0, "its momentum at the last step (cosine schedule)", bounds=FRACTION)
    predictor_hidden_dim: int = setting(4096, "hidden width of the predictor (D -> hidden -> D)", bounds=AT_LEAST_ONE)
    predictor_output_bn: bool = setting(
        False, "the predictor ends in a BatchNorm without scale or shift (the authors' ViT predictor; not their "
        "ResNet one)",
    )  # fmt: skip


class MoCoV3Update(NamedTuple):
    """What a step hands to :meth:`MoCoV3.after_step`: the momentum encoder's momentum."""

    momentum: float


_CHEN = "Chen, Xie & He (2021), MoCo v3"
_CONFIG = f"{_CHEN}, the authors' CONFIG.md"
SPEC = MethodSpec(
    "MoCo v3: a predictor's queries against a momentum encoder's keys of the whole batch, no queue (Chen et al., 2021)",
    MoCoV3Settings,
    section="mocov3",
    section_help="MoCo v3's temperature, momentum encoder and predictor",
    multi_crop=True,
    accumulation=Accumulation.REFUSED,
    accumulation_note="every key of the batch is a negative of every query",
    recipes={
        "*": paper_lars(
            f"{_CONFIG} (ResNet-50, 300 epochs: LARS 0.3 x B/256, weight decay 1e-6, 10 warm-up epochs, cosine)",
            lr=0.3,
            weight_decay=1e-6,
        ),
        "cifar10": solo_lars("mocov3", lr=0.3, weight_decay=1e-6),
        "digits": solo_lars("mocov3", lr=0.3, weight_decay=1e-6),
    },
    presets={
        "*": {"model": {"head": "mlp_bn_std_out", "hidden_dim": 4096, "embedding_dim": 256}},
        "cifar10": {"mocov3": {"temperature": 0.2}},
        "digits": {
            "model": {"hidden_dim": 1024, "embedding_dim": 128},
            "mocov3": {"temperature": 0.2, "predictor_hidden_dim": 1024},
        },
        "cifar10-vit": {
            "model": {"head": "mlp3_bn_std_out", "freeze_patch_embed": True},
            "mocov3": {"temperature": 0.2, "predictor_output_bn": True},
        },
    },  # fmt: skip
    references={
        "*": {
            "mocov3.temperature": Reference(1.0, f"{_CHEN}, the authors' main_moco.py (--moco-t, ResNet-50)"),
            "mocov3.base_momentum": Reference(0.99, f"{_CHEN}, the authors' main_moco.py (--moco-m)"),
            "mocov3.final_momentum": Reference(1.0, f"{_CHEN}, the authors' main_moco.py (--moco-m-cos)"),
            "mocov3.predictor_hidden_dim": Reference(4096, f"{_CHEN}, the authors' main_moco.py (--moco-mlp-dim)"),
            "mocov3.predictor_output_bn": Reference(False, f"{_CHEN}, the authors' builder.py (MoCo_ResNet)"),
            "model.freeze_patch_embed": Reference(False, f"{_CONFIG} (ResNet; --stop-grad-conv1 for ViTs)"),
            "model.hidden_dim": Reference(4096, f"{_CHEN}, the authors' main_moco.py (--moco-mlp-dim)"),
            "model.embedding_dim": Reference(256, f"{_CHEN}, the authors' main_moco.py (--moco-dim)"),
        },
    },
    deviations={
        "cifar10": {"mocov3.temperature": SOLO.format("mocov3")},
        "cifar10-vit": {
            "mocov3.temperature": f"{_CONFIG} (ViT: --moco-t=.2)",
            "mocov3.predictor_output_bn": f"{_CHEN}, the authors' builder.py (MoCo_ViT's predictor)",
            "model.freeze_patch_embed": f"{_CONFIG} (ViT: --stop-grad-conv1)",
        },
        "digits": {
            "mocov3.temperature": SOLO.format("mocov3"),
            "mocov3.predictor_hidden_dim": DIGITS_WIDTH,
            "model.hidden_dim": DIGITS_WIDTH,
            "model.embedding_dim": DIGITS_WIDTH,
        },
    },
    headline=("mocov3.temperature", "mocov3.base_momentum", "model.head"),
    terms=("loss_mocov3", "momentum"),
    curves=(
        Curve("MoCo v3's contrastive loss (x 2 tau)", ("loss_mocov3",)),
        Curve("momentum", ("momentum",), "momentum"),
    ),
)


@register_method("mocov3", SPEC)
class MoCoV3(TwoViewMethod):
    """Queries against the momentum encoder's keys of the other view, both directions (Chen, Xie & He, 2021,
    Alg. 1).

    Args:
        settings: the ``mocov3`` section.
        encoder: backbone + projector (the query encoder; its momentum copy makes the keys).
        context: D (the predictor's width), the planned steps (the momentum's schedule), and the process group (keys
            gathered from every process; the predictor's gradients averaged).
    """

    def __init__(self, settings: MoCoV3Settings, encoder: nn.Module, context: BuildContext) -> None:
        super().__init__(encoder, context)
        self.options = settings
        self.momentum = momentum_schedule(
            "mocov3.base_momentum", settings.base_momentum, settings.final_momentum, context
        )
        d = context.embedding_dim
        self.predictor = standardised_mlp(2, d, settings.predictor_hidden_dim, d, settings.predictor_output_bn)
        self.target = frozen_copy(encoder)

    def shared_modules(self) -> list[nn.Module]:
        return [self.predictor]

    def training_step(self, batch: Batch) -> StepOutput:
        queries = split_views([self.predictor(group) for group in self.encode_groups(batch)], batch.size)
        with torch.no_grad():
            keys = [self.gather_constant(k) for k in halves(self.target(batch.images))]
        offset = rank() * batch.size if self.distributed else 0
        tau = self.options.temperature
        pairs = target_pairs(len(queries))  # each full-size view's keys, every other view's queries
        loss = mean_over_pairs(lambda t, c: batch_keys_loss(queries[c], keys[t], tau, offset), pairs, scale=2)
        momentum = self.momentum(batch.step)
        return StepOutput(loss, {"loss_mocov3": loss.detach(), "momentum": momentum}, MoCoV3Update(momentum))

    @torch.no_grad()
    def after_step(self, outputs: Sequence[StepOutput]) -> None:
        if outputs:  # once per optimiser step
            ema_update_(self.target, self.encoder, outputs[-1].update.momentum)


__all__ = ["MoCoV3", "MoCoV3Settings", "MoCoV3Update", "SPEC"]
