"""Invariance Propagation (Wang et al., 2020) and the baselines that share its memory bank, with their settings.

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

They share two settings sections, ``bank`` (:class:`BankSettings`) and ``loss`` (:class:`LossSettings`), and the
authors' per-dataset values (:data:`DATASET_PRESETS`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from invprop.core.bank import BANK_DTYPES, REBUILD_SEARCHES, MemoryBank
from invprop.core.diagnostics import positive_diagnostics
from invprop.core.faiss_search import faiss_available
from invprop.core.losses import BACKGROUNDS, InvariancePropagationLoss, InvPLossOutput, total_loss
from invprop.core.rampup import RAMPUPS, rampup_weight
from invprop.distributed.collectives import all_gather_tensor
from invprop.distributed.partition import RowPartition
from invprop.errors import ConfigError
from invprop.methods.base import METHODS, BuildContext, Method, MethodSpec, StepOutput
from invprop.methods.published import INVP_DEVIATIONS, INVP_REFERENCES
from invprop.settings import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, UNIT_INTERVAL, section, setting

logger = logging.getLogger(__name__)

#: Bank rows on which the recall of an approximate (FAISS) graph rebuild is measured against exact search.
RECALL_SAMPLE = 1000
#: Neighbour-graph upkeep a run may choose (methods without propagation keep none).
GRAPH_UPDATES = ("online", "rebuild")
#: Where the bank lives in a multi-process run.
PLACEMENTS = ("replicated", "sharded")


@dataclass
class BankSettings:
    """The ``bank`` section: the memory bank and its neighbour graph."""

    momentum: float = setting(0.5, "EMA momentum m of the memory bank", bounds=UNIT_INTERVAL)
    num_neighbors: int = setting(4, "k, neighbours per image in the propagation graph", bounds=AT_LEAST_ONE)
    graph_update: str = setting(
        "online", "neighbour upkeep: online (batch rows after each step) or rebuild (each epoch)", choices=GRAPH_UPDATES
    )
    rebuild_chunk: int = setting(
        4096, "rows per block of the exact graph rebuild (memory O(chunk x N))", bounds=AT_LEAST_ONE, resumable=True
    )
    dtype: str = setting(
        "float32", "bank storage (half precision halves the memory; see docs/benchmarks.md)", choices=BANK_DTYPES
    )
    rebuild_search: str = setting(
        "exact",
        "search of the graph rebuild (faiss: approximate; pip install 'invprop[faiss]')",
        choices=REBUILD_SEARCHES,
    )
    faiss_lists: int | None = setting(None, "k-means cells of the FAISS index (null = 4 sqrt(N))", bounds=AT_LEAST_ONE)
    faiss_probe: int = setting(32, "FAISS cells scanned per query (more = slower, higher recall)", bounds=AT_LEAST_ONE)
    placement: str = setting(
        "replicated",
        "the bank of a multi-process run: replicated (every process holds it all) or sharded (each holds a block of "
        "rows; for banks larger than one device)",
        choices=PLACEMENTS,
        resumable=True,
    )


@dataclass
class LossSettings:
    """The ``loss`` section: the InvP objective (Wang et al., 2020, Eqs. 1-7)."""

    temperature: float = setting(
        0.2,
        "tau: 0.2 goes with an MLP head (model.head=mlp_bn or mlp), 0.07 with the linear head (the paper's values)",
        bounds=POSITIVE,
    )
    n_background: int = setting(
        4096, "N_b, nearest bank rows forming the background M_i (capped at the bank size)", bounds=AT_LEAST_ONE
    )
    steps: int = setting(3, "l, propagation hops", bounds=AT_LEAST_ONE)
    n_hard_positives: int = setting(
        50, "P, hard positives per anchor (20 for CIFAR-10 in the authors' code)", bounds=AT_LEAST_ONE
    )
    knn_positives: int | None = setting(None, "K of the knn-positives method (nearest bank rows as positives); null = P",
                                        bounds=AT_LEAST_ONE)  # fmt: skip
    exact: bool = setting(True, "exact de-duplicated positive set (true) or the authors' concatenation (false)")
    hard_positives: bool = setting(True, "use the least similar positives (false = most similar: ablation)")
    hard_negatives: bool = setting(True, "background = N_b nearest rows (false = whole bank: ablation)")
    exclusive: bool = setting(True, "drop the anchor's own row from the invariance term's background")
    background: str = setting(
        "nearest",
        "the invariance term's background B_i: nearest (M_i, the N_b nearest rows: the paper's approximation and the "
        "authors' code) or paper (H_i united with M_i minus P_i, the paper's definition)",
        choices=BACKGROUNDS,
    )
    weight: float = setting(0.6, "lambda, weight of the invariance term (Eq. 7)", bounds=NON_NEGATIVE)
    rampup: str = setting("binary", "ramp-up w(t) of the invariance term", choices=RAMPUPS)
    rampup_epochs: int = setting(
        30, "T: the invariance term is off (binary) or ramping (gaussian) for T epochs", bounds=NON_NEGATIVE
    )


@dataclass
class InvPSettings:
    """The settings of InvP and the memory-bank baselines: two sections of the run's settings."""

    bank: BankSettings = section(BankSettings, "the memory bank and its neighbour graph")
    loss: LossSettings = section(LossSettings, "the objective")


