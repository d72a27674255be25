"""Invariance Propagation: encoder + memory bank + the InvP objective (seed 000)."""

from __future__ import annotations

import torch
from torch import Tensor

from invprop.config import Config
from invprop.core import BANK_DTYPES, InvariancePropagationLoss, MemoryBank, rampup_weight, total_loss

from invprop.methods.base import METHODS, Method, StepOutput
from invprop.models import Encoder


class InvariancePropagation(Method):
    """InvP training: Eq. 7 on the bank, then the EMA bank update and the neighbour-graph upkeep.

    Args:
        encoder: backbone + head.
        bank: memory bank with one row per training image.
        loss: the InvP objective.
        weight: lambda of Eq. 7.
        rampup: ``binary`` or ``gaussian``.
        rampup_epochs: T of the ramp-up.
        graph_update: ``online`` (batch rows after each step, the authors' rule) or ``rebuild`` (exact, each epoch).
        rebuild_chunk: rows per block of the exact rebuild.
    """

    def __init__(
        self,
        encoder: Encoder,
        bank: MemoryBank,
        loss: InvariancePropagationLoss,
        weight: float = 0.6,
        rampup: str = "binary",
        rampup_epochs: int = 30,
        graph_update: str = "online",
        rebuild_chunk: int = 4096,
    ) -> None:
        super().__init__(encoder)
        if graph_update not in ("online", "rebuild"):
            raise ValueError(f"graph_update must be online or rebuild, got {graph_update!r}")
        self.bank = bank
        self.loss = loss
        self.weight = weight
        self.rampup = rampup
        self.rampup_epochs = rampup_epochs
        self.graph_update = graph_update
        self.rebuild_chunk = rebuild_chunk
        self._pending: tuple[Tensor, Tensor, Tensor | None] | None = None

    def training_step(self, indices: Tensor, images: Tensor, epoch: int) -> StepOutput:
        embeddings = self.encoder(images)
        out = self.loss(embeddings, indices, self.bank)
        w = rampup_weight(self.rampup, epoch, self.rampup_epochs)
        loss = total_loss(out.instance, out.invariance, self.weight, w)
        self._pending = (indices, embeddings.detach(), out.background)
        n_pos = out.positive_mask.sum(dim=1).float().mean()
        return StepOutput(loss, {"loss_ins": out.instance.detach(), "loss_inv": out.invariance.detach(), "positives": n_pos})

    @torch.no_grad()
    def after_step(self) -> None:
        if self._pending is None:
            return
        indices, embeddings, background = self._pending
        self._pending = None
        # The graph is refreshed from the pre-update bank, as in the authors' code (their update_nn runs inside the
        # loss, before the bank's EMA update).
        if self.graph_update == "online":
            self.bank.refresh_neighbors(indices, embeddings, candidates=background)
        self.bank.update(indices, embeddings)

    @torch.no_grad()
    def on_epoch_end(self, epoch: int) -> None:
        if self.graph_update == "rebuild":
            self.bank.rebuild_neighbors(self.rebuild_chunk)


@METHODS.register("invp")
def build_invp(cfg: Config, encoder: Encoder, num_samples: int) -> InvariancePropagation:
    device = next(encoder.parameters()).device
    bank = MemoryBank(
        num_samples,
        cfg.model.embedding_dim,
        cfg.bank.momentum,
        cfg.bank.num_neighbors,
        device=device,
        dtype=BANK_DTYPES[cfg.bank.dtype],
    )
    loss = InvariancePropagationLoss(
        temperature=cfg.loss.temperature,
        n_background=cfg.loss.n_background,
        steps=cfg.loss.steps,
        n_hard_positives=cfg.loss.n_hard_positives,
        exact=cfg.loss.exact,
        hard_positives=cfg.loss.hard_positives,
        hard_negatives=cfg.loss.hard_negatives,
        exclusive=cfg.loss.exclusive,
    )
    return InvariancePropagation(
        encoder,
        bank,
        loss,
        weight=cfg.loss.weight,
        rampup=cfg.loss.rampup,
        rampup_epochs=cfg.loss.rampup_epochs,
        graph_update=cfg.bank.graph_update,
        rebuild_chunk=cfg.bank.rebuild_chunk,
    )
