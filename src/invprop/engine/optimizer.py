"""The optimiser of a run: its parameter groups, and its state in checkpoints when some parameters are split by rows
over processes (the instance classifier's weights): gathered whole on save, cut to each process's rows on load."""

from __future__ import annotations

from typing import Any, Iterable, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from invprop.distributed.partition import RowPartition, gather_partition

#: The key of a parameter group's learning-rate multiplier (layer-wise decay); groups without it use 1.
LR_SCALE = "lr_scale"


@runtime_checkable
class GroupsOwnParameters(Protocol):
    """A module that groups its own parameters for the optimiser (a timm backbone: layer-wise decay, exemptions
    from weight decay)."""

    def parameter_groups(self, weight_decay: float, layer_decay: float) -> list[dict[str, Any]]: ...


def parameter_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0) -> list[dict[str, Any]]:
    """The optimiser's groups of ``model``'s trainable parameters: those of submodules that group their own
    (:class:`GroupsOwnParameters`, given ``layer_decay``), then two groups of the rest: weights with decay, and
    norm-layer parameters and biases (all 0-d/1-d tensors) without. Empty groups are left out."""
    groups: list[dict[str, Any]] = []
    for module in model.modules():
        if isinstance(module, GroupsOwnParameters) and module is not model:
            groups += [g for g in module.parameter_groups(weight_decay, layer_decay) if g["params"]]
    grouped = {id(p) for group in groups for p in group["params"]}
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for param in model.parameters():
        if param.requires_grad and id(param) not in grouped:
            (no_decay if param.ndim <= 1 else decay).append(param)
    plain = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return groups + [group for group in plain if group["params"]]


def _split_positions(
    optimizer: torch.optim.Optimizer, split: Iterable[tuple[nn.Parameter, RowPartition]]
) -> dict[int, RowPartition]:
    """Positions in the optimiser's state dict of the parameters split over processes, with their partitions."""
    position = {id(p): i for i, p in enumerate(p for group in optimizer.param_groups for p in group["params"])}
    return {position[id(param)]: part for param, part in split if part.is_split}


def gathered_state_dict(
    optimizer: torch.optim.Optimizer, split: Iterable[tuple[nn.Parameter, RowPartition]]
) -> dict[str, Any]:
    """The optimiser's state dict with the per-row state of split parameters gathered whole (a collective)."""
    state = optimizer.state_dict()
    for index, part in _split_positions(optimizer, split).items():
        for key, value in state["state"].get(index, {}).items():
            if isinstance(value, Tensor) and value.dim() >= 1 and value.shape[0] == part.rows:
                whole = gather_partition(value, part)
                state["state"][index][key] = whole if whole is not None else value
    return state


def load_split_state_dict(
    optimizer: torch.optim.Optimizer, state: dict[str, Any], split: Iterable[tuple[nn.Parameter, RowPartition]]
) -> None:
    """Load a whole state dict (from :func:`gathered_state_dict`), keeping each split parameter's own rows."""
    for index, part in _split_positions(optimizer, split).items():
        for key, value in state["state"].get(index, {}).items():
            if isinstance(value, Tensor) and value.dim() >= 1 and value.shape[0] == part.total:
                state["state"][index][key] = value[part.start : part.stop]
    optimizer.load_state_dict(state)


__all__ = ["LR_SCALE", "GroupsOwnParameters", "gathered_state_dict", "load_split_state_dict", "parameter_groups"]
