"""NNCLR (Dwibedi, Aytar, Tompson, Sermanet & Zisserman, 2021) as a training method: ``method: nnclr``.

The closest relative of InvP among the field's methods: the positive of a view is not the other view's projection
but its nearest neighbour in a support set (a FIFO queue of earlier projections), contrasted against the other
view's predictions of the batch (:func:`invprop.core.contrastive_losses.nnclr_loss`), symmetrised. The step's
first-view projections, gathered from every process, are enqueued after the optimiser step. Until the support set
holds rows, a projection is its own neighbour (SimCLR-like first step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from invprop.core.contrastive_losses import nearest_neighbours, nnclr_loss
from invprop.core.crop_pairs import mean_over_pairs, target_pairs
from invprop.core.queue import FeatureQueue
from invprop.methods.citations import DIGITS_WIDTH, QUEUE_CIFAR, QUEUE_DIGITS
from invprop.methods.method import Batch, BuildContext, StepOutput
from invprop.methods.recipes import solo_lars
from invprop.methods.spec import Accumulation, Curve, MethodSpec, register_method
from invprop.methods.two_views import TwoViewMethod, halves, split_views, warn_if_queue_holds_the_dataset
from invprop.models.heads import predictor
from invprop.settings import AT_LEAST_ONE, POSITIVE, Reference, setting


@dataclass
class NNCLRSettings:
    """The ``nnclr`` section."""

    temperature: float = setting(0.1, "tau of the contrastive loss", bounds=POSITIVE)
    queue_size: int = setting(4096, "rows of the support set (keep it below the dataset size)", bounds=AT_LEAST_ONE)
    predictor_hidden_dim: int = setting(4096, "hidden width of the predictor (D -> hidden -> D)", bounds=AT_LEAST_ONE)


_DWIBEDI = "Dwibedi et al. (2021), Sec. 4"
SPEC = MethodSpec(
    "NNCLR: the nearest neighbour from a support set as the positive (Dwibedi et al., 2021)",
    NNCLRSettings,
    section="nnclr",
    section_help="NNCLR's support set, predictor and loss",
    multi_crop=True,
    accumulation=Accumulation.REFUSED,
    accumulation_note="its loss contrasts every prediction of the whole batch",
    recipes={  # no official code: the paper's ImageNet recipe is unconfirmed, solo-learn's is the published one
        "*": solo_lars("nnclr", lr=0.4, weight_decay=1e-5),
        "digits": solo_lars("nnclr", lr=0.4, weight_decay=1e-5),
    },
    presets={
        "digits": {
            "model": {"head": "mlp3_bn_out", "hidden_dim": 512, "embedding_dim": 128},
            "nnclr": {"queue_size": 1024, "predictor_hidden_dim": 1024},
        },
        "cifar10": {
            "model": {"head": "mlp3_bn_out", "hidden_dim": 2048, "embedding_dim": 256},
            "nnclr": {"queue_size": 16384},
        },
    },  # fmt: skip
    references={
        "*": {
            "nnclr.temperature": Reference(0.1, _DWIBEDI),
            "nnclr.queue_size": Reference(98304, f"{_DWIBEDI} (ImageNet)"),
            "nnclr.predictor_hidden_dim": Reference(4096, _DWIBEDI),
        },
    },
    deviations={
        "*": {"nnclr.queue_size": "4096 for datasets of a few tens of thousands of images; presets adapt it"},
        "digits": {"nnclr.queue_size": QUEUE_DIGITS, "nnclr.predictor_hidden_dim": DIGITS_WIDTH},
        "cifar10": {"nnclr.queue_size": QUEUE_CIFAR},
    },
    headline=("nnclr.temperature", "nnclr.queue_size"),
    terms=("loss_nnclr",),
    curves=(Curve("NNCLR's contrastive loss", ("loss_nnclr",)),),
)


@register_method("nnclr", SPEC)
class NNCLR(TwoViewMethod):
    """``(l(NN(z1), p2) + l(NN(z2), p1)) / 2`` (Dwibedi et al., 2021, Eq. 3 and its symmetric form).

    Args:
        settings: the ``nnclr`` section.
        encoder: backbone + projector.
        context: D (the support set's width) and the process group (predictions are gathered for global-batch
            denominators, enqueued projections from every process).
    """

    def __init__(self, settings: NNCLRSettings, encoder: nn.Module, context: BuildContext) -> None:
        super().__init__(encoder, context)
        warn_if_queue_holds_the_dataset("nnclr.queue_size", settings.queue_size, context.num_samples)
        self.options = settings
        self.predictor = predictor(context.embedding_dim, settings.predictor_hidden_dim)
        self.support = FeatureQueue(settings.queue_size, context.embedding_dim)

    def shared_modules(self) -> list[nn.Module]:
        return [self.predictor]

    def _neighbours(self, z: Tensor) -> Tensor:
        rows = self.support.rows()
        return nearest_neighbours(z, rows) if rows.shape[0] else nn.functional.normalize(z.detach().float(), dim=1)

    def training_step(self, batch: Batch) -> StepOutput:
        groups = self.encode_groups(batch)
        z1, z2 = halves(groups[0])
        p = [self.gather(view) for view in split_views([self.predictor(group) for group in groups], batch.size)]
        neighbours = [self.gather_constant(self._neighbours(z)) for z in (z1, z2)]
        tau = self.options.temperature
        pairs = target_pairs(len(p))  # each full-size view's neighbour, every other view's prediction
        loss = mean_over_pairs(lambda t, c: nnclr_loss(neighbours[t], p[c], tau), pairs)
        return StepOutput(loss, {"loss_nnclr": loss.detach()}, z1.detach())

    @torch.no_grad()
    def after_step(self, outputs: Sequence[StepOutput]) -> None:
        for output in outputs:
            self.support.enqueue(nn.functional.normalize(self.gather_constant(output.update).float(), dim=1))


__all__ = ["SPEC", "NNCLR", "NNCLRSettings"]
