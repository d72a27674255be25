"""SimCLR (Chen, Kornblith, Norouzi & Hinton, 2020) as a training method: ``method: simclr``.

Two views per image through the encoder (backbone + the projector ``model.head``) and NT-Xent over the 2B - 2
in-batch negatives (:func:`invprop.core.contrastive_losses.nt_xent_loss`). In a distributed run the projections are
gathered, so every process contrasts against the global batch, as the paper's large-batch runs do. Its settings
are one section, ``simclr``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from invprop.core.contrastive_losses import nt_xent_loss
from invprop.core.crop_pairs import mean_over_pairs, view_pairs
from invprop.methods.citations import SOLO
from invprop.methods.method import Batch, BuildContext, StepOutput
from invprop.methods.recipes import paper_lars, solo_lars
from invprop.methods.spec import Accumulation, Curve, MethodSpec, register_method
from invprop.methods.two_views import TwoViewMethod
from invprop.settings import POSITIVE, Reference, setting


@dataclass
class SimCLRSettings:
    """The ``simclr`` section."""

    temperature: float = setting(0.2, "tau of NT-Xent", bounds=POSITIVE)


SPEC = MethodSpec(
    "SimCLR: NT-Xent over in-batch negatives (Chen et al., 2020)",
    SimCLRSettings,
    section="simclr",
    section_help="SimCLR's contrastive loss",
    multi_crop=True,
    accumulation=Accumulation.REFUSED,
    accumulation_note="NT-Xent contrasts every view of the whole batch with every other",
    presets={
        "digits": {"model": {"head": "mlp_bn"}},
        "cifar10": {"model": {"head": "mlp", "hidden_dim": 2048, "embedding_dim": 256}},
    },
    recipes={
        "*": paper_lars(
            "Chen et al. (2020), the authors' README ImageNet command (0.075 x sqrt(B), wd 1e-4) and tf2 LARS",
            lr=1.2,
            weight_decay=1e-4,
            lr_scaling="sqrt",
        ),
        "cifar10": solo_lars("simclr", lr=0.4, weight_decay=1e-4),
        "digits": solo_lars("simclr", lr=0.4, weight_decay=1e-4),
    },
    references={
        "*": {"simclr.temperature": Reference(0.1, "Chen et al. (2020), Sec. 5 (ImageNet, large batches)")},
        "cifar10": {"simclr.temperature": Reference(0.5, "Chen et al. (2020), App. B.9 (CIFAR-10)")},
    },
    deviations={
        "*": {
            "simclr.temperature": f"{SOLO.format('simclr')} uses 0.2 for small images and batches; not measured here"
        },
        "cifar10": {"simclr.temperature": f"{SOLO.format('simclr')} uses 0.2; not measured here against 0.5"},
    },
    headline=("simclr.temperature", "model.head"),
    terms=("loss_nce",),
    curves=(Curve("NT-Xent", ("loss_nce",)),),
)


@register_method("simclr", SPEC)
class SimCLR(TwoViewMethod):
    """NT-Xent between the two views' projections (Chen et al., 2020, Eq. 1).

    Args:
        settings: the ``simclr`` section (tau).
        encoder: backbone + projector.
        context: in a distributed run the projections of every process are gathered (global-batch negatives).
    """

    def __init__(self, settings: SimCLRSettings, encoder: nn.Module, context: BuildContext) -> None:
        super().__init__(encoder, context)
        self.temperature = settings.temperature

    def training_step(self, batch: Batch) -> StepOutput:
        z = [self.gather(view) for view in self.encode_views(batch)]
        loss = mean_over_pairs(lambda i, j: nt_xent_loss(z[i], z[j], self.temperature), view_pairs(len(z)))
        return StepOutput(loss, {"loss_nce": loss.detach()})


__all__ = ["SPEC", "SimCLR", "SimCLRSettings"]
