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
from invprop.methods.base import METHODS, BuildContext, Method, MethodSpec, StepOutput
from invprop.methods.published import CLASSIFIER_DEVIATIONS, CLASSIFIER_REFERENCES
from invprop.settings import AT_LEAST_ONE, POSITIVE, UNIT_INTERVAL, section, setting

logger = logging.getLogger(__name__)

#: The share of the epochs warmed up by default (the paper warms up for 10 epochs).
WARMUP_SHARE = 0.1


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


@dataclass
class InstanceClassifierSettings:
    """The settings of the instance classifier: one section of the run's settings."""

    classifier: ClassifierSettings = section(ClassifierSettings, "the N-way cosine classifier")


class InstanceClassification(Method):
    """Cross-entropy of every view against its image's class (Liu et al., 2021, Eq. 1, or Eq. 3 with smoothing).

    Args:
        encoder: backbone + head.
        classifier: the N-way cosine classifier.
        views: augmented views per image in a batch (the engine stacks them view-major: (views x B, C, H, W)).
        prior: initialise the weights with the contrastive prior before epoch 1 (else keep the Gaussian init).
        mining_chunk: query rows per block of the per-epoch hard-class search.
    """

    def __init__(
        self,
        encoder: nn.Module,
        classifier: CosineInstanceClassifier,
        views: int = 2,
        prior: bool = True,
        mining_chunk: int = 4096,
    ) -> None:
        super().__init__(encoder)
        if views < 1:
            raise ValueError(f"views must be at least 1, got {views}")
        self.classifier = classifier
        self.views = views
        self.prior = prior
        self.mining_chunk = mining_chunk
        part = classifier.partition
        if part.is_split:
            # The encoder's gradients are averaged over processes by DistributedDataParallel; the weight rows' come
            # from the sum of the processes' losses (every process computes the whole batch's loss), so divide them
            # by W to follow the same objective.
            processes = world_size(part.group)
            classifier.weight.register_hook(lambda grad: grad / processes)

    def training_step(self, indices: Tensor, images: Tensor, epoch: int) -> StepOutput:
        embeddings = self.encode(images)
        classes = indices.to(embeddings.device).repeat(self.views)
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
    def on_epoch_start(self, epoch: int) -> None:
        """Hard-class mining on the current weights (once per epoch, before its first step)."""
        self.classifier.mine_hard_classes(self.mining_chunk)

    def sharded_parameters(self) -> list[tuple[nn.Parameter, RowPartition]]:
        return [(self.classifier.weight, self.classifier.partition)]


def build_instance_classifier(
    settings: InstanceClassifierSettings, encoder: nn.Module, context: BuildContext
) -> InstanceClassification:
    """The instance classifier with ``classifier.*`` settings; split over the processes of a distributed run."""
    options = settings.classifier
    num_samples = context.num_samples
    if options.smoothing > 0 and options.hard_classes >= num_samples:
        logger.info(
            "classifier.hard_classes=%d is not below the %d training images: every other image is a hard class",
            options.hard_classes,
            num_samples,
        )
    partition = RowPartition.split(num_samples) if context.distributed else RowPartition.whole(num_samples)
    classifier = CosineInstanceClassifier(
        num_samples,
        context.embedding_dim,
        temperature=options.temperature,
        smoothing=options.smoothing,
        hard_classes=min(options.hard_classes, num_samples - 1),
        partition=partition,
    )
    return InstanceClassification(
        encoder, classifier, views=options.views, prior=options.prior, mining_chunk=options.mining_chunk
    )


METHODS.register("instance-classifier")(
    MethodSpec(
        "parametric instance classification with a cosine softmax over every image (Liu et al., 2021)",
        InstanceClassifierSettings,
        build_instance_classifier,
        warmup_share=WARMUP_SHARE,
        headline=("classifier.temperature", "classifier.smoothing", "classifier.hard_classes"),
        references=CLASSIFIER_REFERENCES,
        deviations=CLASSIFIER_DEVIATIONS,
    )
)


__all__ = ["ClassifierSettings", "InstanceClassification", "InstanceClassifierSettings", "build_instance_classifier"]
