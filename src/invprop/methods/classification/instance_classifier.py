"""Parametric instance classification (Liu et al., 2021) as a training method: ``method: instance-classifier``.

An encoder (backbone + 2-layer MLP head) and a :class:`invprop.core.cosine_classifier.CosineInstanceClassifier`
with one class per training image, trained on two augmented views per image with a full cosine softmax. The
paper's two training devices are switches: the contrastive prior (``classifier.prior``) and hard-class label
smoothing (``classifier.smoothing``, ``classifier.hard_classes``). In a distributed run the weight matrix is always
split by rows over the processes (the paper's hybrid parallelism) while the encoder is data-parallel. Its settings
are one section, ``classifier`` (:class:`ClassifierSettings`); it warms up for 10% of the epochs by default.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import Tensor, nn

from invprop.core.cosine_classifier import CosineInstanceClassifier
from invprop.distributed.collectives import all_gather_tensor, world_size
from invprop.distributed.partition import RowPartition
from invprop.methods.method import Batch, BuildContext, Method, StepOutput
from invprop.methods.spec import Ablation, Curve, MethodSpec, Variant, register_method
from invprop.settings import AT_LEAST_ONE, POSITIVE, UNIT_INTERVAL, Reference, setting

logger = logging.getLogger(__name__)

#: The paper's warm-up, in epochs (Liu et al., 2021); a shorter run warms up for at most optim.warmup_share of it.
WARMUP_EPOCHS = 10


@dataclass
class ClassifierSettings:
    """The ``classifier`` section."""

    temperature: float = setting(0.2, "tau of the instance classifier's cosine softmax", bounds=POSITIVE)
    smoothing: float = setting(
        0.2, "alpha of hard-class label smoothing (0 = off: plain one-hot targets)", bounds=UNIT_INTERVAL
    )
    hard_classes: int = setting(
        100, "k, hard classes per instance for label smoothing (mined once per epoch)", bounds=AT_LEAST_ONE
    )
    prior: bool = setting(True, "contrastive-prior initialisation of the weights (false = Gaussian random)")
    views: int = setting(2, "augmented views per image in each batch", bounds=AT_LEAST_ONE)
    mining_chunk: int = setting(
        4096, "rows per block of the hard-class search (memory O(chunk x N))", bounds=AT_LEAST_ONE, resumable=True
    )


_LIU = "Liu et al. (2021)"
#: The paper's values (ImageNet is the only dataset it trains on).
REFERENCES: dict[str, dict[str, Reference]] = {
    "*": {
        "model.head": Reference("mlp", f"{_LIU}: a two-layer MLP head, as SimCLR's"),
        "model.embedding_dim": Reference(128, _LIU),
        "classifier.temperature": Reference(0.2, _LIU),
        "classifier.smoothing": Reference(0.2, f"{_LIU}, Table 2"),
        "classifier.hard_classes": Reference(100, f"{_LIU}, Table 2"),
        "classifier.prior": Reference(True, _LIU),
        "classifier.views": Reference(2, _LIU),
        "optim.warmup_epochs": Reference(WARMUP_EPOCHS, _LIU),
    },
    "imagenet": {
        "epochs": Reference(1000, f"{_LIU} (the headline result; Table 2: 200)"),
        "optim.batch_size": Reference(4096, _LIU),
        "optim.lr": Reference(0.48, f"{_LIU}, for batch 4096"),
        "optim.weight_decay": Reference(1e-4, _LIU),
    },
}
#: Why a default differs from the paper's value.
DEVIATIONS: dict[str, dict[str, str]] = {
    "*": {
        "model.head": "the shared default (mlp_bn), which measured better than the authors' head for InvP "
        "(docs/results.md); for the classifier, the without-MLP-head row of its ablation is the measured comparison",
    },
    "imagenet": {
        "epochs": "the shared ImageNet schedule, InvP's 800 epochs, so that the two compare at equal length",
        "optim.batch_size": "4096 needs the paper's many-GPU hybrid parallelism; 256 fits one machine",
        "optim.lr": "the paper's 0.48 scaled linearly to batch 256: 0.48 x 256 / 4096 = 0.03",
    },
}

#: The component table (Liu et al., 2021, Table 2): MLP head, contrastive prior and hard-class smoothing. The paper's
#: first row (58.6) has the prior and the smoothing but no MLP head.
ABLATION = Ablation(
    {
        "classifier-no-mlp": Variant(
            "instance classifier without the MLP head (linear head), prior and smoothing",
            {
                "method": "instance-classifier",
                "model": {"head": "linear"},
                "classifier": {"prior": True, "smoothing": 0.2},
            },
        ),  # fmt: skip
        "classifier": Variant(
            "instance classifier, Gaussian init, no smoothing",
            {"method": "instance-classifier", "classifier": {"prior": False, "smoothing": 0.0}},
        ),
        "classifier-prior": Variant(
            "instance classifier, contrastive prior",
            {"method": "instance-classifier", "classifier": {"prior": True, "smoothing": 0.0}},
        ),
        "classifier-smoothing": Variant(
            "instance classifier, hard-class label smoothing",
            {"method": "instance-classifier", "classifier": {"prior": False, "smoothing": 0.2}},
        ),
        "classifier-prior-smoothing": Variant(
            "instance classifier, prior and smoothing (the full method)",
            {"method": "instance-classifier", "classifier": {"prior": True, "smoothing": 0.2}},
        ),
    },
    paper={"classifier": {"temperature": 0.2}},
    paper_source="Liu et al. (2021), Table 2: tau 0.2 with a two-layer MLP head (model.head, mlp_bn unless set); the "
    "rows switch components off",
)


@register_method(
    "instance-classifier",
    MethodSpec(
        "parametric instance classification with a cosine softmax over every image (Liu et al., 2021)",
        ClassifierSettings,
        section="classifier",
        section_help="the N-way cosine classifier",
        references=REFERENCES,
        deviations=DEVIATIONS,
        headline=("classifier.temperature", "classifier.smoothing", "classifier.hard_classes"),
        terms=("loss_cls",),
        curves=(Curve("classification loss", ("loss_cls",)),),
        presets={"*": {"optim": {"warmup_epochs": WARMUP_EPOCHS}}},
        ablation=ABLATION,
    ),
)
class InstanceClassification(Method):
    """Cross-entropy of every view against its image's class (Liu et al., 2021, Eq. 1, or Eq. 3 with smoothing).

    Args:
        settings: the ``classifier`` section: the N-way cosine classifier (``temperature``, ``smoothing``,
            ``hard_classes``), ``views`` per image in a batch, ``prior`` (initialise the weights with the contrastive
            prior before epoch 1, else keep the Gaussian init) and ``mining_chunk`` (query rows per block of the
            per-epoch hard-class search).
        encoder: backbone + head.
        context: N (the classes), D, and the process group (which splits the weight rows).
    """

    def __init__(self, settings: ClassifierSettings, encoder: nn.Module, context: BuildContext) -> None:
        super().__init__(encoder, context)
        num_samples = context.num_samples
        if settings.smoothing > 0 and settings.hard_classes >= num_samples:
            logger.info("classifier.hard_classes=%d is not below the %d training images: every other image is a hard "
                        "class", settings.hard_classes, num_samples)  # fmt: skip
        partition = RowPartition.split(num_samples) if context.distributed else RowPartition.whole(num_samples)
        classifier = CosineInstanceClassifier(
            num_samples,
            context.embedding_dim,
            temperature=settings.temperature,
            smoothing=settings.smoothing,
            hard_classes=min(settings.hard_classes, num_samples - 1),
            partition=partition,
        )
        self.classifier = classifier
        self.views = settings.views
        self.prior = settings.prior
        self.mining_chunk = settings.mining_chunk
        part = classifier.partition
        if part.is_split:
            # The encoder's gradients are averaged over processes by DistributedDataParallel; the weight rows' come
            # from the sum of the processes' losses (every process computes the whole batch's loss), so divide them
            # by W to follow the same objective.
            processes = world_size(part.group)
            classifier.weight.register_hook(lambda grad: grad / processes)

    def training_step(self, batch: Batch) -> StepOutput:
        embeddings = self.encode(self.views_of(batch))
        classes = batch.indices.to(embeddings.device).repeat(self.views)
        loss = self.classifier(embeddings, classes).mean()
        return StepOutput(loss, {"loss_cls": loss.detach()})

    @torch.no_grad()
    def before_training(self, batches: Iterable[tuple[Tensor, Tensor]]) -> None:
        """The contrastive prior: one pass of the randomly initialised encoder over the data, no gradients,
        BatchNorm in training mode (its running statistics update); each image's weight row becomes its feature.

        ``batches`` yields this process's ``(indices, images)`` of one view; rows of images it never yields keep
        their Gaussian initialisation.
        """
        if not self.prior:
            return
        was_training = self.encoder.training
        self.encoder.train()
        part = self.classifier.partition
        for indices, images in batches:
            features = nn.functional.normalize(self.encoder(images).float(), dim=1)
            indices = indices.to(features.device)
            if part.is_split:
                indices, features = all_gather_tensor(indices, part.group), all_gather_tensor(features, part.group)
            self.classifier.set_rows(indices, features)
        self.encoder.train(was_training)

    @torch.no_grad()
    def on_epoch_start(self, epoch: int) -> dict[str, float]:
        """Hard-class mining on the current weights (once per epoch, before its first step)."""
        self.classifier.mine_hard_classes(self.mining_chunk)
        return {}

    def sharded_parameters(self) -> list[tuple[nn.Parameter, RowPartition]]:
        return [(self.classifier.weight, self.classifier.partition)]


__all__ = ["ABLATION", "DEVIATIONS", "REFERENCES", "ClassifierSettings", "InstanceClassification"]
