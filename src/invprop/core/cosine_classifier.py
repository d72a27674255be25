"""Parametric instance classification (Liu et al., 2021): a cosine-softmax classifier with one class per training image.

Every image i has a weight row w_i; the logits of an embedding z are ``cos(w_j, z) / tau`` for all N rows, with a
full softmax (no sampling). Two devices from the paper make it trainable: hard-class label smoothing (Eqs. 2/3) --
the target puts ``1 - alpha`` on the image's own class and ``alpha / k`` on each of the k classes whose weights are
most similar to its own -- and a "contrastive prior" initialisation of the weights (done by the method, which owns
the data pass).

The weight matrix may be split over the processes of a distributed run (the paper's hybrid parallelism; see
:mod:`invprop.distributed`): each process holds a contiguous block of rows, the batch embeddings are gathered, each
process computes the logits of its rows, and the softmax denominators are combined with a distributed log-sum-exp.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from invprop.core.graph import sharded_knn_graph
from invprop.distributed.collectives import all_gather_rows, all_gather_tensor, all_reduce_sum, masked_logsumexp
from invprop.distributed.partition import RowPartition, SplitRowsState, partition_randn
from invprop.distributed.rows import owned_entries
from invprop.settings import AT_LEAST_TWO, POSITIVE, UNIT_INTERVAL, require

#: Marker for "no hard classes known yet" in the hard-class table.
UNKNOWN_CLASS = -1


def cosine_logits(embeddings: Tensor, weights: Tensor, temperature: float) -> Tensor:
    """Liu et al. (2021), Eq. 1's logits: ``cos(w_j, z_b) / tau``.

    Args:
        embeddings: (B, D) un-normalised embeddings z.
        weights: (R, D) un-normalised class weights w.
        temperature: tau > 0.

    Returns:
        (B, R) float32.
    """
    z = nn.functional.normalize(embeddings.float(), dim=1)
    w = nn.functional.normalize(weights.float(), dim=1)
    return z @ w.T / temperature


def smoothed_targets(classes: Tensor, hard_classes: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Liu et al. (2021), Eq. 3's target distribution as sparse columns: ``1 - alpha`` on the own class, ``alpha / k`` on each hard one.

    Args:
        classes: (B,) each sample's own class (its image index).
        hard_classes: (B, k) its k hardest other classes; rows containing :data:`UNKNOWN_CLASS` (not mined yet)
            get the plain one-hot target.
        alpha: smoothing factor in [0, 1); 0 gives Eq. 1's one-hot target.

    Returns:
        ``(columns, weights)``, both (B, 1 + k): class indices (own class first) and target probabilities, each row
        summing to 1. Entries of unknown classes have weight 0 and column 0.
    """
    require("alpha", alpha, UNIT_INTERVAL)
    k = hard_classes.shape[1]
    smooth = (hard_classes >= 0).all(dim=1) if k and alpha > 0 else torch.zeros_like(classes, dtype=torch.bool)
    own = torch.where(smooth, 1.0 - alpha, 1.0).view(-1, 1)
    hard_weights = torch.where(smooth.view(-1, 1), alpha / max(k, 1), 0.0).expand(-1, k)
    columns = torch.cat([classes.view(-1, 1), hard_classes.clamp_min(0)], dim=1)
    return columns, torch.cat([own, hard_weights], dim=1)


def smoothed_cross_entropy(column_logits: Tensor, target_weights: Tensor, log_normaliser: Tensor) -> Tensor:
    """Liu et al. (2021), Eq. 3: ``-sum_c t_c log p_c = log sum_j exp(s_j) - sum_c t_c s_c`` (targets summing to 1).

    Args:
        column_logits: (B, C) logits of the target's classes.
        target_weights: (B, C) target probabilities t_c.
        log_normaliser: (B,) ``log sum_j exp(s_j)`` over all N classes.

    Returns:
        (B,) per-sample losses.
    """
    return log_normaliser - (target_weights * column_logits.float()).sum(dim=1)


