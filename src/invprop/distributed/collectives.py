"""torch.distributed collectives the objectives need, differentiable where gradients must cross ranks.

Convention: the objective of a distributed step is the SUM of the per-rank losses. A collective whose output is the
same on every rank (an all-gather, an all-reduce) therefore backpropagates by summing the output's gradient over
ranks, after which each rank keeps the part that belongs to its own input. With that rule the gradient of any input
equals the gradient of the single-process computation of the summed objective, which the tests check to 1e-5.

Every function works without an initialised process group (or with a group of one process) and then reduces to the
plain local computation, so single-process code paths stay collective-free.

``group`` follows torch.distributed's convention -- ``None`` is the DEFAULT group, i.e. every process -- with one
addition: :data:`LOCAL`, this process alone, on which every collective is the identity. Code that means "no
collective" passes ``LOCAL``, never ``None``: inside a user's own multi-process job, ``None`` would reduce across
processes that hold different samples.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


class _Local:
    """The type of :data:`LOCAL`."""

    def __repr__(self) -> str:
        return "LOCAL"


#: The group of this process alone: collectives over it are the identity, whatever torch.distributed's state.
LOCAL = _Local()
#: A torch.distributed ProcessGroup, None (the default group: every process), or :data:`LOCAL`.
ProcessGroup = Any
#: torch.distributed backends a run may ask for: ``auto`` picks nccl on CUDA and gloo on the CPU.
BACKENDS = ("auto", "nccl", "gloo")


def is_distributed(group: ProcessGroup | None = None) -> bool:
    """True when ``group`` spans more than one process (never for :data:`LOCAL`)."""
    if group is LOCAL:
        return False
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def world_size(group: ProcessGroup | None = None) -> int:
    """Processes in ``group`` (1 for :data:`LOCAL` and without torch.distributed)."""
    if group is LOCAL or not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def rank(group: ProcessGroup | None = None) -> int:
    """This process's rank in ``group`` (0 for :data:`LOCAL` and without torch.distributed)."""
    if group is LOCAL or not (dist.is_available() and dist.is_initialized()):
        return 0
    return dist.get_rank(group)


def all_gather_objects(value: Any, group: ProcessGroup | None = None) -> list[Any]:
    """Every process's ``value`` (picklable), by rank; ``[value]`` in one process."""
    if not is_distributed(group):
        return [value]
    gathered: list[Any] = [None] * world_size(group)
    dist.all_gather_object(gathered, value, group=group)
    return gathered


@torch.no_grad()
def all_gather_tensor(tensor: Tensor, group: ProcessGroup | None = None) -> Tensor:
    """Concatenate every rank's ``tensor`` along dim 0, in rank order (no gradient). Shapes must agree."""
    if not is_distributed(group):
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size(group))]
    dist.all_gather(parts, tensor.contiguous(), group=group)
    return torch.cat(parts, dim=0)


class _AllGatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: Tensor, group: ProcessGroup | None) -> Tensor:
        ctx.group = group
        ctx.rows = tensor.shape[0]
        return all_gather_tensor(tensor, group)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        start = rank(ctx.group) * ctx.rows
        return grad[start : start + ctx.rows], None


def all_gather_rows(tensor: Tensor, group: ProcessGroup | None = None) -> Tensor:
    """Differentiable all-gather: (B, ...) per rank -> (W x B, ...) on every rank, rank 0's rows first.

    The backward pass sums the gradient over ranks and returns each rank the rows it contributed.
    """
    if not is_distributed(group):
        return tensor
    return _AllGatherRows.apply(tensor, group)


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: Tensor, group: ProcessGroup | None) -> Tensor:
        ctx.group = group
        out = tensor.contiguous().clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def all_reduce_sum(tensor: Tensor, group: ProcessGroup | None = None) -> Tensor:
    """Differentiable all-reduce (sum): every rank gets the sum of all ranks' ``tensor``."""
    if not is_distributed(group):
        return tensor
    return _AllReduceSum.apply(tensor, group)


@torch.no_grad()
def all_reduce_max(tensor: Tensor, group: ProcessGroup | None = None) -> Tensor:
    """Element-wise maximum over ranks (no gradient); returns a new tensor."""
    out = tensor.contiguous().clone()
    if is_distributed(group):
        dist.all_reduce(out, op=dist.ReduceOp.MAX, group=group)
    return out


def masked_logsumexp(logits: Tensor, mask: Tensor | None = None, group: ProcessGroup = LOCAL) -> Tensor:
    """``log sum_j exp(logits[:, j])`` over the entries where ``mask`` is True, of every process of ``group``, in
    float32.

    Each process holds (B, M_r) logits of the same B rows (M_r may differ, even be 0). With :data:`LOCAL` (the
    default) this is ``torch.logsumexp`` over the masked entries. Over a group, the maximum is agreed first (an
    all-reduce MAX), each process sums ``exp(logit - max)`` locally, and the sums are all-reduced -- so the result
    equals the log-sum-exp of the concatenated logits to float32 rounding, without moving any B x M tensor.

    Args:
        logits: (B, M_r) this process's logits.
        mask: optional (B, M_r) bool, True where an entry counts.
        group: the processes whose entries belong to the sum.

    Returns:
        (B,) float32, the same on every process of ``group``; differentiable w.r.t. every process's ``logits``.
        Rows with no entry give ``-inf``.

    Example:
        >>> logits = torch.tensor([[0.0, 1.0, 2.0]])
        >>> float(masked_logsumexp(logits, torch.tensor([[True, False, True]]))) == float(torch.logsumexp(logits[:, [0, 2]], 1))
        True
    """
    logits = logits.float()
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    if not is_distributed(group):
        return torch.logsumexp(logits, dim=1)
    with torch.no_grad():
        if logits.shape[1]:
            peak = logits.amax(dim=1)
        else:
            peak = logits.new_full((logits.shape[0],), float("-inf"))
        peak = all_reduce_max(peak, group)
        peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    local = torch.exp(logits - peak.unsqueeze(1)).sum(dim=1)
    return peak + torch.log(all_reduce_sum(local, group))


__all__ = [
    "BACKENDS",
    "LOCAL",
    "ProcessGroup",
    "all_gather_objects",
    "all_gather_rows",
    "all_gather_tensor",
    "all_reduce_max",
    "all_reduce_sum",
    "is_distributed",
    "masked_logsumexp",
    "rank",
    "world_size",
]
