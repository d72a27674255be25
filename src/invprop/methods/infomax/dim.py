"""Deep InfoMax, local (Hjelm, Fedorov, Lavoie-Marchildon, Grewal, Bachman, Trischler & Bengio, ICLR 2019) as a
training method: ``method: dim``.

The encoder's global vector (its embedding) and every location of one of its backbone's feature maps
(``dim.local_stage``, counted from the last: CIFAR's 8 x 8 map, as the paper's DCGAN encoder) are embedded by two
small critic networks -- an MLP for the global vector, 1x1 convolutions for the local features -- to ``dim.units``
dimensions, and every global embedding is scored against every location of every image of the batch by a dot product
(:func:`invprop.core.mutual_information.local_global_scores`). The loss maximises an estimate of the mutual
information between an image's global vector and its own locations, the other images' locations serving as
negatives: the Jensen-Shannon estimate by default (:func:`~invprop.core.mutual_information.jsd_mutual_information`),
InfoNCE with ``dim.estimator=infonce`` (:func:`~invprop.core.mutual_information.local_infonce_loss`).

JSD is the default because it is the authors' code's default and the paper's finding that it is the estimator least
sensitive to the number of negatives -- a batch of 64 is all there is (InfoNCE did better downstream in some of the
paper's tables, so it is a setting). Not here: the paper's optional global-MI term (alpha) and the prior matching
(gamma), which trains a discriminator adversarially; the authors' public code trains the local objective alone by
default. In a distributed run the critics' embeddings are gathered: the negatives are those of the global batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor, nn

from invprop.core.mutual_information import jsd_mutual_information, local_global_scores, local_infonce_loss
from invprop.distributed.collectives import all_gather_rows
from invprop.errors import ConfigError
from invprop.methods.method import Batch, BuildContext, Method, StepOutput
from invprop.methods.recipes import paper_sgd
from invprop.methods.spec import Accumulation, Curve, MethodSpec, register_method
from invprop.models.dense_head import DenseProjector
from invprop.models.feature_maps import map_channels
from invprop.models.heads import HEADS
from invprop.settings import AT_LEAST_ONE, Reference, setting

_PAPER = "Hjelm et al. (2019), Deep InfoMax"
_CODE = "Hjelm et al. (2019), the authors' rdevon/DIM with cortex"


def minus_jsd(scores: Tensor) -> Tensor:
    """The loss of the Jensen-Shannon estimator: minus the estimate, which training maximises."""
    return -jsd_mutual_information(scores)


#: The mutual-information estimators ``dim.estimator`` may name, each as the loss it gives on (B, B, S) scores.
ESTIMATORS: dict[str, Callable[[Tensor], Tensor]] = {"jsd": minus_jsd, "infonce": local_infonce_loss}


@dataclass
class DIMSettings:
    """The ``dim`` section."""

    estimator: str = setting("jsd", "the mutual-information estimator: jsd (Jensen-Shannon) or infonce",
                             choices=ESTIMATORS)  # fmt: skip
    local_stage: int = setting(
        2, "the backbone's feature map that gives the local features, counted from the last (1: the map that is "
        "pooled; 2: the one before it, 8 x 8 on CIFAR)", bounds=AT_LEAST_ONE,
    )  # fmt: skip
    units: int = setting(2048, "the width the critics embed the global vector and the local features to",
                         bounds=AT_LEAST_ONE)  # fmt: skip


SPEC = MethodSpec(
    "Deep InfoMax (local): the global vector against every location of a feature map, Jensen-Shannon mutual "
    "information (Hjelm et al., 2019)",
    DIMSettings,
    section="dim",
    section_help="Deep InfoMax's estimator, local feature map and critics",
    accumulation=Accumulation.REFUSED,
    accumulation_note="the other images of the batch are the negatives",
    presets={
        "*": {"model": {"head": "mlp_bn", "hidden_dim": 1024, "embedding_dim": 64}},
        "digits": {"model": {"hidden_dim": 256}, "dim": {"units": 256}},
    },
    recipes={
        "*": paper_sgd(
            f"{_CODE}: Adam, lr 1e-4, betas 0.5 and 0.999, batch 64, no weight decay, no schedule",
            lr=1e-4,
            weight_decay=0.0,
            lr_scaling="none",
            reference_batch=64,
            optimizer="adam",
            betas=[0.5, 0.999],
            schedule="constant",
        ),
    },  # fmt: skip
    references={
        "*": {
            "dim.estimator": Reference("jsd", f"{_CODE}, LocalDIM (measure JSD); {_PAPER}, Sec. 3.1"),
            "dim.units": Reference(2048, f"{_CODE}, LocalDIM (mi_units)"),
            "dim.local_stage": Reference(2, f"{_CODE}, the DCGAN encoder's 8 x 8 x 128 map on 32 x 32 images"),
            "model.embedding_dim": Reference(64, f"{_CODE}, the global vector's 64 units"),
            "model.hidden_dim": Reference(1024, f"{_CODE}, the DCGAN encoder's fc 1024"),
            "optim.batch_size": Reference(64, f"{_CODE}, the training batch"),
            "epochs": Reference(1000, f"{_CODE}, the CIFAR-10 command"),
        },
    },
    deviations={
        "*": {
            "optim.batch_size": "the dataset preset's batch, which every method of a compare shares",
            "epochs": "the dataset preset's length, which every method of a compare shares",
        },
        "digits": {"dim.units": "scaled down with the 256-wide digits network", "model.hidden_dim": "the same"},
    },
    headline=("dim.estimator", "dim.local_stage", "dim.units"),
    terms=("loss_mi",),
    curves=(Curve("minus the mutual-information estimate (JSD) or InfoNCE", ("loss_mi",)),),
    compare=False,
)


@register_method("dim", SPEC)
class DeepInfoMax(Method):
    """Local DIM (Hjelm et al., 2019, Sec. 3.1-3.2): the global embedding against every location of the local map.

    Args:
        settings: the ``dim`` section.
        encoder: backbone + head; the head's output is the global vector, the backbone gives the local map.
        context: D, the global vector's width; in a distributed run the critics' embeddings are gathered.
    """

    def __init__(self, settings: DIMSettings, encoder: nn.Module, context: BuildContext) -> None:
        backbone = getattr(encoder, "backbone", encoder)
        stages = len(getattr(backbone, "stage_channels", ()))
        if 0 < stages < settings.local_stage:
            raise ConfigError(f"dim.local_stage={settings.local_stage}, but the backbone has {stages} feature-map "
                              f"stage(s): give 1 to {stages}")  # fmt: skip
        channels = map_channels(backbone, -settings.local_stage)
        super().__init__(encoder, context)
        self.options = settings
        self.global_critic = HEADS.get("mlp")(context.embedding_dim, settings.units, settings.units)
        self.local_critic = DenseProjector(channels, settings.units, settings.units)

    def shared_modules(self) -> list[nn.Module]:
        return [self.global_critic, self.local_critic]

    def training_step(self, batch: Batch) -> StepOutput:
        out = self.encode_maps(self.views_of(batch), self.options.local_stage)
        global_embeddings = self._gather(self.global_critic(out.embedding))
        local_embeddings = self._gather(self.local_critic(out.maps.stages[0]))
        loss = ESTIMATORS[self.options.estimator](local_global_scores(global_embeddings, local_embeddings))
        return StepOutput(loss, {"loss_mi": loss.detach()})

    def _gather(self, x: Tensor) -> Tensor:
        return all_gather_rows(x) if self.distributed else x


__all__ = ["DIMSettings", "DeepInfoMax", "ESTIMATORS", "SPEC", "minus_jsd"]
