"""DINO (Caron et al., 2021) as a training method: ``method: dino``.

A student (backbone + ``model.head``, DINO's three-layer GELU MLP to a 256-wide bottleneck, then L2 normalisation
and a weight-normalised layer to K outputs, :class:`invprop.models.weight_norm.WeightNormLinear`) and a teacher,
the momentum copy of all of it. The teacher sees the two full-size views; the student sees them and every
multi-crop small crop (``data.small_crops``; DINO's 8 local crops are opt-in, as SwAV's are). Each teacher view's
output, centred by a running mean and sharpened by a low temperature
(:func:`invprop.core.self_distillation.teacher_distribution`), is the target of the student's softmax on every
other view (:func:`invprop.core.self_distillation.dino_loss`). After each optimiser step the teacher follows the
student with a momentum raised from ``dino.base_momentum`` to ``dino.final_momentum`` on a cosine over the run's
steps, and the centre moves towards the step's mean teacher output
(:func:`invprop.core.self_distillation.next_center`). The teacher's temperature warms up linearly per epoch; the
last layer takes no gradient during the first ``dino.freeze_last_layer_epochs`` epochs.

DINOv2's additions (Oquab et al., 2023) are options: ``dino.centering=sinkhorn`` balances the teacher's outputs by
Sinkhorn-Knopp instead of centring them (:func:`invprop.core.self_distillation.balanced_teacher_distribution`), and
``dino.koleo_weight`` (DINOv2: 0.1) adds the KoLeo term on the student backbone's features of each full-size view
(:func:`invprop.core.self_distillation.koleo_loss`).

The default recipe is the authors' ResNet-50 command (SGD 0.03 x B/256, weight decay 1e-4, each gradient tensor
clipped to 3.0); their ViT-S/16 recipe is ``optim.optimizer=adamw optim.lr=0.0005 optim.weight_decay=0.04
optim.final_weight_decay=0.4 optim.final_lr=0.002 data.small_crop_scale=[0.05,0.4]`` (the weight-decay schedule and
the per-tensor clipping are the optimiser's: ``optim.final_weight_decay``, ``optim.clip_grad``).

Not done: DINO's asymmetric augmentations (blur on one global view, solarisation on the other) and its global
crops' scale (0.4-1; 0.14-1 for ResNet-50): the views are drawn alike from the dataset's augmentation, as for every
two-view method here; the student's stochastic depth (ViT drop path 0.1); with a timm ViT, timm's exemption of the
position embedding and class token from weight decay applies (DINO exempts only biases and 1-D parameters).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invprop.core.diagnostics import entropies
from invprop.core.momentum import ema_update_, frozen_copy
from invprop.core.self_distillation import TEACHER_CENTERINGS, dino_loss, koleo_loss, next_center, teacher_temperature
from invprop.distributed.collectives import LOCAL, all_reduce_sum, world_size
from invprop.methods.citations import DIGITS_WIDTH, SOLO
from invprop.methods.distillation.dinov2_options import whole_batch_refusal
from invprop.methods.method import Batch, BuildContext, Method, StepOutput
from invprop.methods.recipes import paper_sgd, solo_lars
from invprop.methods.spec import Curve, MethodSpec, SmokeRun, register_method
from invprop.methods.two_views import momentum_schedule
from invprop.models.weight_norm import WeightNormLinear
from invprop.settings import AT_LEAST_TWO, FRACTION, NON_NEGATIVE, POSITIVE, Reference, setting

#: The views the teacher sees: DINO's two global crops.
TEACHER_VIEWS = 2


@dataclass
class DINOSettings:
    """The ``dino`` section."""

    prototypes: int = setting(65536, "K, the outputs of the weight-normalised last layer", bounds=AT_LEAST_TWO)
    norm_last_layer: bool = setting(True, "the last layer's row norms stay 1 (the authors' norm_last_layer)")
    student_temperature: float = setting(0.1, "tau_s of the student's softmax", bounds=POSITIVE)
    teacher_temperature: float = setting(0.04, "tau_t of the teacher's softmax after its warm-up", bounds=POSITIVE)
    warmup_teacher_temperature: float = setting(0.04, "tau_t at the first epoch of its linear warm-up",
                                                bounds=POSITIVE)  # fmt: skip
    warmup_teacher_temperature_epochs: int = setting(0, "epochs of the teacher temperature's warm-up",
                                                     bounds=NON_NEGATIVE)  # fmt: skip
    center_momentum: float = setting(0.9, "m of the centre's running mean", bounds=FRACTION)
    base_momentum: float = setting(0.996, "the teacher's momentum at the first step", bounds=FRACTION)
    final_momentum: float = setting(1.0, "the teacher's momentum at the last step (cosine schedule)", bounds=FRACTION)
    freeze_last_layer_epochs: int = setting(1, "epochs at the start during which the last layer takes no gradient",
                                            bounds=NON_NEGATIVE)  # fmt: skip
    centering: str = setting(
        "softmax", "how the teacher's outputs become targets: softmax (DINO's, of the centred outputs) or sinkhorn "
        "(DINOv2's Sinkhorn-Knopp balance over every process's batch)", choices=TEACHER_CENTERINGS,
    )  # fmt: skip
    koleo_weight: float = setting(
        0.0, "the weight of DINOv2's KoLeo term on the student backbone's features of each full-size view (DINOv2: "
        "0.1; 0: off), within each process's batch under torchrun, as DINOv2's", bounds=NON_NEGATIVE,
    )  # fmt: skip


class DINOUpdate(NamedTuple):
    """What a step hands to :meth:`DINO.after_step`: the teacher's momentum, and the step's mean teacher output
    (K,) over every process with the number of rows it is the mean of."""

    momentum: float
    mean: Tensor
    rows: int


_CARON = "Caron et al. (2021), DINO"
_CODE = f"{_CARON}, the authors' main_dino.py"
SPEC = MethodSpec(
    "DINO: a student matches a momentum teacher's centred, sharpened outputs across crops (Caron et al., 2021)",
    DINOSettings,
    section="dino",
    section_help="DINO's last layer, temperatures, centre and teacher",
    recipes={
        "*": paper_sgd(
            f"{_CODE}, its README's ResNet-50 command (SGD 0.03 x B/256, weight decay 1e-4 constant on all but biases "
            "and 1-D parameters, 10 warm-up epochs, cosine to 1e-6 -- 3.3e-5 of the peak at batch 256 --, each "
            "gradient tensor clipped to 3.0)",
            lr=0.03,
            weight_decay=1e-4,
            exclude_norm_and_bias=True,
            warmup_epochs=10,
            final_lr=1e-6 / 0.03,
            clip_grad=3.0,
        ),
        "cifar10": solo_lars("dino", lr=0.3, weight_decay=1e-6),
        "digits": solo_lars("dino", lr=0.3, weight_decay=1e-6),
    },
    presets={
        "*": {
            "model": {"head": "mlp3_gelu", "hidden_dim": 2048, "embedding_dim": 256},
            "data": {"small_crop_scale": [0.05, 0.14]},
        },
        "cifar10-vit": {"data": {"small_crop_scale": [0.05, 0.4]}},
        "cifar10": {
            "dino": {
                "prototypes": 4096,
                "teacher_temperature": 0.07,
                "warmup_teacher_temperature": 0.07,
                "base_momentum": 0.9995,
            },
        },  # fmt: skip
        "digits": {
            "model": {"hidden_dim": 512, "embedding_dim": 128},
            "dino": {
                "prototypes": 512,
                "teacher_temperature": 0.07,
                "warmup_teacher_temperature": 0.07,
                "base_momentum": 0.99,
            },
        },  # fmt: skip
    },
    references={
        "*": {
            "dino.prototypes": Reference(65536, f"{_CODE} (out_dim)"),
            "dino.norm_last_layer": Reference(True, f"{_CODE} (norm_last_layer)"),
            "dino.student_temperature": Reference(0.1, f"{_CODE} (DINOLoss student_temp)"),
            "dino.teacher_temperature": Reference(0.04, f"{_CODE} (teacher_temp)"),
            "dino.warmup_teacher_temperature": Reference(0.04, f"{_CODE} (warmup_teacher_temp)"),
            "dino.warmup_teacher_temperature_epochs": Reference(0, f"{_CODE} (warmup_teacher_temp_epochs)"),
            "dino.center_momentum": Reference(0.9, f"{_CODE} (DINOLoss center_momentum)"),
            "dino.base_momentum": Reference(0.996, f"{_CODE} (momentum_teacher)"),
            "dino.final_momentum": Reference(1.0, f"{_CODE} (cosine to 1)"),
            "dino.freeze_last_layer_epochs": Reference(1, f"{_CODE} (freeze_last_layer)"),
            "dino.centering": Reference("softmax", f"{_CODE} (DINOLoss; DINOv2's ViT-L/g configs: sinkhorn_knopp)"),
            "dino.koleo_weight": Reference(0.0, f"{_CODE} (no KoLeo term; DINOv2's koleo_loss_weight: 0.1)"),
            "model.hidden_dim": Reference(2048, f"{_CARON}, the authors' DINOHead (hidden_dim)"),
            "model.embedding_dim": Reference(256, f"{_CARON}, the authors' DINOHead (bottleneck_dim)"),
            "data.small_crops": Reference(8, f"{_CODE} (local_crops_number)"),
            "data.small_crop_scale": Reference([0.05, 0.14], f"{_CODE}, its README's ResNet-50 command"),
        },
    },
    deviations={
        "*": {
            "data.small_crops": "multi-crop is opt-in (data.small_crops), as for SwAV here: 8 local crops more than "
            "double a step's cost",
        },
        "cifar10-vit": {"data.small_crop_scale": f"{_CODE} (local_crops_scale, its ViT default)"},
        "cifar10": {
            "dino.prototypes": SOLO.format("dino"),
            "dino.teacher_temperature": SOLO.format("dino"),
            "dino.warmup_teacher_temperature": f"{SOLO.format('dino')}: no warm-up, 0.07 throughout",
            "dino.base_momentum": SOLO.format("dino"),
            "data.small_crops": f"{SOLO.format('dino')} trains CIFAR with the two 32-pixel views",
        },
        "digits": {
            "dino.prototypes": "scaled with solo-learn's CIFAR value (4,096) to the 1,347 digits images",
            "dino.teacher_temperature": SOLO.format("dino"),
            "dino.warmup_teacher_temperature": f"{SOLO.format('dino')}: no warm-up, 0.07 throughout",
            "dino.base_momentum": "short digits runs: the teacher must follow within a few hundred steps",
            "model.hidden_dim": DIGITS_WIDTH,
            "model.embedding_dim": DIGITS_WIDTH,
        },
    },
    headline=("dino.prototypes", "dino.teacher_temperature", "data.small_crops"),
    terms=("loss_dino", "loss_koleo", "teacher_entropy", "teacher_temperature", "momentum"),
    curves=(
        Curve("DINO's cross-entropy and the KoLeo term's share of the loss (0: off)", ("loss_dino", "loss_koleo")),
        Curve(
            "entropy of the teacher's distribution (collapse to one output: 0; to uniform: log K)",
            ("teacher_entropy",),
            "nats",
        ),
        Curve("teacher temperature and momentum", ("teacher_temperature", "momentum"), "value"),
    ),  # fmt: skip
    # DINO's kNN and linear evaluations read the backbone (its class token), not the head's bottleneck; in a
    # 3-epoch digits run the bottleneck's teacher is still near uniform (entropy ~6.2 of log 512 = 6.24) while the
    # backbone's kNN is above the untrained one's (measured on this project's 2-core machine, 2026-12-06).
    smoke=SmokeRun(metric="knn_backbone_top1"),
    multi_crop=True,
    accumulation_refused_by=whole_batch_refusal("dino"),
)


@register_method("dino", SPEC)
class DINO(Method):
    """Self-distillation from a momentum teacher across crops (Caron et al., 2021, Eq. 1-4 and Alg. 1).

    Args:
        settings: the ``dino`` section.
        encoder: backbone + head (the student, up to its bottleneck).
        context: D (the bottleneck's width), the planned steps (the teacher's momentum schedule), and the process
            group (the last layer's gradients are averaged; the centre is the mean over every process's batch).
    """

    views = TEACHER_VIEWS
    center: Tensor  # (K,) the running mean of the teacher's outputs (a buffer: saved and resumed)

    def __init__(self, settings: DINOSettings, encoder: nn.Module, context: BuildContext) -> None:
        super().__init__(encoder, context)
        self.options = settings
        self.momentum = momentum_schedule(
            "dino.base_momentum", settings.base_momentum, settings.final_momentum, context
        )
        self.last_layer = WeightNormLinear(context.embedding_dim, settings.prototypes, settings.norm_last_layer)
        self.teacher = frozen_copy(encoder)
        self.teacher_last_layer = frozen_copy(self.last_layer)
        self.register_buffer("center", torch.zeros(settings.prototypes))

    def shared_modules(self) -> list[nn.Module]:
        return [self.last_layer]

    def training_step(self, batch: Batch) -> StepOutput:
        o, b = self.options, batch.size
        images = self.views_of(batch)
        frozen = batch.epoch <= o.freeze_last_layer_epochs
        koleo: Tensor | float = 0.0  # the KoLeo term's share of the loss: 0 when off
        if o.koleo_weight:
            first = self.encode_maps(batch.groups[0], 1)
            embeddings = [first.embedding, *(self.encode(group) for group in batch.groups[1:])]
            koleo = o.koleo_weight * torch.stack([koleo_loss(view) for view in first.maps.pooled.split(b)]).sum()
        else:
            embeddings = [self.encode(group) for group in batch.groups]
        student = [
            view
            for embedding in embeddings
            for view in self.last_layer(F.normalize(embedding.float(), dim=1), detached=frozen).split(b)
        ]
        with torch.no_grad():
            teacher = self.teacher_last_layer(F.normalize(self.teacher(images).float(), dim=1))
        tau = teacher_temperature(batch.epoch, o.warmup_teacher_temperature_epochs,
                                  o.warmup_teacher_temperature, o.teacher_temperature)  # fmt: skip
        targets = TEACHER_CENTERINGS[o.centering](teacher, self.center, tau, None if self.distributed else LOCAL)
        probs = list(targets.split(b))
        loss = dino_loss(student, probs, o.student_temperature)
        entropy = torch.stack([entropies(p).mean() for p in probs]).mean()
        rows = teacher.shape[0] * (world_size() if self.distributed else 1)
        total = all_reduce_sum(teacher.sum(dim=0)) if self.distributed else teacher.sum(dim=0)
        momentum = self.momentum(batch.step)
        terms: dict[str, Tensor | float] = {
            "loss_dino": loss.detach(), "loss_koleo": koleo.detach() if isinstance(koleo, Tensor) else koleo,
            "teacher_entropy": entropy, "teacher_temperature": tau, "momentum": momentum,
        }  # fmt: skip
        if isinstance(koleo, Tensor):
            loss = loss + koleo
        return StepOutput(loss, terms, DINOUpdate(momentum, total / rows, rows))

    @torch.no_grad()
    def after_step(self, outputs: Sequence[StepOutput]) -> None:
        if not outputs:
            return
        # Once per optimiser step: the teacher follows the student, and the centre moves towards the mean teacher
        # output of the step's batches (of one batch, the authors' update; the same with accumulated chunks).
        update = outputs[-1].update
        ema_update_(self.teacher, self.encoder, update.momentum)
        ema_update_(self.teacher_last_layer, self.last_layer, update.momentum)
        rows = sum(out.update.rows for out in outputs)
        mean = torch.stack([out.update.mean * out.update.rows for out in outputs]).sum(dim=0) / rows
        self.center.copy_(next_center(self.center, mean, self.options.center_momentum))


__all__ = ["DINO", "DINOSettings", "DINOUpdate", "SPEC"]
