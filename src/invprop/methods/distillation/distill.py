"""Distillation from a frozen pretrained teacher (LightlyTrain's ``distillation``, v1) as a training method:
``method: distill``.

A pretrained timm model, frozen (``distill.teacher``, its weights from timm's cache or hub or from
``distill.teacher_file``), and the student (the run's backbone) see the same view of each image, mixed with another
image of the batch (mixup, one weight per batch: :func:`invprop.core.feature_distillation.mixup`). The student's
pooled feature, projected linearly to the teacher's width, and the teacher's, both L2-normalised, are compared
through their similarities to a queue of the teacher's recent embeddings: the student's softmax over the queue
matches the teacher's (:func:`invprop.core.feature_distillation.queue_distillation_loss`). The teacher sees the
image resized to ``distill.teacher_image_size`` and normalised as its weights expect. ``model.head`` takes no part
(frozen); evaluation and export read the student's backbone. The teacher is not saved in checkpoints: a run rebuilds
it from its settings.

The default recipe is LightlyTrain's (LARS, lr 1.8 at batch 1536 scaled by the square root of the batch ratio,
weight decay 1e-6, a warm-up of a tenth of the run up to 10 epochs, then a cosine to 0.001 of the peak, the
gradients' global norm clipped to 1).

Not done: LightlyTrain's dense variants (v2: the teacher's last two blocks' patch tokens regressed by MSE; v3: the
global term plus a row-wise KL between the patch tokens' self-similarities) and its strong augmentation (the
dataset's own is used).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invprop.core.feature_distillation import mixup, next_queue, queue_distillation_loss, queue_size_for
from invprop.errors import ConfigError
from invprop.methods.method import Batch, BuildContext, Method, StepOutput
from invprop.methods.spec import Accumulation, Curve, MethodSpec, Recipe, SmokeRun, Torchrun, register_method
from invprop.models.timm_backbone import TimmBackbone, TimmOptions, model_input
from invprop.settings import AT_LEAST_ONE, AT_LEAST_TWO, POSITIVE, Reference, setting

#: The setting that gives the teacher's local weights file.
TEACHER_FILE_KEY = "distill.teacher_file"
#: The setting that gives the teacher ViT's patch side (errors about it name this, not the student's).
TEACHER_PATCH_KEY = "distill.teacher_patch_size"
#: The standard deviation of the projection's truncated-normal initialisation (LightlyTrain's ``trunc_normal_``).
PROJECTION_INIT_STD = 0.02


@dataclass
class DistillSettings:
    """The ``distill`` section."""

    teacher: str = setting(
        "timm:vit_base_patch14_dinov2.lvd142m", "the frozen teacher: timm:NAME of a model with pretrained weights "
        "(DINOv2's ViT-B/14 by default)",
    )  # fmt: skip
    teacher_file: str | None = setting(None, "a local weights file of the teacher (offline); null: timm's cache or "
                                             "hub")  # fmt: skip
    teacher_pretrained: bool = setting(True, "load the teacher's weights; false: a randomly initialised teacher (for "
                                             "tests of the machinery only)")  # fmt: skip
    teacher_image_size: int = setting(224, "the side the teacher sees the images at (resized)", bounds=AT_LEAST_ONE)
    teacher_patch_size: int | None = setting(None, "the teacher ViT's patch side as it was trained (an invprop run's "
                                                   "model.patch_size); null: the model's own", bounds=AT_LEAST_ONE)  # fmt: skip
    teacher_mean: list[float] | None = setting(None, "the per-channel mean of the images the teacher was trained on "
                                                     "(an invprop run's: its data's); null: the timm model's (ImageNet's "
                                                     "for most)")  # fmt: skip
    teacher_std: list[float] | None = setting(None, "the per-channel standard deviation of those images; null: the "
                                                    "timm model's")  # fmt: skip
    queue_size: int | None = setting(None, "teacher embeddings in the queue; null: by the dataset's size, as "
                                           "LightlyTrain's auto (512 for 1,347 images, 8,192 past 20,000)",
                                     bounds=AT_LEAST_TWO)  # fmt: skip
    temperature: float = setting(0.07, "tau of both softmaxes over the queue", bounds=POSITIVE)
    mixup: bool = setting(True, "mix each image with another of the batch before both networks see it")


_LIGHTLY = "LightlyTrain (lightly-ai/lightly-train), distillation"
_ARGS = f"{_LIGHTLY}, DistillationArgs"
SPEC = MethodSpec(
    "distill: a student matches a frozen pretrained teacher's similarities to a queue of its embeddings (LightlyTrain)",
    DistillSettings,
    section="distill",
    section_help="the teacher, its queue and the mixup",
    recipes={
        "*": Recipe(
            f"{_LIGHTLY}, DistillationLARSArgs and Method (LARS lr 1.8 at batch 1536, scaled by sqrt(batch/1536), "
            "momentum 0.9, weight decay 1e-6 but on norms and biases, trust 0.001; a warm-up of min(10, epochs/10) "
            "epochs, then a cosine to 0.001 of the peak; the gradients' norm clipped to 1.0)",
            {
                "optimizer": "lars",
                "lr": 1.8,
                "lr_scaling": "sqrt",
                "reference_batch": 1536,
                "momentum": 0.9,
                "weight_decay": 1e-6,
                "exclude_norm_and_bias": True,
                "lars_eta": 0.001,
                "lars_clip": False,
                "schedule": "cosine",
                "warmup_epochs": 10,
                "warmup_share": 0.1,
                "warmup_start_lr": 0.0,
                "final_lr": 0.001,
                "final_weight_decay": None,
                "clip_grad": 1.0,
                "clip_scope": "global",
            },
        ),
    },
    presets={"*": {"model": {"head": "linear"}}},
    references={
        "*": {
            "distill.teacher": Reference(
                "timm:vit_base_patch14_dinov2.lvd142m",
                f"{_ARGS} (teacher dinov2/vitb14-noreg: DINOv2's ViT-B/14 without registers)",
            ),
            "distill.teacher_image_size": Reference(224, f"{_LIGHTLY}, its transform (RandomResizedCrop 224)"),
            "distill.temperature": Reference(0.07, f"{_ARGS} (temperature)"),
            "distill.mixup": Reference(True, f"{_LIGHTLY} (_mixup_data, lambda ~ U(0, 1) per batch)"),
        },  # fmt: skip
    },
    headline=("distill.teacher", "distill.queue_size", "distill.temperature"),
    terms=("loss_distill", "mixup_weight"),
    curves=(Curve("KL between the teacher's and the student's similarities to the queue", ("loss_distill",)),),
    # Not in the default compare: it needs a pretrained teacher (a download, or distill.teacher_file).
    compare=False,
    smoke=SmokeRun(
        metric="knn_backbone_top1",
        # No model hub on CI: the short run's teacher is timm's small test ResNet, randomly initialised.
        settings={"distill": {"teacher": "timm:test_resnet", "teacher_pretrained": False, "teacher_image_size": 8}},
    ),
    trains_head=False,
    accumulation=Accumulation.RUNS,
    accumulation_note="each chunk draws its own mixup and updates the queue",
    torchrun=Torchrun.RUNS,
    torchrun_note="each process keeps its own queue and mixup, as LightlyTrain's",
)


class FrozenTeacher:
    """The teacher, outside the method's modules (not trained, not saved, always in eval mode), moved to the
    training device on first use; images arrive normalised for the student and are re-normalised for it."""

    def __init__(self, settings: DistillSettings, context: BuildContext) -> None:
        if settings.teacher_file is not None and not Path(settings.teacher_file).expanduser().is_file():
            raise ConfigError(f"distill.teacher_file {settings.teacher_file} does not exist; point it at the weights "
                              f"file of {settings.teacher}")  # fmt: skip
        if not settings.teacher_pretrained and settings.teacher_file is not None:
            raise ConfigError("distill.teacher_file is set but distill.teacher_pretrained is false: set it to true")
        patch = settings.teacher_patch_size
        options = TimmOptions(pretrained=settings.teacher_pretrained, pretrained_file=settings.teacher_file,
                              patch_size=patch)  # fmt: skip
        side = settings.teacher_image_size if patch is not None else None  # a ViT built for its own images
        teacher = TimmBackbone(settings.teacher, context.in_channels, side, options, TEACHER_FILE_KEY,
                               TEACHER_PATCH_KEY)  # fmt: skip
        self.net = teacher.eval().requires_grad_(False)
        channels = context.in_channels
        self.side = settings.teacher_image_size
        self.data_mean = _per_channel(context.mean, channels, 0.0)
        self.data_std = _per_channel(context.std, channels, 1.0)
        for key, given in (("teacher_mean", settings.teacher_mean), ("teacher_std", settings.teacher_std)):
            if given is not None and len(given) != channels:
                raise ConfigError(f"distill.{key} has {len(given)} value(s) but the images have {channels} channel(s); "
                                  f"give one per channel")  # fmt: skip
        if settings.teacher_std is not None and min(settings.teacher_std) <= 0:
            raise ConfigError(f"distill.teacher_std must be positive, got {settings.teacher_std}")
        # The teacher's own statistics: given, or its timm model's; a random teacher (tests) sees raw pixels.
        own = model_input(settings.teacher) if settings.teacher_pretrained else None
        self.mean = _per_channel(_chosen(settings.teacher_mean, own.mean if own else ()), channels, 0.0)
        self.std = _per_channel(_chosen(settings.teacher_std, own.std if own else ()), channels, 1.0)

    @property
    def width(self) -> int:
        return int(self.net.feature_dim)

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        """(B, D_T) L2-normalised teacher embeddings of student-normalised (B, C, H, W) images."""
        device = images.device
        self.net.to(device)
        raw = images.float() * self.data_std.to(device) + self.data_mean.to(device)
        if raw.shape[-1] != self.side or raw.shape[-2] != self.side:
            raw = F.interpolate(raw, size=(self.side, self.side), mode="bilinear", align_corners=False)
        return F.normalize(self.net((raw - self.mean.to(device)) / self.std.to(device)).float(), dim=1)


def _chosen(given: Sequence[float] | None, model_values: Sequence[float]) -> Sequence[float]:
    """The values given in the settings, else the model's."""
    return given if given is not None else model_values


