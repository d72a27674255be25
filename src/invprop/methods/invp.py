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
from invprop.distributed.collectives import all_gather_tensor
from invprop.core.diagnostics import positive_diagnostics
from invprop.distributed.partition import RowPartition
from invprop.core.losses import InvPLossOutput
from invprop.methods.base import METHODS, Method, StepOutput
from invprop.models import Encoder


#: Bank rows on which the recall of an approximate (FAISS) graph rebuild is measured against exact search.
RECALL_SAMPLE = 1000


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
        rebuild_chunk: rows per block of the rebuild.
        rebuild_search: ``exact`` or ``faiss`` (approximate; its recall on :data:`RECALL_SAMPLE` rows is recorded as
            ``graph_recall``).
        faiss_lists: k-means cells of the FAISS index (None = 4 sqrt(N)).
        faiss_probe: cells scanned per query.

    In a distributed run the bank's partition decides the data flow. A replicated bank (every process holds it all)
    gathers the batches of all processes after each step and applies the same EMA updates and neighbour refreshes
    everywhere, so every process's bank equals the single-process bank of the global batch. A split bank gathers
    the queries inside the loss (see :class:`InvariancePropagationLoss`) and each process updates the rows it owns.
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
        rebuild_search: str = "exact",
        faiss_lists: int | None = None,
        faiss_probe: int = 32,
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
        self.rebuild_search = rebuild_search
        self.faiss_lists = faiss_lists
        self.faiss_probe = faiss_probe
        self._pending: tuple[Tensor, Tensor, Tensor | None] | None = None
        self._labels: Tensor | None = None

    def set_diagnostic_labels(self, labels: Tensor | None) -> None:
        """Labels of the bank rows (``-1`` unknown), used only for logged diagnostics, never for the loss."""
        self._labels = labels.to(self.bank.features.device) if labels is not None else None

    def training_step(self, indices: Tensor, images: Tensor, epoch: int) -> StepOutput:
        embeddings = self.encode(images)
        out = self.loss(embeddings, indices, self.bank)
        w = rampup_weight(self.rampup, epoch, self.rampup_epochs)
        loss = total_loss(out.instance, out.invariance, self.weight, w)
        if self.bank.partition.is_split:  # the loss gathered the whole global batch
            self._pending = (out.anchors, out.queries, out.background)
        else:
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
            self._labels, out.anchors, out.positives, out.positive_mask, out.hard_positives, out.hard_positive_mask, out.background
        )
        return diagnostics  # NaN where undefined on this batch: the trainer leaves those out of its means

    @torch.no_grad()
    def after_step(self) -> None:
        if self._pending is None:
            return
        indices, embeddings, background = self._pending
        self._pending = None
        part = self.bank.partition
        if part.parallel and not part.is_split:  # replicated bank: apply every process's batch, in rank order
            indices = all_gather_tensor(indices, part.group)
            embeddings = all_gather_tensor(embeddings, part.group)
            if background is not None and self.graph_update == "online":
                background = all_gather_tensor(background[:, : self.bank.num_neighbors + 1].contiguous(), part.group)
        # The graph is refreshed from the pre-update bank, as in the authors' code (their update_nn runs inside the
        # loss, before the bank's EMA update).
        if self.graph_update == "online":
            self.bank.refresh_neighbors(indices, embeddings, candidates=background)
        self.bank.update(indices, embeddings)

    @torch.no_grad()
    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        if self.graph_update != "rebuild":
            return {}
        self.bank.rebuild_neighbors(self.rebuild_chunk, self.rebuild_search, self.faiss_lists, self.faiss_probe)
        if self.rebuild_search != "faiss":
            return {}
        sample = min(RECALL_SAMPLE, self.bank.size)
        rows = torch.randperm(self.bank.size, generator=torch.Generator().manual_seed(epoch))[:sample]
        return {"graph_recall": self.bank.sampled_recall(rows)}


def bank_partition(cfg: Config, num_samples: int, distributed: bool) -> RowPartition:
    """Rows of the bank this process holds: all of them, or its block with ``distributed.bank=sharded``."""
    if not distributed:
        return RowPartition.whole(num_samples)
    if cfg.distributed.bank == "sharded":
        return RowPartition.split(num_samples)
    return RowPartition.replicated(num_samples)


def build_bank_method(
    cfg: Config, encoder: Encoder, num_samples: int, positives: str, hard_negatives: bool, distributed: bool = False
) -> InvariancePropagation:
    """An :class:`InvariancePropagation` with the given positive source and background, the rest from ``cfg``."""
    device = next(encoder.parameters()).device
    bank = MemoryBank(
        num_samples,
        cfg.model.embedding_dim,
        cfg.bank.momentum,
        cfg.bank.num_neighbors,
        device=device,
        dtype=BANK_DTYPES[cfg.bank.dtype],
        partition=bank_partition(cfg, num_samples, distributed),
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
        rebuild_search=cfg.bank.rebuild_search,
        faiss_lists=cfg.bank.faiss_lists,
        faiss_probe=cfg.bank.faiss_probe,
    )


@METHODS.register("invp")
def build_invp(cfg: Config, encoder: Encoder, num_samples: int, distributed: bool = False) -> InvariancePropagation:
    """InvP: propagated positives, hard positives and negatives as ``loss.*`` says."""
    return build_bank_method(cfg, encoder, num_samples, "propagation", cfg.loss.hard_negatives, distributed=distributed)


@METHODS.register("knn-positives")
def build_knn_positives(cfg: Config, encoder: Encoder, num_samples: int, distributed: bool = False) -> InvariancePropagation:
    """The paper's KNN comparison: the ``loss.knn_positives`` nearest bank rows as positives, no propagation."""
    return build_bank_method(cfg, encoder, num_samples, "knn", cfg.loss.hard_negatives, distributed=distributed)


@METHODS.register("insdis-hard")
def build_insdis_hard(cfg: Config, encoder: Encoder, num_samples: int, distributed: bool = False) -> InvariancePropagation:
    """Instance discrimination against the N_b nearest bank rows only (InvP's L_ins alone, Eq. 6)."""
    return build_bank_method(cfg, encoder, num_samples, "none", hard_negatives=True, distributed=distributed)


@METHODS.register("insdis")
def build_insdis(cfg: Config, encoder: Encoder, num_samples: int, distributed: bool = False) -> InvariancePropagation:
    """Instance discrimination with a memory bank (Wu et al. 2018): softmax over the whole bank."""
    return build_bank_method(cfg, encoder, num_samples, "none", hard_negatives=False, distributed=distributed)


__all__ = ["InvariancePropagation", "bank_partition", "build_bank_method"]
