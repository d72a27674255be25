"""RotNet (Gidaris, Singh & Komodakis, 2018) as a training method: ``method: rotnet``.

Each image of the batch is fed in its four rotations (0, 90, 180, 270 degrees; :func:`invprop.data.pretext.rotated_batch`)
and a linear classifier on the encoder's embedding (backbone + ``model.head``, which plays the paper's
classifier layers) predicts the rotation. Its settings are one section, ``rotnet`` (it has no tuned value: the
loss is a four-way cross-entropy). Non-square images are refused when the first batch arrives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from invprop.data.pretext import ROTATIONS, rotated_batch
from invprop.methods.base import METHODS, BuildContext, Method, MethodSpec, StepOutput
from invprop.methods.field_published import FIELD_DEVIATIONS, FIELD_PRESETS, FIELD_REFERENCES
from invprop.settings import section, setting


@dataclass
class RotNetOptions:
    """The ``rotnet`` section."""

    accuracy: bool = setting(True, "log the rotation accuracy of each step's batch (rotation_accuracy)")


@dataclass
class RotNetSettings:
    rotnet: RotNetOptions = section(RotNetOptions, "RotNet's rotation prediction")


class RotNet(Method):
    """Four-way rotation prediction (Gidaris et al., 2018, Eq. 1-2: the mean cross-entropy over the rotations).

    Args:
        encoder: backbone + head.
        embedding_dim: D, the classifier's input.
        options: the ``rotnet`` section.
        distributed: average the classifier's gradients over processes.
    """

    def __init__(
        self, encoder: nn.Module, embedding_dim: int, options: RotNetOptions, distributed: bool = False
    ) -> None:
        super().__init__(encoder, distributed)
        self.options = options
        self.classifier = nn.Linear(embedding_dim, ROTATIONS)

    def shared_modules(self) -> list[nn.Module]:
        return [self.classifier]

    def training_step(self, indices: Tensor, images: Tensor, epoch: int) -> StepOutput:
        rotated, labels = rotated_batch(images)
        logits = self.classifier(self.encode(rotated))
        loss = F.cross_entropy(logits.float(), labels)
        terms = {"loss_rotation": loss.detach()}
        if self.options.accuracy:
            terms["rotation_accuracy"] = (logits.detach().argmax(dim=1) == labels).float().mean()
        return StepOutput(loss, terms)


def build_rotnet(settings: RotNetSettings, encoder: nn.Module, context: BuildContext) -> RotNet:
    return RotNet(encoder, context.embedding_dim, settings.rotnet, context.distributed)


METHODS.register("rotnet")(
    MethodSpec(
        "RotNet: predict which of four rotations an image was given (Gidaris et al., 2018)",
        RotNetSettings,
        build_rotnet,
        presets=FIELD_PRESETS["rotnet"],
        headline=("model.head",),
        references=FIELD_REFERENCES["rotnet"],
        deviations=FIELD_DEVIATIONS["rotnet"],
    )
)

__all__ = ["RotNet", "RotNetOptions", "RotNetSettings", "build_rotnet"]
