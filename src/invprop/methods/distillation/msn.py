"""Masked siamese networks (Assran et al., 2022) as a training method: ``method: msn``.

Each image's second full-size view and its multi-crop small crops are anchors: a random 15% of their patch tokens
is dropped before the ViT's blocks (:func:`invprop.core.token_masks.random_token_mask`, the class token kept). Their
embeddings' soft assignments to K learnable prototypes (:func:`invprop.core.masked_siamese.prototype_scores`, a
softmax at temperature tau) must match the target: the first view, whole, through the momentum copy of the
backbone and head, assigned to the same prototypes, sharpened and balanced over the prototypes by Sinkhorn-Knopp
(:func:`invprop.core.masked_siamese.msn_targets`). The mean-entropy term spreads the anchors' mean assignment over
every prototype (:func:`invprop.core.masked_siamese.mean_entropy_penalty`). The target encoder follows on a linear
momentum schedule. The backbone is a timm ViT.

The default recipe is the authors' ViT-S/16 config (AdamW, lr warmed up from 2e-4 to 1e-3 over 15 epochs, then a
cosine to 1e-6; weight decay 0.04 to 0.4 on a cosine; the gradients' global norm clipped to 3); no CIFAR recipe is
published, and CIFAR and digits take it too.

Differences from the authors' code: their lr, weight-decay and momentum schedules run over 1.25 times the run (the
run ends before their final values); here they end at the run's last step. Each image's kept tokens are drawn for it
alone. The gradients' global norm is clipped over every trained parameter, the prototypes too (the authors clip the
encoder's). The projection's BatchNorm sees each group of anchors (the second views, the small crops) apart, not
all anchors at once. With a timm ViT, timm's exemption of the position embedding and class token from weight decay
applies. Not done: the per-sample entropy term (``ent_weight``, 0 in the released configs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from invprop.core.diagnostics import entropies
from invprop.core.masked_siamese import mean_entropy_penalty, msn_cross_entropy, msn_targets, prototype_scores
from invprop.core.momentum import ema_update_, frozen_copy, linear_momentum
from invprop.core.token_masks import random_token_mask
from invprop.distributed.collectives import LOCAL, all_reduce_sum, world_size
from invprop.methods.method import Batch, BuildContext, Method, StepOutput
from invprop.methods.spec import Accumulation, Curve, MethodSpec, Recipe, SmokeRun, Torchrun, register_method
from invprop.methods.two_views import momentum_schedule
from invprop.models.vit_tokens import MaskedPatches, patch_grid, vision_transformer
from invprop.settings import AT_LEAST_TWO, FRACTION, NON_NEGATIVE, POSITIVE, UNIT_INTERVAL, Reference, setting


@dataclass
class MSNSettings:
    """The ``msn`` section."""

    prototypes: int = setting(1024, "K, the learnable prototypes", bounds=AT_LEAST_TWO)
    temperature: float = setting(0.1, "tau of the assignments' softmax", bounds=POSITIVE)
    sharpen_temperature: float = setting(0.25, "T that sharpens the target's assignment", bounds=POSITIVE)
    sinkhorn_iterations: int = setting(3, "Sinkhorn-Knopp rounds that balance the targets (0: none)",
                                       bounds=NON_NEGATIVE)  # fmt: skip
    memax_weight: float = setting(1.0, "lambda, the weight of the mean-entropy term", bounds=NON_NEGATIVE)
    patch_drop: float = setting(0.15, "the share of an anchor's patch tokens dropped", bounds=UNIT_INTERVAL)
    base_momentum: float = setting(0.996, "the target encoder's momentum at the first step", bounds=FRACTION)
    final_momentum: float = setting(1.0, "the target encoder's momentum at the last step (linear)", bounds=FRACTION)


class Prototypes(nn.Module):
    """K learnable prototypes (K, d), initialised from U(-1/sqrt(d), 1/sqrt(d)) (the authors' ``init_model``), in an
    optimiser group of their own without weight decay (the authors' param groups)."""

    def __init__(self, count: int, dim: int) -> None:
        super().__init__()
        bound = 1 / math.sqrt(dim)
        self.weight = nn.Parameter(torch.empty(count, dim).uniform_(-bound, bound))

    def parameter_groups(self, weight_decay: float, layer_decay: float) -> list[dict[str, Any]]:
        return [{"params": [self.weight], "weight_decay": 0.0}]


_ASSRAN = "Assran et al. (2022), MSN"
_CONFIG = f"{_ASSRAN}, the authors' configs/pretrain/msn_vits16.yaml"
_CODE = f"{_ASSRAN}, the authors' src/losses.py"
_NO_CIFAR = "no MSN recipe or setting for CIFAR is published (solo-learn and lightly have none)"
SPEC = MethodSpec(
    "MSN: masked anchors' prototype assignments match an unmasked target's, sharpened and balanced "
    "(Assran et al., 2022)",
    MSNSettings,
    section="msn",
    section_help="MSN's prototypes, temperatures, masking and target encoder",
    recipes={
        "*": Recipe(
            f"{_CONFIG} (AdamW, lr warmed up from 2e-4 to 1e-3 over 15 epochs, whatever the batch, then a cosine to "
            "1e-6; weight decay 0.04 to 0.4 on a cosine but on biases, 1-D parameters and the prototypes; the "
            "gradients' global norm clipped to 3.0)",
            {
                "optimizer": "adamw",
                "lr": 1e-3,
                "lr_scaling": "none",
                "weight_decay": 0.04,
                "final_weight_decay": 0.4,
                "exclude_norm_and_bias": True,
                "schedule": "cosine",
                "warmup_epochs": 15,
                "warmup_start_lr": 2e-4,
                "final_lr": 1e-6 / 1e-3,
                "clip_grad": 3.0,
                "clip_scope": "global",
            },
        ),
    },
    presets={
        "*": {
            "model": {
                "backbone": "timm:vit_small_patch16_224",
                "head": "mlp3_bn_gelu",
                "hidden_dim": 2048,
                "embedding_dim": 256,
            },
            "data": {"small_crop_scale": [0.05, 0.3]},
        },
        "cifar10": {"model": {"backbone": "timm:vit_tiny_patch16_224", "patch_size": 4}},
        "digits": {
            "model": {
                "backbone": "timm:vit_tiny_patch16_224",
                "patch_size": 2,
                "hidden_dim": 512,
                "embedding_dim": 128,
            },
            "msn": {"prototypes": 256, "base_momentum": 0.99},
        },
    },
    references={
        "*": {
            "msn.prototypes": Reference(1024, f"{_CONFIG} (num_proto)"),
            "msn.temperature": Reference(0.1, f"{_CONFIG} (temperature)"),
            "msn.sharpen_temperature": Reference(0.25, f"{_CONFIG} (start_sharpen = final_sharpen)"),
            "msn.sinkhorn_iterations": Reference(
                3, f"{_CONFIG} (use_sinkhorn) and {_CODE} (distributed_sinkhorn num_itr)"
            ),
            "msn.memax_weight": Reference(1.0, f"{_CONFIG} (memax_weight)"),
            "msn.patch_drop": Reference(0.15, f"{_CONFIG} (patch_drop)"),
            "msn.base_momentum": Reference(0.996, f"{_CONFIG} (ema start)"),
            "msn.final_momentum": Reference(1.0, f"{_CONFIG} (ema end)"),
            "model.backbone": Reference("timm:vit_small_patch16_224", f"{_CONFIG} (model_name deit_small)"),
            "model.hidden_dim": Reference(2048, f"{_CONFIG} (hidden_dim)"),
            "model.embedding_dim": Reference(256, f"{_CONFIG} (output_dim)"),
            "data.small_crops": Reference(10, f"{_CONFIG} (focal_views)"),
            "data.small_crop_scale": Reference([0.05, 0.3], f"{_CONFIG} (focal_crop_scale)"),
        },
    },
    deviations={
        "*": {
            "data.small_crops": "multi-crop is opt-in (data.small_crops), as for DINO and SwAV here: 10 focal views "
            "more than double a step's cost",
        },
        "cifar10": {
            "model.backbone": "ViT-Tiny with 4x4 patches of the 32x32 images (64 tokens), the cifar10-vit preset's; "
            + _NO_CIFAR,
        },
        "digits": {
            "model.backbone": "ViT-Tiny with 2x2 patches of the 8x8 digits (16 patches), the digits ViT row's",
            "model.hidden_dim": "scaled down with ViT-Tiny (192 wide) on the 8x8 digits",
            "model.embedding_dim": "scaled down with ViT-Tiny (192 wide) on the 8x8 digits",
            "msn.prototypes": "scaled down with the 1,347 digits images (MSN's 1,024 are for ImageNet's 1.28M)",
            "msn.base_momentum": "short digits runs: the target must follow within a few hundred steps",
        },
    },
    headline=("msn.prototypes", "msn.patch_drop", "data.small_crops"),
    terms=("loss_msn", "loss_memax", "target_entropy", "anchor_entropy", "momentum"),
    curves=(
        Curve("MSN's cross-entropy and mean-entropy term", ("loss_msn", "loss_memax")),
        Curve(
            "entropy of each view's assignment (one prototype: 0; uniform: log K)",
            ("target_entropy", "anchor_entropy"),
            "nats",
        ),
    ),
    # MSN's kNN and linear evaluations read the backbone's class token, not the projection.
    # Not in the default compare: it needs a ViT (minutes an epoch on a CPU), as the cifar10-vit compare gives.
    compare=False,
    smoke=SmokeRun(metric="knn_backbone_top1"),
    multi_crop=True,
    accumulation=Accumulation.REFUSED,
    accumulation_note="Sinkhorn-Knopp balances the targets, and the mean-entropy term averages the anchors, over the "
    "whole batch",
    torchrun=Torchrun.RUNS,
    torchrun_note="each process draws the dropped tokens of its own images, from a stream of its own",
)


@register_method("msn", SPEC)
class MSN(Method):
    """Masked anchors against an unmasked target through shared prototypes (Assran et al., 2022, Eq. 1-3).

    Args:
        settings: the ``msn`` section.
        encoder: a timm ViT backbone + projection head.
        context: D (the projection's width), the planned steps (the target's momentum schedule) and the process
            group (Sinkhorn-Knopp and the mean assignment over every process's batch; the prototypes' gradients
            averaged).
    """

    views = 2

    def __init__(self, settings: MSNSettings, encoder: nn.Module, context: BuildContext) -> None:
        super().__init__(encoder, context)
        self.options = settings
        vision_transformer(encoder, "msn")
        self.momentum = momentum_schedule(
            "msn.base_momentum", settings.base_momentum, settings.final_momentum, context, linear_momentum
        )
        self.prototypes = Prototypes(settings.prototypes, context.embedding_dim)
        self.target = frozen_copy(encoder)

    def shared_modules(self) -> list[nn.Module]:
        return [self.prototypes]

    def _anchors(self, images: Tensor) -> Tensor:
        """(A, D) embeddings of anchor views, ``msn.patch_drop`` of each one's patch tokens dropped."""
        rows, cols = patch_grid(vision_transformer(self.encoder, "msn"), images)
        keep = random_token_mask(images.shape[0], rows * cols, self.options.patch_drop, images.device).keep
        return self.encode_tokens(images, MaskedPatches(keep=keep, patch_head=False)).embedding

    def training_step(self, batch: Batch) -> StepOutput:
        o, b = self.options, batch.size
        images = self.views_of(batch)
        anchors = [self._anchors(images[b:])] + [self._anchors(group) for group in batch.groups[1:]]
        anchor_scores = prototype_scores(torch.cat(anchors), self.prototypes.weight)
        with torch.no_grad():
            target_scores = prototype_scores(self.target(images[:b]), self.prototypes.weight)
        group = None if self.distributed else LOCAL
        targets = msn_targets(target_scores, o.temperature, o.sharpen_temperature, o.sinkhorn_iterations, group)
        repeated = targets.repeat(anchor_scores.shape[0] // b, 1)
        loss_msn = msn_cross_entropy(anchor_scores, repeated, o.temperature)
        probs = torch.softmax(anchor_scores / o.temperature, dim=1)
        mean = probs.mean(dim=0)
        if self.distributed:
            mean = all_reduce_sum(mean) / world_size()
        loss_memax = mean_entropy_penalty(mean)
        momentum = self.momentum(batch.step)
        terms: dict[str, Tensor | float] = {
            "loss_msn": loss_msn.detach(),
            "loss_memax": loss_memax.detach(),
            "target_entropy": entropies(targets).mean(),
            "anchor_entropy": entropies(probs.detach()).mean(),
            "momentum": momentum,
        }
        return StepOutput(loss_msn + o.memax_weight * loss_memax, terms, momentum)

    @torch.no_grad()
    def after_step(self, outputs: Sequence[StepOutput]) -> None:
        if outputs:  # once per optimiser step: the target encoder follows
            ema_update_(self.target, self.encoder, outputs[-1].update)


__all__ = ["MSN", "MSNSettings", "Prototypes", "SPEC"]
