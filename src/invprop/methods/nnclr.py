"""NNCLR (Dwibedi, Aytar, Tompson, Sermanet & Zisserman, 2021) as a training method: ``method: nnclr``.

The closest relative of InvP among the field's methods: the positive of a view is not the other view's projection
but its nearest neighbour in a support set (a FIFO queue of earlier projections), contrasted against the other
view's predictions of the batch (:func:`invprop.core.contrastive_losses.nnclr_loss`), symmetrised. The step's
first-view projections, gathered from every process, are enqueued after the optimiser step. Until the support set
holds rows, a projection is its own neighbour (SimCLR-like first step).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from invprop.core.contrastive_losses import nearest_neighbours, nnclr_loss
from invprop.core.queue import FeatureQueue
from invprop.methods.base import METHODS, BuildContext, MethodSpec, StepOutput
from invprop.methods.field_published import FIELD_DEVIATIONS, FIELD_PRESETS, FIELD_REFERENCES
from invprop.methods.two_views import TwoViewMethod, warn_if_queue_holds_the_dataset
from invprop.models.heads import predictor
from invprop.settings import AT_LEAST_ONE, POSITIVE, section, setting


@dataclass
class NNCLROptions:
    """The ``nnclr`` section."""

    temperature: float = setting(0.1, "tau of the contrastive loss", bounds=POSITIVE)
    queue_size: int = setting(4096, "rows of the support set (keep it below the dataset size)", bounds=AT_LEAST_ONE)
    predictor_hidden_dim: int = setting(4096, "hidden width of the predictor (D -> hidden -> D)", bounds=AT_LEAST_ONE)


@dataclass
class NNCLRSettings:
    nnclr: NNCLROptions = section(NNCLROptions, "NNCLR's support set, predictor and loss")


class NNCLR(TwoViewMethod):
    """``(l(NN(z1), p2) + l(NN(z2), p1)) / 2`` (Dwibedi et al., 2021, Eq. 3 and its symmetric form).

    Args:
        encoder: backbone + projector.
        embedding_dim: D of the projections.
        options: the ``nnclr`` section.
        distributed: gather predictions (global-batch denominators) and enqueued projections of every process.
    """

    def __init__(
        self, encoder: nn.Module, embedding_dim: int, options: NNCLROptions, distributed: bool = False
    ) -> None:
        super().__init__(encoder, distributed)
        self.options = options
        self.predictor = predictor(embedding_dim, options.predictor_hidden_dim)
        self.support = FeatureQueue(options.queue_size, embedding_dim)
        self._enqueue: Tensor | None = None

    def shared_modules(self) -> list[nn.Module]:
        return [self.predictor]

    def _neighbours(self, z: Tensor) -> Tensor:
        rows = self.support.rows()
        return nearest_neighbours(z, rows) if rows.shape[0] else nn.functional.normalize(z.detach().float(), dim=1)

    def training_step(self, indices: Tensor, images: Tensor, epoch: int) -> StepOutput:
        z = self.encode(images)
        z1, z2 = self.halves(z)
        p1, p2 = self.halves(self.predictor(z))
        nn1 = self.gather_constant(self._neighbours(z1))
        nn2 = self.gather_constant(self._neighbours(z2))
        tau = self.options.temperature
        loss = (nnclr_loss(nn1, self.gather(p2), tau) + nnclr_loss(nn2, self.gather(p1), tau)) / 2
        self._enqueue = z1.detach()
        return StepOutput(loss, {"loss_nnclr": loss.detach()})

    @torch.no_grad()
    def after_step(self) -> None:
        if self._enqueue is not None:
            self.support.enqueue(nn.functional.normalize(self.gather_constant(self._enqueue).float(), dim=1))
            self._enqueue = None
        super().after_step()


def build_nnclr(settings: NNCLRSettings, encoder: nn.Module, context: BuildContext) -> NNCLR:
    warn_if_queue_holds_the_dataset("nnclr.queue_size", settings.nnclr.queue_size, context.num_samples)
    return NNCLR(encoder, context.embedding_dim, settings.nnclr, context.distributed)


METHODS.register("nnclr")(
    MethodSpec(
        "NNCLR: the nearest neighbour from a support set as the positive (Dwibedi et al., 2021)",
        NNCLRSettings,
        build_nnclr,
        presets=FIELD_PRESETS["nnclr"],
        headline=("nnclr.temperature", "nnclr.queue_size"),
        references=FIELD_REFERENCES["nnclr"],
        deviations=FIELD_DEVIATIONS["nnclr"],
    )
)

__all__ = ["NNCLR", "NNCLROptions", "NNCLRSettings", "build_nnclr"]
