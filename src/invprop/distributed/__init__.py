"""Layer 1: a batch of queries against N rows, held whole by one process or split over the processes of a group.

``collectives`` (differentiable all-gather and all-reduce, the masked log-sum-exp, the :data:`LOCAL` group),
``similarity`` (the local kernels: blocked top-k, gathered dot products, the dense-vs-gathered rule), ``partition``
(which rows a process holds; split state in checkpoints) and ``rows`` (top-k, chosen-row logits and the background of
a batch over the rows of every process). Nothing here knows about a method: the memory bank and the instance
classifier (``invprop.core``) are both built on it.
"""

from invprop.distributed.collectives import (
    BACKENDS,
    LOCAL,
    all_gather_rows,
    all_gather_tensor,
    all_reduce_sum,
    masked_logsumexp,
)
from invprop.distributed.partition import RowPartition, gather_partition
from invprop.distributed.rows import sharded_background_logits, sharded_row_logits, sharded_topk
from invprop.distributed.similarity import gathered_dot, topk_similarities

__all__ = [
    "BACKENDS",
    "LOCAL",
    "RowPartition",
    "all_gather_rows",
    "all_gather_tensor",
    "all_reduce_sum",
    "gather_partition",
    "gathered_dot",
    "masked_logsumexp",
    "sharded_background_logits",
    "sharded_row_logits",
    "sharded_topk",
    "topk_similarities",
]
