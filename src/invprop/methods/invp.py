"""Invariance Propagation (seed 000) and the baselines that share its memory bank.

All four methods are the same module -- encoder, memory bank, an :class:`InvariancePropagationLoss` -- and differ
only in where positives come from and which background normalises the softmax:

========================  ===========================  ==========================================
method                    positives                    background of the instance term
========================  ===========================  ==========================================
``invp``                  propagation (Eq. 3)          N_b nearest bank rows (``loss.*`` switches)
``knn-positives``         K nearest bank rows          N_b nearest bank rows
``insdis-hard``           none (L_ins only)            N_b nearest bank rows
``insdis``                none (Wu et al. 2018)        the whole bank
========================  ===========================  ==========================================
"""

from __future__ import annotations


import torch
from torch import Tensor

from invprop.config import Config
from invprop.core import BANK_DTYPES, InvariancePropagationLoss, MemoryBank, rampup_weight, total_loss
from invprop.core.diagnostics import positive_diagnostics
from invprop.core.losses import InvPLossOutput
from invprop.methods.base import METHODS, Method, StepOutput
from invprop.models import Encoder


class InvariancePropagation(Method):
    """Eq. 7 on the bank, then the EMA bank update and the neighbour-graph upkeep.

    Args:
        encoder: backbone + head.
        bank: memory bank with one row per training image.
        loss: the objective (its ``positives`` source decides the method, see the module docstring).
        weight: lambda of Eq. 7.
        rampup: ``binary`` or ``gaussian``.
        rampup_epochs: T of the ramp-up.
        graph_update: ``online`` (batch rows after each step, the authors' rule), ``rebuild`` (exact, each epoch) or
            ``none`` (no graph upkeep; for objectives that do not propagate).
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
        if graph_update not in ("online", "rebuild", "none"):
            raise ValueError(f"graph_update must be online, rebuild or none, got {graph_update!r}")
        self.bank = bank
        self.loss = loss
        self.weight = weight
        self.rampup = rampup
        self.rampup_epochs = rampup_epochs
        self.graph_update = graph_update
        self.rebuild_chunk = rebuild_chunk
        self._pending: tuple[Tensor, Tensor, Tensor | None] | None = None
        self._labels: Tensor | None = None

    def set_diagnostic_labels(self, labels: Tensor | None) -> None:
        """Labels of the bank rows (``-1`` unknown), used only for logged diagnostics, never for the loss."""
        self._labels = labels.to(self.bank.features.device) if labels is not None else None

    def training_step(self, indices: Tensor, images: Tensor, epoch: int) -> StepOutput:
        embeddings = self.encoder(images)
        out = self.loss(embeddings, indices, self.bank)
        w = rampup_weight(self.rampup, epoch, self.rampup_epochs)
        loss = total_loss(out.instance, out.invariance, self.weight, w)
        self._pending = (indices, embeddings.detach(), out.background)
        terms = {"loss_ins": out.instance.detach()}
        if self.loss.positives != "none":
            terms["loss_inv"] = out.invariance.detach()
            terms["positives"] = out.positive_mask.sum(dim=1).float().mean()
            terms.update(self._diagnostics(indices, out))
        return StepOutput(loss, terms)

    def _diagnostics(self, indices: Tensor, out: InvPLossOutput) -> dict[str, Tensor]:
        if self._labels is None:
            return {}
        diagnostics = positive_diagnostics(
            self._labels, indices, out.positives, out.positive_mask, out.hard_positives, out.hard_positive_mask, out.background
        )
        return {key: value for key, value in diagnostics.items() if not torch.isnan(value)}

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


def build_bank_method(cfg: Config, encoder: Encoder, num_samples: int, positives: str, hard_negatives: bool) -> InvariancePropagation:
    """An :class:`InvariancePropagation` with the given positive source and background, the rest from ``cfg``."""
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
        hard_negatives=hard_negatives,
        exclusive=cfg.loss.exclusive,
        positives=positives,
        knn_positives=cfg.loss.knn_positives,
    )
    return InvariancePropagation(
        encoder,
        bank,
        loss,
        weight=cfg.loss.weight,
        rampup=cfg.loss.rampup,
        rampup_epochs=cfg.loss.rampup_epochs,
        graph_update=cfg.bank.graph_update if positives == "propagation" else "none",
        rebuild_chunk=cfg.bank.rebuild_chunk,
    )


@METHODS.register("invp")
def build_invp(cfg: Config, encoder: Encoder, num_samples: int) -> InvariancePropagation:
    """InvP: propagated positives, hard positives and negatives as ``loss.*`` says."""
    return build_bank_method(cfg, encoder, num_samples, "propagation", cfg.loss.hard_negatives)


@METHODS.register("knn-positives")
def build_knn_positives(cfg: Config, encoder: Encoder, num_samples: int) -> InvariancePropagation:
    """The paper's KNN comparison: the ``loss.knn_positives`` nearest bank rows as positives, no propagation."""
    return build_bank_method(cfg, encoder, num_samples, "knn", cfg.loss.hard_negatives)


@METHODS.register("insdis-hard")
def build_insdis_hard(cfg: Config, encoder: Encoder, num_samples: int) -> InvariancePropagation:
    """Instance discrimination against the N_b nearest bank rows only (InvP's L_ins alone, Eq. 6)."""
    return build_bank_method(cfg, encoder, num_samples, "none", hard_negatives=True)


@METHODS.register("insdis")
def build_insdis(cfg: Config, encoder: Encoder, num_samples: int) -> InvariancePropagation:
    """Instance discrimination with a memory bank (Wu et al. 2018): softmax over the whole bank."""
    return build_bank_method(cfg, encoder, num_samples, "none", hard_negatives=False)


__all__ = ["InvariancePropagation", "build_bank_method"]
