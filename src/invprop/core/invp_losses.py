"""The InvP objective (Wang et al., 2020, Eqs. 1, 2, 4-7), as pure functions plus one module that wires them to a bank.

Everything here works on logits ``s_j = bar v_j . v / tau`` in float32 and uses log-sum-exp, so it is safe under
bf16/fp16 autocast: ``exp(sim / tau)`` is never materialised in half precision (the authors' code exponentiates
the whole B x N similarity matrix and adds ``1e-7`` inside the log; neither is done here). The background M_i is
selected on raw similarities without autograd and only the chosen logits enter the autograd graph
(:func:`invprop.distributed.rows.sharded_background_logits`).

Every softmax denominator is a :func:`invprop.distributed.collectives.masked_logsumexp` over the processes that hold
the background's rows: ``group`` is :data:`~invprop.distributed.collectives.LOCAL` for a bank held whole, and the
bank's group when it is split over the processes of a distributed run (each process then holds the background
entries of its own rows) -- the equations stay written once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from invprop.core.bank import MemoryBank
from invprop.core.graph import nearest_columns, online_neighbors, outside_sets, propagate
from invprop.distributed.collectives import LOCAL, ProcessGroup, all_gather_rows, all_gather_tensor, masked_logsumexp
from invprop.distributed.rows import owned_entries, sharded_background_logits, sharded_row_logits, sharded_topk
from invprop.settings import AT_LEAST_ONE, POSITIVE, require

#: Sources of positives: InvP's propagation, the K nearest bank rows (the paper's KNN baseline), or none (InsDis).
POSITIVE_SOURCES = ("propagation", "knn", "none")
#: The invariance term's background: ``nearest`` = M_i (the paper's approximation, the authors' code), ``paper`` =
#: H_i united with (M_i minus P_i), the set the paper defines.
BACKGROUNDS = ("nearest", "paper")
#: How the background's logits are computed (same values): by bank size, the dense product, or gathered rows.
SIMILARITY_STRATEGIES = {"auto": None, "dense": True, "gather": False}
#: Largest fraction of a sum that :func:`subtracted_logsumexp` removes (keeps its log finite).
_MAX_EXCLUDED_SHARE = 1.0 - 1e-6


def subtracted_logsumexp(
    logits: Tensor, excluded: Tensor, mask: Tensor | None = None, group: ProcessGroup = LOCAL
) -> Tensor:
    """``log( sum_j exp(logits[:, j]) - exp(excluded) )`` in float32, computed stably.

    The authors' "exclusive" denominator: it subtracts the anchor's term from the sum over M_i whether or not the
    anchor's row is among M_i. The excluded share is capped just below 1 so the result stays finite.

    Args:
        logits: (B, M) background logits.
        excluded: (B,) logit of the term to subtract.
        mask: optional (B, M) bool, True where an entry belongs to the sum.
        group: the processes holding the sum's entries (:data:`LOCAL`: this one).

    Returns:
        (B,) float32.
    """
    total = masked_logsumexp(logits, mask, group)
    share = torch.exp(excluded.float() - total).clamp(max=_MAX_EXCLUDED_SHARE)
    return total + torch.log1p(-share)


def instance_log_probability(
    target_logits: Tensor,
    background_logits: Tensor,
    background_mask: Tensor | None = None,
    group: ProcessGroup = LOCAL,
) -> Tensor:
    """Wang et al. (2020), Eq. 1, log form: ``log P(i | v) = s_i - log sum_{j in B} exp(s_j)``.

    With the background B the whole bank this is the paper's Eq. 1; with B = M_i (the nearest bank rows) it is the
    hard-negative form used by Eq. 6.

    Args:
        target_logits: (B,) logits of each anchor's own bank row, ``bar v_i . v_i / tau``.
        background_logits: (B, M) logits of the background rows.
        background_mask: optional (B, M) bool, True where an entry belongs to the background.
        group: the processes holding the background's entries (:data:`LOCAL`: this one).

    Returns:
        (B,) log-probabilities.
    """
    return target_logits.float() - masked_logsumexp(background_logits, background_mask, group)


def set_log_probability(
    set_logits: Tensor,
    set_mask: Tensor | None,
    background_logits: Tensor,
    background_mask: Tensor | None = None,
    group: ProcessGroup = LOCAL,
) -> Tensor:
    """Wang et al. (2020), Eq. 2, log form: ``log P(A | v) = log sum_{j in A} exp(s_j) - log sum_{j in B} exp(s_j)``.

    Args:
        set_logits: (B, P) logits of the members of A (padded).
        set_mask: (B, P) bool, True for real members; None if all are.
        background_logits: (B, M) logits of the background (normalising) set.
        background_mask: optional (B, M) bool.
        group: the processes holding the background's entries (A is always complete on every process).

    Returns:
        (B,) log-probabilities; ``-inf`` for an empty A.
    """
    return masked_logsumexp(set_logits, set_mask) - masked_logsumexp(background_logits, background_mask, group)


def select_positives(
    positive_logits: Tensor, positive_mask: Tensor, count: int, hardest: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """Hard positive sampling (Wang et al., 2020, Sec. 3.2): the ``count`` positives LEAST similar to the anchor.

    If an anchor has fewer than ``count`` positives, all of them are used. ``hardest=False`` picks the MOST similar
    ones instead (the paper's "without hard positives" ablation).

    Args:
        positive_logits: (B, M) logits of the discovered positives.
        positive_mask: (B, M) bool, True for real positives.
        count: P >= 1.
        hardest: lowest similarity first (True) or highest (False).

    Returns:
        ``(logits, mask, columns)``, each (B, min(count, M)): the selected logits, which of them are real, and their
        column in the input.
    """
    require("count", count, AT_LEAST_ONE)
    take = min(count, positive_logits.shape[1])
    fill = float("inf") if hardest else float("-inf")
    ranked = positive_logits.float().masked_fill(~positive_mask, fill)
    _, columns = ranked.topk(take, dim=1, largest=not hardest, sorted=True)
    return torch.gather(positive_logits, 1, columns), torch.gather(positive_mask, 1, columns), columns


def invariance_loss(
    hard_positive_logits: Tensor,
    hard_positive_mask: Tensor,
    background_logits: Tensor,
    background_mask: Tensor | None = None,
    group: ProcessGroup = LOCAL,
) -> Tensor:
    """Wang et al. (2020), Eqs. 4/5: ``L_inv(i) = -log( sum_{p in H_i} exp(s_p) / sum_{j in B_i} exp(s_j) )``.

    Args:
        hard_positive_logits: (B, P) logits of the hard positives H_i (padded).
        hard_positive_mask: (B, P) bool, True for real members of H_i.
        background_logits: (B, M) logits of the background B_i.
        background_mask: optional (B, M) bool (e.g. False at the anchor's own row for the exclusive form).
        group: the processes holding the background's entries (:data:`LOCAL`: this one).

    Returns:
        (B,) per-anchor losses; ``+inf`` for anchors without positives (callers exclude them).
    """
    return -set_log_probability(hard_positive_logits, hard_positive_mask, background_logits, background_mask, group)


def paper_invariance_loss(
    hard_positive_logits: Tensor,
    hard_positive_mask: Tensor,
    negative_logits: Tensor,
    negative_mask: Tensor | None = None,
    group: ProcessGroup = LOCAL,
) -> Tensor:
    """Wang et al. (2020), Eqs. 4/5 with the paper's own background ``B_i = H_i united with (M_i minus P_i)``:
    ``L_inv(i) = -log( S_H / (S_H + sum_{j in M_i minus P_i} exp(s_j)) )`` with ``S_H = sum_{p in H_i} exp(s_p)``.

    The paper calls the nearest rows M_i an approximation of B_i (used by :func:`invariance_loss` and the authors'
    code); this is the set it defines: the hard positives, plus the nearest rows that are not positives.

    Args:
        hard_positive_logits: (B, P) logits of H_i (padded).
        hard_positive_mask: (B, P) bool, True for real members of H_i.
        negative_logits: (B, M) logits of the background rows M_i.
        negative_mask: (B, M) bool, True for the rows of M_i minus P_i (the caller removes the positives).
        group: the processes holding the background's entries (H_i is complete on every process).

    Returns:
        (B,) per-anchor losses, >= 0; ``+inf`` for anchors without positives (callers exclude them).
    """
    positive = masked_logsumexp(hard_positive_logits, hard_positive_mask)
    negative = masked_logsumexp(negative_logits, negative_mask, group)
    return torch.logaddexp(positive, negative) - positive


def instance_loss(
    target_logits: Tensor,
    background_logits: Tensor,
    background_mask: Tensor | None = None,
    group: ProcessGroup = LOCAL,
) -> Tensor:
    """Wang et al. (2020), Eq. 6: ``L_ins(i) = -log( exp(s_i) / sum_{j in M_i} exp(s_j) )``, instance discrimination
    with hard negatives.

    Args:
        target_logits: (B,) logits of each anchor's own bank row.
        background_logits: (B, M) logits of M_i (the N_b nearest bank rows, or the whole bank).
        background_mask: optional (B, M) bool.
        group: the processes holding the background's entries (:data:`LOCAL`: this one).

    Returns:
        (B,) per-anchor losses.
    """
    return -instance_log_probability(target_logits, background_logits, background_mask, group)


def total_loss(instance: Tensor, invariance: Tensor, weight: float, rampup: float) -> Tensor:
    """Wang et al. (2020), Eq. 7: ``L = L_ins + lambda * w(t) * L_inv``."""
    return instance + weight * rampup * invariance


@dataclass
class InvPLossOutput:
    """What one evaluation of the InvP objective produces.

    Attributes:
        instance: scalar, batch mean of Eq. 6.
        invariance: scalar, mean of Eq. 4/5 over anchors with at least one positive (0 if none has).
        positives: (B, M) discovered positive indices (``-1`` padding), from :func:`propagate`.
        positive_mask: (B, M) bool.
        hard_positives: (B, P) indices of the selected (hard) positives, ``-1`` padding.
        hard_positive_mask: (B, P) bool.
        background: (B, N_b) bank indices of the background M_i, most similar first; None when the background is
            the whole bank (``hard_negatives=False``).
        anchors: (B,) the bank rows the outputs refer to (with a split bank: the global batch of all processes).
        queries: (B, D) their normalised embeddings, detached (what the bank update needs).
    """

    instance: Tensor
    invariance: Tensor
    positives: Tensor
    positive_mask: Tensor
    hard_positives: Tensor
    hard_positive_mask: Tensor
    background: Tensor | None
    anchors: Tensor
    queries: Tensor


@dataclass
class _Scores:
    """Logits of one batch against the bank, before the loss (see :meth:`InvariancePropagationLoss._scores`).

    ``background_logits`` (B, M) are this process's background entries (all of them unless the bank is split),
    ``members`` (B, M) marks which entries count (None = all), ``member_rows`` (B or 1, M) their bank rows, and
    ``group`` the processes over which a denominator is completed.
    """

    target: Tensor
    positives: Tensor
    positive_mask: Tensor
    positive_logits: Tensor
    background: Tensor | None
    background_logits: Tensor
    members: Tensor | None
    member_rows: Tensor
    group: ProcessGroup


class InvariancePropagationLoss(nn.Module):
    """The InvP objective against a :class:`MemoryBank`: instance term (Wang et al., 2020, Eq. 6) and invariance
    term (Eqs. 3-5).

    Args:
        temperature: tau > 0 (0.2 with an MLP head, 0.07 with a linear head: the paper's values).
        n_background: N_b, the number of nearest bank rows forming M_i; capped at the bank size.
        steps: l, propagation hops (Eq. 3).
        n_hard_positives: P, positives kept per anchor (Sec. 3.2).
        exact: exact de-duplicated positive set (paper) or the authors' concatenation approximation.
        hard_positives: keep the least similar positives (True) or the most similar ones (ablation).
        hard_negatives: background = the N_b nearest rows (True) or the whole bank (ablation).
        exclusive: drop the anchor's own row from the invariance term's background (the authors' default). With
            ``exact=True`` the row is masked out of M_i (a no-op when it is not there); with ``exact=False`` the
            authors' form is used, ``sum_{M_i} exp(s) - exp(s_i)``, which subtracts the anchor's term even when its
            row is not among M_i -- so that the concatenation mode reproduces their objective exactly.
        similarity: how the background's logits are computed (same values either way): ``dense`` differentiates the
            B x N product, ``gather`` selects M_i without autograd and differentiates only the chosen rows (bounded
            memory; faster for very large banks), ``auto`` picks by bank size
            (:func:`invprop.distributed.similarity.gather_is_cheaper`).
        positives: where positives come from: ``propagation`` (Eq. 3, InvP), ``knn`` (the ``knn_positives`` bank rows
            nearest to the anchor's embedding, the paper's KNN comparison) or ``none`` (instance discrimination
            only: the invariance term is zero).
        knn_positives: K of the ``knn`` source; None = ``n_hard_positives``.
        background: the invariance term's background: ``nearest`` (M_i, the paper's approximation and the authors'
            code) or ``paper`` (H_i united with M_i minus P_i, the paper's definition; :func:`paper_invariance_loss`).
            With ``exclusive`` the anchor's own row leaves either.

    The call returns an :class:`InvPLossOutput`; its ``instance`` and ``invariance`` are differentiable w.r.t. the
    (un-normalised) embeddings. The bank is read, never written: updating it is the caller's job.

    Example:
        >>> bank = MemoryBank(size=64, dim=8, num_neighbors=3)
        >>> loss = InvariancePropagationLoss(n_background=32, steps=2, n_hard_positives=5)
        >>> out = loss(torch.randn(4, 8, requires_grad=True), torch.tensor([0, 1, 2, 3]), bank)
        >>> out.instance.shape, out.hard_positives.shape
        (torch.Size([]), torch.Size([4, 5]))
    """

    def __init__(
        self,
        temperature: float = 0.2,
        n_background: int = 4096,
        steps: int = 3,
        n_hard_positives: int = 50,
        exact: bool = True,
        hard_positives: bool = True,
        hard_negatives: bool = True,
        exclusive: bool = True,
        similarity: str = "auto",
        positives: str = "propagation",
        knn_positives: int | None = None,
        background: str = "nearest",
    ) -> None:
        super().__init__()
        if background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {', '.join(BACKGROUNDS)}, got {background!r}")
        if positives not in POSITIVE_SOURCES:
            raise ValueError(f"positives must be one of {', '.join(POSITIVE_SOURCES)}, got {positives!r}")
        if knn_positives is not None:
            require("knn_positives", knn_positives, AT_LEAST_ONE)
        if similarity not in SIMILARITY_STRATEGIES:
            raise ValueError(f"similarity must be one of {', '.join(SIMILARITY_STRATEGIES)}, got {similarity!r}")
        require("temperature", temperature, POSITIVE)
        require("n_background", n_background, AT_LEAST_ONE)
        require("steps", steps, AT_LEAST_ONE)
        require("n_hard_positives", n_hard_positives, AT_LEAST_ONE)
        self.temperature = temperature
        self.n_background = n_background
        self.steps = steps
        self.n_hard_positives = n_hard_positives
        self.exact = exact
        self.hard_positives = hard_positives
        self.hard_negatives = hard_negatives
        self.exclusive = exclusive
        self.similarity = similarity
        self.positives = positives
        self.knn_positives = knn_positives if knn_positives is not None else n_hard_positives
        self.background = background

    def background_size(self, bank_size: int) -> int:
        """N_b actually used for a bank of ``bank_size`` rows: at most the bank (the method says so once per run)."""
        if not self.hard_negatives:
            return bank_size
        return min(self.n_background, bank_size)

    def _knn_count(self, bank: MemoryBank) -> int:
        return min(self.knn_positives, bank.size - 1)

    def _knn_within_background(self, bank: MemoryBank) -> bool:
        """True when the K nearest rows are the head of M_i, so they need no similarity pass of their own."""
        return (
            self.positives == "knn" and self.hard_negatives and self._knn_count(bank) < self.background_size(bank.size)
        )

    def discover_positives(self, query: Tensor, indices: Tensor, bank: MemoryBank) -> tuple[Tensor, Tensor]:
        """Positive candidates ``(indices, mask)``, both (B, M), from the configured source (M = 0 for ``none``)."""
        if self.positives == "propagation":
            return propagate(bank.neighbors, indices, self.steps, exact=self.exact)
        if self.positives == "knn":
            k = self._knn_count(bank)
            _, candidates = sharded_topk(query, bank.features, bank.partition, k + 1)
            nearest = online_neighbors(candidates, indices, k)
            return nearest, torch.ones_like(nearest, dtype=torch.bool)
        empty = indices.new_empty(indices.shape[0], 0)
        return empty, empty.bool()

    def _scores(self, query: Tensor, indices: Tensor, bank: MemoryBank) -> _Scores:
        """Logits of each anchor's own row, its positive candidates and its background.

        A bank held whole is a partition of one part: the same code scores it, with no collective.
        """
        part = bank.partition
        knn_in_background = self._knn_within_background(bank)
        if knn_in_background:  # taken from M_i below
            positives = indices.new_empty(indices.shape[0], 0)
            positive_mask = positives.bool()
        else:
            positives, positive_mask = self.discover_positives(query, indices, bank)
        extra = torch.cat([indices.view(-1, 1), positives.clamp_min(0)], dim=1)
        background: Tensor | None = None
        members: Tensor | None = None
        if self.hard_negatives:
            dense = SIMILARITY_STRATEGIES[self.similarity]
            shard = sharded_background_logits(query, bank.features, part, self.background_size(bank.size), extra, dense)
            background, members, member_rows = shard.background, shard.members, shard.rows
            background_sim, extra_sim = shard.logits, shard.column_logits
        else:
            # Ablation: the background is the whole bank, so every logit of this process's rows is needed (dense).
            background_sim = query @ bank.features.float().T
            extra_sim = owned_entries(background_sim.gather(1, part.local(extra)), part, extra)
            member_rows = torch.arange(part.start, part.stop, device=query.device).unsqueeze(0)
        extra_logits = extra_sim / self.temperature
        positive_logits = extra_logits[:, 1:]
        if knn_in_background:
            assert background is not None
            columns = nearest_columns(background, indices, self._knn_count(bank))
            positives = background.gather(1, columns)
            positive_mask = torch.ones_like(positives, dtype=torch.bool)
            positive_logits = sharded_row_logits(query, bank.features, part, positives) / self.temperature
        return _Scores(
            target=extra_logits[:, 0],
            positives=positives,
            positive_mask=positive_mask,
            positive_logits=positive_logits,
            background=background,
            background_logits=background_sim / self.temperature,
            members=members,
            member_rows=member_rows,
            group=part.reduce_group,
        )

    def forward(self, embeddings: Tensor, indices: Tensor, bank: MemoryBank) -> InvPLossOutput:
        """Evaluate the objective for a batch.

        Args:
            embeddings: (B, D) un-normalised head outputs.
            indices: (B,) bank rows of the batch's images.
            bank: the memory bank (read only).

        With a bank split over processes (``bank.partition.is_split``) the batches of all processes are gathered
        first: every process returns the outputs and the loss of the whole global batch, and each process's
        embeddings receive the gradient of the sum of the processes' losses (W times the single-process gradient,
        which DistributedDataParallel's averaging turns back into it).
        """
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            query = nn.functional.normalize(embeddings.float(), dim=1)
            indices = indices.to(query.device).long()
            if bank.partition.is_split:
                query = all_gather_rows(query, bank.partition.group)
                indices = all_gather_tensor(indices, bank.partition.group)
            scores = self._scores(query, indices, bank)
            group = scores.group
            instance = instance_loss(scores.target, scores.background_logits, scores.members, group).mean()
            positives, positive_mask = scores.positives, scores.positive_mask
            if positives.shape[1] == 0:  # positives="none": instance discrimination only
                empty = positives.new_empty(positives.shape)
                return InvPLossOutput(
                    instance,
                    query.sum() * 0.0,
                    positives,
                    positive_mask,
                    empty,
                    positive_mask,
                    scores.background,
                    indices,
                    query.detach(),
                )

            hard_logits, hard_mask, hard_columns = select_positives(
                scores.positive_logits, positive_mask, self.n_hard_positives, hardest=self.hard_positives
            )
            hard = torch.where(hard_mask, positives.gather(1, hard_columns), torch.full_like(hard_columns, -1))
            if self.background == "paper":
                not_anchor = scores.member_rows != indices.view(-1, 1) if self.exclusive else None
                negatives = outside_sets(scores.member_rows, torch.where(positive_mask, positives, -1))
                for mask in (scores.members, not_anchor):
                    negatives = negatives if mask is None else negatives & mask
                per_anchor = paper_invariance_loss(hard_logits, hard_mask, scores.background_logits, negatives, group)
            elif self.exclusive and not self.exact:
                # The authors' exclusive denominator, term for term: sum over M_i minus the anchor's own term.
                log_norm = subtracted_logsumexp(scores.background_logits, scores.target, scores.members, group)
                per_anchor = log_norm - masked_logsumexp(hard_logits, hard_mask)
            else:
                background_mask = scores.members
                if self.exclusive:
                    not_anchor = scores.member_rows != indices.view(-1, 1)
                    background_mask = not_anchor if background_mask is None else background_mask & not_anchor
                per_anchor = invariance_loss(hard_logits, hard_mask, scores.background_logits, background_mask, group)
            # The mean over anchors with a positive (0 when none has one), without asking the host which they are.
            has_positive = hard_mask.any(dim=1)
            kept = torch.where(has_positive, per_anchor, torch.zeros_like(per_anchor))
            invariance = kept.sum() / has_positive.sum().clamp_min(1)
        return InvPLossOutput(
            instance=instance,
            invariance=invariance,
            positives=positives,
            positive_mask=positive_mask,
            hard_positives=hard,
            hard_positive_mask=hard_mask,
            background=scores.background,
            anchors=indices,
            queries=query.detach(),
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, n_background={self.n_background}, steps={self.steps}, "
            f"n_hard_positives={self.n_hard_positives}, exact={self.exact}, hard_positives={self.hard_positives}, "
            f"hard_negatives={self.hard_negatives}, exclusive={self.exclusive}, similarity={self.similarity}, "
            f"positives={self.positives}, knn_positives={self.knn_positives}, background={self.background}"
        )