#: The authors' values per dataset preset (P 20 on CIFAR-10; l = 4 on CIFAR-100), and the digits job's (a
#: 1,347-image bank: N_b 1024, a 10-epoch ramp-up; :data:`invprop.methods.published.INVP_DEVIATIONS` says why). A preset also gets those of the
#: presets it extends.
DATASET_PRESETS: dict[str, dict[str, Any]] = {
    "digits": {"loss": {"n_background": 1024, "n_hard_positives": 20, "rampup_epochs": 10}},
    "mnist": {"loss": {"n_background": 4096}},
    "cifar10": {"loss": {"n_hard_positives": 20}},
    "cifar100": {"loss": {"steps": 4}},
}


class InvariancePropagation(Method):
    """Wang et al. (2020), Eq. 7 on the bank; after each step the neighbour refresh, then the EMA bank update.

    Args:
        encoder: any module mapping images to (B, D) embeddings (backbone + head).
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
        encoder: nn.Module,
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
        if graph_update not in (*GRAPH_UPDATES, "none"):
            raise ValueError(f"graph_update must be one of {', '.join(GRAPH_UPDATES)} or none, got {graph_update!r}")
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
            self._labels,
            out.anchors,
            out.positives,
            out.positive_mask,
            out.hard_positives,
            out.hard_positive_mask,
            out.background,
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


#: The settings ``invprop presets`` lists for these methods.
HEADLINE = ("loss.temperature", "loss.n_background", "bank.num_neighbors", "loss.steps", "loss.n_hard_positives")


def bank_partition(placement: str, num_samples: int, distributed: bool) -> RowPartition:
    """Rows of the bank this process holds: all of them, or its block with ``bank.placement=sharded``."""
    if not distributed:
        return RowPartition.whole(num_samples)
    if placement == "sharded":
        return RowPartition.split(num_samples)
    return RowPartition.replicated(num_samples)


def build_bank_method(
    settings: InvPSettings, encoder: nn.Module, context: BuildContext, positives: str, hard_negatives: bool
) -> InvariancePropagation:
    """An :class:`InvariancePropagation` with the given positive source and background, the rest from ``settings``.

    Raises:
        ConfigError: a graph of k neighbours that the data cannot have (k must be below the number of images).
    """
    bank_settings, loss_settings = settings.bank, settings.loss
    if bank_settings.num_neighbors >= context.num_samples:
        raise ConfigError(
            f"bank.num_neighbors={bank_settings.num_neighbors} must be smaller than the dataset size {context.num_samples}"
        )
    if hard_negatives and loss_settings.n_background > context.num_samples:
        logger.info(
            "loss.n_background=%d is more than the %d training images: the background M_i is the whole bank",
            loss_settings.n_background,
            context.num_samples,
        )
    device = next(encoder.parameters()).device
    bank = MemoryBank(
        context.num_samples,
        context.embedding_dim,
        bank_settings.momentum,
        bank_settings.num_neighbors,
        device=device,
        dtype=BANK_DTYPES[bank_settings.dtype],
        partition=bank_partition(bank_settings.placement, context.num_samples, context.distributed),
    )
    loss = InvariancePropagationLoss(
        temperature=loss_settings.temperature,
        n_background=loss_settings.n_background,
        steps=loss_settings.steps,
        n_hard_positives=loss_settings.n_hard_positives,
        exact=loss_settings.exact,
        hard_positives=loss_settings.hard_positives,
        hard_negatives=hard_negatives,
        exclusive=loss_settings.exclusive,
        positives=positives,
        knn_positives=loss_settings.knn_positives,
        background=loss_settings.background,
    )
    return InvariancePropagation(
        encoder,
        bank,
        loss,
        weight=loss_settings.weight,
        rampup=loss_settings.rampup,
        rampup_epochs=loss_settings.rampup_epochs,
        graph_update=bank_settings.graph_update if positives == "propagation" else "none",
        rebuild_chunk=bank_settings.rebuild_chunk,
        rebuild_search=bank_settings.rebuild_search,
        faiss_lists=bank_settings.faiss_lists,
        faiss_probe=bank_settings.faiss_probe,
    )


def check_faiss(settings: InvPSettings) -> None:
    """A FAISS graph rebuild needs FAISS installed: say so before any work."""
    bank = settings.bank
    if bank.rebuild_search == "faiss" and bank.graph_update == "rebuild" and not faiss_available():
        raise ConfigError("bank.rebuild_search=faiss needs FAISS: pip install 'invprop[faiss]' (or faiss-gpu)")


def build_invp(settings: InvPSettings, encoder: nn.Module, context: BuildContext) -> InvariancePropagation:
    """InvP: propagated positives, hard positives and negatives as ``loss.*`` says."""
    return build_bank_method(settings, encoder, context, "propagation", settings.loss.hard_negatives)


def build_knn_positives(settings: InvPSettings, encoder: nn.Module, context: BuildContext) -> InvariancePropagation:
    """The paper's KNN comparison: the ``loss.knn_positives`` nearest bank rows as positives, no propagation."""
    return build_bank_method(settings, encoder, context, "knn", settings.loss.hard_negatives)