class CosineInstanceClassifier(SplitRowsState, nn.Module):
    """N-way cosine-softmax classifier, with the loss of Eq. 3 and hard-class mining; rows may be split over processes.

    Args:
        num_classes: N, one class per training image.
        dim: embedding dimension D.
        temperature: tau of the cosine softmax.
        smoothing: alpha of hard-class label smoothing (0 = off, Eq. 1).
        hard_classes: k, hard classes per instance (used when ``smoothing > 0``).
        partition: which rows this process holds (default: all; see :class:`invprop.core.sharded.RowPartition`).
        generator: RNG for the Gaussian random initialisation of the weights.

    Attributes:
        weight: (R, D) parameter, rows ``[partition.start, partition.stop)``.
        hard: (R, k) int64 buffer, the hard classes of this process's rows (:data:`UNKNOWN_CLASS` until mined).

    With a split partition, :meth:`forward`, :meth:`mine_hard_classes`, :meth:`set_rows` and ``state_dict()`` are
    collectives. The checkpointed ``weight`` and ``hard`` are always whole (N rows), gathered on rank 0, and load
    into any partition.

    Example:
        >>> clf = CosineInstanceClassifier(num_classes=50, dim=8, temperature=0.2, smoothing=0.2, hard_classes=3)
        >>> clf.mine_hard_classes()
        >>> loss = clf(torch.randn(4, 8), torch.tensor([0, 1, 2, 3]))
        >>> loss.shape
        torch.Size([4])
    """

    weight: nn.Parameter
    hard: Tensor
    split_rows = ("weight", "hard")

    def __init__(
        self,
        num_classes: int,
        dim: int,
        temperature: float = 0.2,
        smoothing: float = 0.2,
        hard_classes: int = 100,
        partition: RowPartition | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        require("num_classes", num_classes, AT_LEAST_TWO)
        require("temperature", temperature, POSITIVE)
        require("smoothing", smoothing, UNIT_INTERVAL)
        if smoothing > 0 and not 1 <= hard_classes < num_classes:
            raise ValueError(f"hard_classes must be in [1, {num_classes - 1}] with smoothing on, got {hard_classes}")
        partition = partition if partition is not None else RowPartition.whole(num_classes)
        if partition.total != num_classes:
            raise ValueError(f"partition covers {partition.total} rows, but there are {num_classes} classes")
        self.num_classes = num_classes
        self.dim = dim
        self.temperature = temperature
        self.smoothing = smoothing
        self.num_hard = hard_classes if smoothing > 0 else 0
        self.partition = partition
        self.weight = nn.Parameter(partition_randn(num_classes, dim, partition, generator))
        self.register_buffer("hard", torch.full((partition.rows, self.num_hard), UNKNOWN_CLASS, dtype=torch.long))

    def forward(self, embeddings: Tensor, classes: Tensor) -> Tensor:
        """Per-sample losses (Eq. 3, or Eq. 1 without smoothing) of a batch.

        Args:
            embeddings: (B, D) un-normalised embeddings of this process's batch.
            classes: (B,) their classes (image indices).

        Returns:
            (B,) losses -- with a split partition, (W x B,): the losses of every process's batch, in rank order, the
            same on every process. Gradients reach this process's embeddings and weight rows; they are those of the
            sum of the processes' losses.
        """
        part = self.partition
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            z = embeddings.float()
            classes = classes.to(z.device).long()
            if part.is_split:
                z = all_gather_rows(z, part.group)
                classes = all_gather_tensor(classes, part.group)
            logits = cosine_logits(z, self.weight, self.temperature)  # (B, R): this process's classes
            log_normaliser = masked_logsumexp(logits, None, part.reduce_group)
            columns, weights = smoothed_targets(classes, self.hard_classes_of(classes), self.smoothing)
            column_logits = owned_entries(logits.gather(1, part.local(columns)), part, columns)
            return smoothed_cross_entropy(column_logits, weights, log_normaliser)

    def hard_classes_of(self, classes: Tensor) -> Tensor:
        """(B, k) hard classes of global ``classes`` (the same on every process; a collective when split)."""
        part = self.partition
        owned = part.owns(classes)
        rows = self.hard[part.local(classes)].masked_fill(~owned.unsqueeze(1), 0)
        if part.is_split and self.num_hard:
            # Each class's row is held by one process; the others contribute zeros, shifted so -1 survives the sum.
            rows = all_reduce_sum((rows + 1).masked_fill(~owned.unsqueeze(1), 0), part.reduce_group) - 1
        return rows

    @torch.no_grad()
    def mine_hard_classes(self, chunk_size: int = 4096) -> None:
        """Each class's k most similar other classes by weight cosine, exact and chunked (never an N x N matrix)."""
        if self.num_hard == 0:
            return
        unit = nn.functional.normalize(self.weight.detach().float(), dim=1)
        self.hard.copy_(sharded_knn_graph(unit, self.partition, self.num_hard, chunk_size, local_only=True))

    @torch.no_grad()
    def set_rows(self, classes: Tensor, features: Tensor) -> None:
        """Set the weight rows of global ``classes`` (B,) to ``features`` (B, D) (rows held elsewhere are skipped)."""
        owned = self.partition.owns(classes)
        self.weight[self.partition.local(classes[owned])] = features[owned].to(self.weight.dtype)

    def extra_repr(self) -> str:
        rows = f", rows=[{self.partition.start}, {self.partition.stop})" if self.partition.is_split else ""
        return (
            f"num_classes={self.num_classes}, dim={self.dim}, temperature={self.temperature}, "
            f"smoothing={self.smoothing}, hard_classes={self.num_hard}{rows}"
        )


__all__ = [
    "CosineInstanceClassifier",
    "UNKNOWN_CLASS",
    "cosine_logits",
    "smoothed_cross_entropy",
    "smoothed_targets",
]