def _per_channel(values: Sequence[float], channels: int, default: float) -> Tensor:
    """(1, C, 1, 1) per-channel values, the first C of ``values`` (a model's RGB statistics for grey images: the red
    channel's, as before); ``default`` where fewer are known."""
    chosen = list(values)[:channels] if len(values) >= channels else [default] * channels
    return torch.tensor(chosen, dtype=torch.float32).view(1, channels, 1, 1)


@register_method("distill", SPEC)
class Distill(Method):
    """A student's similarities to a queue of a frozen teacher's embeddings match the teacher's (LightlyTrain v1).

    Args:
        settings: the ``distill`` section.
        encoder: the student (backbone + a head that takes no part).
        context: N (the automatic queue size), the channels and the normalisation of the batches.
    """

    queue: Tensor  # (Q, D_T) the latest teacher embeddings, newest first (a buffer: saved and resumed)
    teacher: FrozenTeacher  # a plain attribute: not a submodule, not trained, not saved

    def __init__(self, settings: DistillSettings, encoder: nn.Module, context: BuildContext) -> None:
        super().__init__(encoder, context)
        self.options = settings
        if settings.queue_size is not None and settings.queue_size >= context.num_samples:
            raise ConfigError(f"distill.queue_size={settings.queue_size} is not below the {context.num_samples} "
                              "training images; lower it (null chooses by the dataset's size)")  # fmt: skip
        rows = settings.queue_size or queue_size_for(context.num_samples)  # (LightlyTrain's 16 under 50 images)
        teacher = FrozenTeacher(settings, context)
        self.teacher = teacher
        width = int(getattr(encoder, "feature_dim"))
        self.projection = nn.Linear(width, teacher.width)
        nn.init.trunc_normal_(self.projection.weight, std=PROJECTION_INIT_STD)
        self.register_buffer("queue", torch.zeros(rows, teacher.width))

    def shared_modules(self) -> list[nn.Module]:
        return [self.projection]

    def training_step(self, batch: Batch) -> StepOutput:
        o = self.options
        images = self.views_of(batch)
        weight = float(torch.rand(())) if o.mixup else 1.0
        order = torch.randperm(images.shape[0]).to(images.device)
        mixed = mixup(images, weight, order)
        teacher_embeddings = self.teacher(mixed)
        features = self.encode_maps(mixed, 1).maps.pooled
        student = F.normalize(self.projection(features.float()), dim=1)
        queue = next_queue(self.queue, teacher_embeddings)  # the batch joins the queue before the loss
        loss = queue_distillation_loss(student, teacher_embeddings, queue, o.temperature)
        terms: dict[str, Tensor | float] = {"loss_distill": loss.detach(), "mixup_weight": weight}
        return StepOutput(loss, terms, teacher_embeddings)

    @torch.no_grad()
    def after_step(self, outputs: Sequence[StepOutput]) -> None:
        for out in outputs:  # each batch's teacher embeddings join the queue, in order (accumulated chunks too)
            self.queue.copy_(next_queue(self.queue, out.update))


__all__ = ["Distill", "DistillSettings", "FrozenTeacher", "SPEC"]