def build_insdis_hard(settings: InvPSettings, encoder: nn.Module, context: BuildContext) -> InvariancePropagation:
    """Instance discrimination against the N_b nearest bank rows only (InvP's L_ins alone, Eq. 6)."""
    return build_bank_method(settings, encoder, context, "none", hard_negatives=True)


def build_insdis(settings: InvPSettings, encoder: nn.Module, context: BuildContext) -> InvariancePropagation:
    """Instance discrimination with a memory bank (Wu et al., 2018): softmax over the whole bank."""
    return build_bank_method(settings, encoder, context, "none", hard_negatives=False)


for _name, _summary, _build in (
    ("invp", "Invariance Propagation (Wang et al., 2020)", build_invp),
    (
        "knn-positives",
        "the K nearest bank rows as positives, no propagation (InvP's KNN comparison)",
        build_knn_positives,
    ),
    (
        "insdis-hard",
        "instance discrimination against the N_b nearest bank rows (InvP's L_ins alone)",
        build_insdis_hard,
    ),
    ("insdis", "instance discrimination with a memory bank (Wu et al., 2018)", build_insdis),
):
    METHODS.register(_name)(
        MethodSpec(
            _summary,
            InvPSettings,
            _build,
            DATASET_PRESETS,
            preflight=check_faiss,
            headline=HEADLINE,
            references=INVP_REFERENCES,
            deviations=INVP_DEVIATIONS,
        )
    )


__all__ = [
    "DATASET_PRESETS",
    "BankSettings",
    "InvPSettings",
    "InvariancePropagation",
    "LossSettings",
    "bank_partition",
    "build_bank_method",
]
