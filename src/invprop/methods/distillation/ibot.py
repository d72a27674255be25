"""iBOT (Zhou et al., 2022) as a training method: ``method: ibot``.

DINO's self-distillation of the class token across crops (:mod:`invprop.methods.distillation.dino`), plus masked
image modelling by self-distillation: in each full-size view of the student, a block-wise share of the patches is
replaced by a learnable mask token (:func:`invprop.core.token_masks.block_masks`; half the views are left whole), and
the student's output on each hidden patch token must match the teacher's on the same token of the whole view
(:func:`invprop.core.self_distillation.masked_token_loss`). One head, DINO's three-layer GELU MLP to a bottleneck and
a weight-normalised last layer, maps the class token and every patch token (the authors' ``iBOTHead``; its last layer
shared between them, ``ibot.shared_head``, as in their ViT-S command); the class and patch outputs are centred by
running means of their own and sharpened by temperatures of their own. The teacher, the momentum copy of the
backbone, the head and the last layers, sees the whole full-size views; the student sees the masked ones and every
multi-crop small crop (``data.small_crops``, not masked). The backbone is a timm ViT.

DINOv2's additions (Oquab et al., 2023) are options: ``ibot.centering=sinkhorn`` balances the teacher's class-token
outputs, and its outputs on the hidden patch tokens, by Sinkhorn-Knopp instead of centring them; ``ibot.koleo_weight``
(DINOv2: 0.1) adds the KoLeo term on the student backbone's class tokens of each masked full-size view.

The default recipe is the authors' ViT-S/16 command (AdamW 5e-4 x B/256, weight decay 0.04 to 0.4 on a cosine,
10 warm-up epochs, cosine to 1e-6, each gradient tensor clipped to 3); no CIFAR recipe is published, and CIFAR and
digits take it too.

Not done: the student's stochastic depth (drop path 0.1); ``pred_start_epoch`` (masking from the first epoch, the
authors' default); DINO's asymmetric augmentations (as for ``dino``); with a timm ViT, timm's exemption of the
position embedding and class token from weight decay applies (iBOT exempts only biases and 1-D parameters).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invprop.core.diagnostics import entropies
from invprop.core.momentum import ema_update_, frozen_copy
from invprop.core.self_distillation import (
    TEACHER_CENTERINGS,
    dino_loss,
    koleo_loss,
    masked_token_loss,
    next_center,
    teacher_temperature,
)
from invprop.core.token_masks import block_masks
from invprop.distributed.collectives import LOCAL, all_reduce_sum, world_size
from invprop.errors import ConfigError
from invprop.methods.citations import SOLO
from invprop.methods.distillation.dinov2_options import whole_batch_refusal
from invprop.methods.method import Batch, BuildContext, Method, StepOutput
from invprop.methods.spec import Accumulation, Curve, MethodSpec, Recipe, SmokeRun, Torchrun, register_method
from invprop.methods.two_views import momentum_schedule
from invprop.models.vit_tokens import MaskedPatches, MaskToken, patch_grid, vision_transformer
from invprop.models.weight_norm import WeightNormLinear
from invprop.settings import (
    AT_LEAST_TWO,
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    UNIT_INTERVAL,
    Reference,
    setting,
)

#: The views the teacher sees and the student masks: iBOT's two global crops.
GLOBAL_VIEWS = 2


@dataclass
class IBOTSettings:
    """The ``ibot`` section."""

    prototypes: int = setting(8192, "K, the class token's outputs of the weight-normalised last layer",
                              bounds=AT_LEAST_TWO)  # fmt: skip
    patch_prototypes: int = setting(8192, "K', the patch tokens' outputs (= K when ibot.shared_head)",
                                    bounds=AT_LEAST_TWO)  # fmt: skip
    shared_head: bool = setting(True, "the class and patch tokens share the last layer (the authors' shared_head)")
    norm_last_layer: bool = setting(False, "the last layers' row norms stay 1 (the authors' norm_last_layer)")
    student_temperature: float = setting(0.1, "tau_s of the student's softmax", bounds=POSITIVE)
    teacher_temperature: float = setting(0.07, "tau_t of the teacher's class-token softmax after its warm-up",
                                         bounds=POSITIVE)  # fmt: skip
    warmup_teacher_temperature: float = setting(0.04, "tau_t at the first epoch of its linear warm-up",
                                                bounds=POSITIVE)  # fmt: skip
    patch_teacher_temperature: float = setting(0.07, "tau'_t of the teacher's patch-token softmax after its warm-up",
                                               bounds=POSITIVE)  # fmt: skip
    warmup_patch_teacher_temperature: float = setting(0.04, "tau'_t at the first epoch of its linear warm-up",
                                                      bounds=POSITIVE)  # fmt: skip
    warmup_teacher_temperature_epochs: int = setting(30, "epochs of both teacher temperatures' warm-up",
                                                     bounds=NON_NEGATIVE)  # fmt: skip
    center_momentum: float = setting(0.9, "m of the class-token centre's running mean", bounds=FRACTION)
    patch_center_momentum: float = setting(0.9, "m of the patch-token centre's running mean", bounds=FRACTION)
    base_momentum: float = setting(0.996, "the teacher's momentum at the first step", bounds=FRACTION)
    final_momentum: float = setting(1.0, "the teacher's momentum at the last step (cosine schedule)", bounds=FRACTION)
    freeze_last_layer_epochs: int = setting(1, "epochs at the start during which the last layers take no gradient",
                                            bounds=NON_NEGATIVE)  # fmt: skip
    cls_weight: float = setting(1.0, "lambda_1, the class-token loss's weight", bounds=NON_NEGATIVE)
    mim_weight: float = setting(1.0, "lambda_2, the masked patch-token loss's weight", bounds=NON_NEGATIVE)
    mask_probability: float = setting(0.5, "the share of the student's full-size views that are masked at all",
                                      bounds=FRACTION)  # fmt: skip
    mask_ratio_min: float = setting(0.1, "the least share of a masked view's patches hidden", bounds=UNIT_INTERVAL)
    mask_ratio_max: float = setting(0.5, "the largest share of a masked view's patches hidden", bounds=UNIT_INTERVAL)
    centering: str = setting(
        "softmax", "how the teacher's outputs become targets: softmax (iBOT's, of the centred outputs) or sinkhorn "
        "(DINOv2's Sinkhorn-Knopp balance, of the class tokens and of the hidden patch tokens, over every process's "
        "batch)", choices=TEACHER_CENTERINGS,
    )  # fmt: skip
    koleo_weight: float = setting(
        0.0, "the weight of DINOv2's KoLeo term on the student backbone's class tokens of each full-size view "
        "(DINOv2: 0.1; 0: off), within each process's batch under torchrun, as DINOv2's", bounds=NON_NEGATIVE,
    )  # fmt: skip
    mask_aspect_min: float = setting(0.3, "the least aspect ratio of a masked block (the largest: its inverse)",
                                     bounds=POSITIVE)  # fmt: skip


class IBOTUpdate(NamedTuple):
    """What a step hands to :meth:`IBOT.after_step`: the teacher's momentum, the step's mean teacher outputs over
    every process -- of the class token (K,) and of the patch tokens (K',), each image's tokens averaged first --
    and the number of rows they are the means of."""

    momentum: float
    mean: Tensor
    patch_mean: Tensor
    rows: int


_ZHOU = "Zhou et al. (2022), iBOT"
_CODE = f"{_ZHOU}, the authors' main_ibot.py"
_README = f"{_ZHOU}, the authors' README ViT-S/16 command"
_NO_CIFAR = "no iBOT recipe or setting for CIFAR is published (solo-learn and lightly have none)"
_SHORT = "a run of tens of epochs, not iBOT's 800: no warm-up, as solo-learn's CIFAR DINO (dino.yaml)"
SPEC = MethodSpec(
    "iBOT: DINO's class-token self-distillation plus masked patch-token self-distillation (Zhou et al., 2022)",
    IBOTSettings,
    section="ibot",
    section_help="iBOT's last layers, temperatures, centres, teacher and masks",
    recipes={
        "*": Recipe(
            f"{_README} (AdamW 5e-4 x B/256, weight decay 0.04 to 0.4 on a cosine but on biases and 1-D parameters, "
            "10 warm-up epochs from 0, cosine to 1e-6, each gradient tensor clipped to 3.0)",
            {
                "optimizer": "adamw",
                "lr": 5e-4,
                "lr_scaling": "linear",
                "reference_batch": 256,
                "betas": [0.9, 0.999],
                "weight_decay": 0.04,
                "final_weight_decay": 0.4,
                "exclude_norm_and_bias": True,
                "schedule": "cosine",
                "warmup_epochs": 10,
                "warmup_start_lr": 0.0,
                "final_lr": 1e-6 / 5e-4,
                "clip_grad": 3.0,
            },
        ),
    },
    presets={
        "*": {
            "model": {
                "backbone": "timm:vit_small_patch16_224",
                "head": "mlp3_gelu",
                "hidden_dim": 2048,
                "embedding_dim": 256,
            },
            "data": {"small_crop_scale": [0.05, 0.25]},
        },  # fmt: skip
        "cifar10": {
            "model": {"backbone": "timm:vit_tiny_patch16_224", "patch_size": 4},
            "ibot": {
                "prototypes": 4096,
                "patch_prototypes": 4096,
                "warmup_teacher_temperature": 0.07,
                "warmup_patch_teacher_temperature": 0.07,
                "warmup_teacher_temperature_epochs": 0,
            },
        },  # fmt: skip
        "digits": {
            "model": {
                "backbone": "timm:vit_tiny_patch16_224",
                "patch_size": 2,
                "hidden_dim": 512,
                "embedding_dim": 128,
            },
            "ibot": {
                "prototypes": 512,
                "patch_prototypes": 512,
                "warmup_teacher_temperature": 0.07,
                "warmup_patch_teacher_temperature": 0.07,
                "warmup_teacher_temperature_epochs": 0,
                "base_momentum": 0.99,
            },
        },  # fmt: skip
    },
    references={
        "*": {
            "ibot.prototypes": Reference(8192, f"{_README} (--out_dim 8192)"),
            "ibot.patch_prototypes": Reference(8192, f"{_CODE} (patch_out_dim)"),
            "ibot.shared_head": Reference(True, f"{_README} (--shared_head true)"),
            "ibot.norm_last_layer": Reference(False, f"{_README} (--norm_last_layer false)"),
            "ibot.student_temperature": Reference(0.1, f"{_CODE} (iBOTLoss student_temp)"),
            "ibot.teacher_temperature": Reference(0.07, f"{_README} (--teacher_temp 0.07)"),
            "ibot.warmup_teacher_temperature": Reference(0.04, f"{_CODE} (warmup_teacher_temp)"),
            "ibot.patch_teacher_temperature": Reference(0.07, f"{_CODE} (teacher_patch_temp)"),
            "ibot.warmup_patch_teacher_temperature": Reference(0.04, f"{_CODE} (warmup_teacher_patch_temp)"),
            "ibot.warmup_teacher_temperature_epochs": Reference(30, f"{_README} (--warmup_teacher_temp_epochs 30)"),
            "ibot.center_momentum": Reference(0.9, f"{_CODE} (center_momentum)"),
            "ibot.patch_center_momentum": Reference(0.9, f"{_CODE} (center_momentum2)"),
            "ibot.base_momentum": Reference(0.996, f"{_CODE} (momentum_teacher)"),
            "ibot.final_momentum": Reference(1.0, f"{_CODE} (cosine to 1)"),
            "ibot.freeze_last_layer_epochs": Reference(1, f"{_CODE} (freeze_last_layer)"),
            "ibot.cls_weight": Reference(1.0, f"{_CODE} (lambda1)"),
            "ibot.mim_weight": Reference(1.0, f"{_CODE} (lambda2)"),
            "ibot.mask_probability": Reference(0.5, f"{_README} (--pred_ratio 0 0.3: ratio 0 or not, at random)"),
            "ibot.mask_ratio_min": Reference(0.1, f"{_README} (--pred_ratio 0 0.3 --pred_ratio_var 0 0.2)"),
            "ibot.mask_ratio_max": Reference(0.5, f"{_README} (--pred_ratio 0 0.3 --pred_ratio_var 0 0.2)"),
            "ibot.centering": Reference("softmax", f"{_CODE} (iBOTLoss; DINOv2's ViT-L/g configs: sinkhorn_knopp)"),
            "ibot.koleo_weight": Reference(0.0, f"{_CODE} (no KoLeo term; DINOv2's koleo_loss_weight: 0.1)"),
            "ibot.mask_aspect_min": Reference(0.3, f"{_CODE} (pred_aspect_ratio 0.3 to 1/0.3)"),
            "model.backbone": Reference("timm:vit_small_patch16_224", f"{_README} (--arch vit_small)"),
            "model.hidden_dim": Reference(2048, f"{_ZHOU}, the authors' iBOTHead (hidden_dim)"),
            "model.embedding_dim": Reference(256, f"{_ZHOU}, the authors' iBOTHead (bottleneck_dim)"),
            "data.small_crops": Reference(10, f"{_README} (--local_crops_number 10)"),
            "data.small_crop_scale": Reference([0.05, 0.25], f"{_README} (--local_crops_scale 0.05 0.25)"),
        },
    },
    deviations={
        "*": {
            "data.small_crops": "multi-crop is opt-in (data.small_crops), as for DINO and SwAV here: 10 local crops "
            "more than double a step's cost",
        },
        "cifar10": {
            "model.backbone": "ViT-Tiny with 4x4 patches of the 32x32 images (64 tokens), the cifar10-vit preset's; "
            + _NO_CIFAR,
            "ibot.prototypes": f"{SOLO.format('dino')}'s 4,096 outputs for CIFAR; {_NO_CIFAR}",
            "ibot.patch_prototypes": f"{SOLO.format('dino')}'s 4,096 outputs for CIFAR; {_NO_CIFAR}",
            "ibot.warmup_teacher_temperature": _SHORT,
            "ibot.warmup_patch_teacher_temperature": _SHORT,
            "ibot.warmup_teacher_temperature_epochs": _SHORT,
        },
        "digits": {
            "model.backbone": "ViT-Tiny with 2x2 patches of the 8x8 digits (16 patches), the digits ViT row's",
            "model.hidden_dim": "scaled down with ViT-Tiny (192 wide) on the 8x8 digits",
            "model.embedding_dim": "scaled down with ViT-Tiny (192 wide) on the 8x8 digits",
            "ibot.prototypes": "scaled with solo-learn's CIFAR DINO value (4,096) to the 1,347 digits images",
            "ibot.patch_prototypes": "scaled with solo-learn's CIFAR DINO value (4,096) to the 1,347 digits images",
            "ibot.warmup_teacher_temperature": _SHORT,
            "ibot.warmup_patch_teacher_temperature": _SHORT,
            "ibot.warmup_teacher_temperature_epochs": _SHORT,
            "ibot.base_momentum": "short digits runs: the teacher must follow within a few hundred steps",
        },
    },
    headline=("ibot.prototypes", "ibot.mask_ratio_max", "data.small_crops"),
    terms=(
        "loss_cls",
        "loss_mim",
        "loss_koleo",
        "teacher_entropy",
        "patch_teacher_entropy",
        "masked_share",
        "teacher_temperature",
        "momentum",
    ),  # fmt: skip
    curves=(
        Curve(
            "iBOT's class-token and masked patch-token cross-entropies, the KoLeo term's share of the loss (0: off)",
            ("loss_cls", "loss_mim", "loss_koleo"),
        ),
        Curve(
            "entropy of the teacher's distributions (collapse to one output: 0; to uniform: log K)",
            ("teacher_entropy", "patch_teacher_entropy"),
            "nats",
        ),
        Curve("share of the student's patches hidden", ("masked_share",), "share"),
    ),  # fmt: skip
    # As DINO's: iBOT's kNN and linear evaluations read the backbone's class token, not the head's bottleneck.
    # Not in the default compare: it needs a ViT (minutes an epoch on a CPU), as the cifar10-vit compare gives.
    compare=False,
    smoke=SmokeRun(metric="knn_backbone_top1"),
    multi_crop=True,
    accumulation_refused_by=whole_batch_refusal("ibot"),
    accumulation=Accumulation.RUNS,
    accumulation_note="each chunk draws its own masks",
    torchrun=Torchrun.RUNS,
    torchrun_note="each process draws the masks of its own images, from a stream of its own",
)


def _token_entropy(probs: Tensor, hidden: Tensor) -> Tensor:
    """The mean entropy (nats) of the (B, N, K) distributions of the hidden tokens (NaN when none is hidden)."""
    per_token = entropies(probs)
    return (per_token * hidden).sum() / hidden.sum()


@register_method("ibot", SPEC)
class IBOT(Method):
    """Self-distillation of the class token across crops and of the hidden patch tokens of masked views (Zhou et al.,
    2022, Eq. 1-3 and Alg. 1).

    Args:
        settings: the ``ibot`` section.
        encoder: a timm ViT backbone + head (the student, up to its bottleneck).
        context: D (the bottleneck's width), the planned steps (the teacher's momentum schedule) and the process
            group (the last layers' and the mask token's gradients are averaged; the centres are means over every
            process's batch).
    """

    views = GLOBAL_VIEWS
    center: Tensor  # (K,) the running mean of the teacher's class-token outputs
    patch_center: Tensor  # (K',) the running mean of the teacher's patch-token outputs

    def __init__(self, settings: IBOTSettings, encoder: nn.Module, context: BuildContext) -> None:
        super().__init__(encoder, context)
        if settings.shared_head and settings.patch_prototypes != settings.prototypes:
            raise ConfigError(f"ibot.shared_head=true gives the patch tokens the class token's last layer, so "
                              f"ibot.patch_prototypes ({settings.patch_prototypes}) must equal ibot.prototypes "
                              f"({settings.prototypes}): set them equal or ibot.shared_head=false")  # fmt: skip
        if settings.mask_ratio_min > settings.mask_ratio_max:
            raise ConfigError(f"ibot.mask_ratio_min ({settings.mask_ratio_min}) is above ibot.mask_ratio_max "
                              f"({settings.mask_ratio_max}): swap them")  # fmt: skip
        self.options = settings
        net = vision_transformer(encoder, "ibot")
        self.momentum = momentum_schedule(
            "ibot.base_momentum", settings.base_momentum, settings.final_momentum, context
        )
        self.mask_token = MaskToken(int(net.embed_dim))
        d = context.embedding_dim
        self.last_layer = WeightNormLinear(d, settings.prototypes, settings.norm_last_layer)
        self.patch_layer = (
            None if settings.shared_head else WeightNormLinear(d, settings.patch_prototypes, settings.norm_last_layer)
        )
        self.teacher = frozen_copy(encoder)
        self.teacher_last_layer = frozen_copy(self.last_layer)
        self.teacher_patch_layer = None if self.patch_layer is None else frozen_copy(self.patch_layer)
        self.register_buffer("center", torch.zeros(settings.prototypes))
        self.register_buffer("patch_center", torch.zeros(settings.patch_prototypes))

    def shared_modules(self) -> list[nn.Module]:
        return [m for m in (self.mask_token, self.last_layer, self.patch_layer) if m is not None]

    def _patch_scores(self, patches: Tensor, teacher: bool, detached: bool = False) -> Tensor:
        """(B, N, K') scores of (B, N, D) patch-token embeddings by the student's or the teacher's patch layer."""
        layer = (
            (self.teacher_patch_layer or self.teacher_last_layer) if teacher else (self.patch_layer or self.last_layer)
        )
        return layer(F.normalize(patches.float(), dim=-1), detached=detached)

    def training_step(self, batch: Batch) -> StepOutput:
        o, b = self.options, batch.size
        images = self.views_of(batch)
        rows, cols = patch_grid(vision_transformer(self.encoder, "ibot"), images)
        hidden = block_masks(
            GLOBAL_VIEWS * b,
            rows,
            cols,
            o.mask_probability,
            (o.mask_ratio_min, o.mask_ratio_max),
            (o.mask_aspect_min, 1 / o.mask_aspect_min),
        )
        hidden = hidden.to(images.device)
        frozen = batch.epoch <= o.freeze_last_layer_epochs
        masked = self.encode_tokens(images, MaskedPatches(hidden, self.mask_token.embedding))
        student = list(self.last_layer(F.normalize(masked.embedding.float(), dim=1), detached=frozen).split(b))
        for group in batch.groups[1:]:  # the small crops: the class token only, nothing hidden
            student += self.last_layer(F.normalize(self.encode(group).float(), dim=1), detached=frozen).split(b)
        student_patches = self._patch_scores(masked.patches, teacher=False, detached=frozen)
        with torch.no_grad():
            whole = self.teacher(images, tokens=MaskedPatches())
            teacher = self.teacher_last_layer(F.normalize(whole.embedding.float(), dim=1))
            teacher_patches = self._patch_scores(whole.patches, teacher=True)
        tau = teacher_temperature(batch.epoch, o.warmup_teacher_temperature_epochs,
                                  o.warmup_teacher_temperature, o.teacher_temperature)  # fmt: skip
        tau_patch = teacher_temperature(batch.epoch, o.warmup_teacher_temperature_epochs,
                                        o.warmup_patch_teacher_temperature, o.patch_teacher_temperature)  # fmt: skip
        centre, processes = TEACHER_CENTERINGS[o.centering], None if self.distributed else LOCAL
        probs = list(centre(teacher, self.center, tau, processes).split(b))
        # The patch targets of the hidden tokens only: the loss reads no other, and a balance is over those.
        patch_probs = torch.zeros_like(teacher_patches)
        patch_probs[hidden] = centre(teacher_patches[hidden], self.patch_center, tau_patch, processes)
        loss_cls = dino_loss(student, probs, o.student_temperature)
        loss_mim = torch.stack([
            masked_token_loss(s, t, h, o.student_temperature)
            for s, t, h in zip(student_patches.split(b), patch_probs.split(b), hidden.split(b), strict=True)
        ]).mean()  # fmt: skip
        loss = o.cls_weight * loss_cls + o.mim_weight * loss_mim
        koleo: Tensor | float = 0.0  # the KoLeo term's share of the loss: 0 when off
        if o.koleo_weight:
            koleo = o.koleo_weight * torch.stack([koleo_loss(view) for view in masked.features.split(b)]).sum()
            loss = loss + koleo
        sums = torch.cat([teacher.sum(dim=0), teacher_patches.mean(dim=1).sum(dim=0)])
        if self.distributed:
            sums = all_reduce_sum(sums)
        total_rows = teacher.shape[0] * (world_size() if self.distributed else 1)
        momentum = self.momentum(batch.step)
        terms: dict[str, Tensor | float] = {
            "loss_cls": loss_cls.detach(), "loss_mim": loss_mim.detach(),
            "teacher_entropy": torch.stack([entropies(p).mean() for p in probs]).mean(),
            "loss_koleo": koleo.detach() if isinstance(koleo, Tensor) else koleo,
            "patch_teacher_entropy": _token_entropy(patch_probs, hidden), "masked_share": hidden.float().mean(),
            "teacher_temperature": tau, "momentum": momentum,
        }  # fmt: skip
        means = sums / total_rows
        update = IBOTUpdate(momentum, means[: o.prototypes], means[o.prototypes :], total_rows)
        return StepOutput(loss, terms, update)

    @torch.no_grad()
    def after_step(self, outputs: Sequence[StepOutput]) -> None:
        if not outputs:
            return
        # Once per optimiser step: the teacher follows the student, and each centre moves towards the mean teacher
        # output of the step's batches.
        update = outputs[-1].update
        ema_update_(self.teacher, self.encoder, update.momentum)
        ema_update_(self.teacher_last_layer, self.last_layer, update.momentum)
        if self.teacher_patch_layer is not None and self.patch_layer is not None:
            ema_update_(self.teacher_patch_layer, self.patch_layer, update.momentum)
        rows = sum(out.update.rows for out in outputs)

        def step_mean(field: str) -> Tensor:
            return torch.stack([getattr(out.update, field) * out.update.rows for out in outputs]).sum(dim=0) / rows

        self.center.copy_(next_center(self.center, step_mean("mean"), self.options.center_momentum))
        self.patch_center.copy_(
            next_center(self.patch_center, step_mean("patch_mean"), self.options.patch_center_momentum)
        )


__all__ = ["IBOT", "IBOTSettings", "IBOTUpdate", "SPEC"]
