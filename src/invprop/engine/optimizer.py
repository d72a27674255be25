"""The optimiser of a run: its parameter groups, and its state in checkpoints when some parameters are split by rows
over processes (the instance classifier's weights): gathered whole on save, cut to each process's rows on load."""

from __future__ import annotations

from typing import Any, Iterable, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor, nn

from invprop.distributed.partition import RowPartition, gather_partition

#: The key of a parameter group's learning-rate multiplier (layer-wise decay, the biases' own lr); groups without it
#: use 1.
LR_SCALE = "lr_scale"
#: The key of a group whose learning rate stays at the peak (no warm-up, no decay: SimSiam's predictor).
FIXED_LR = "fixed_lr"
#: The key of a group of biases and norm-layer parameters: LARS neither adapts nor decays it.
EXCLUDE = "exclude"


@runtime_checkable
class GroupsOwnParameters(Protocol):
    """A module that groups its own parameters for the optimiser (a timm backbone: layer-wise decay, exemptions
    from weight decay)."""

    def parameter_groups(self, weight_decay: float, layer_decay: float) -> list[dict[str, Any]]: ...


def parameter_groups(
    model: nn.Module,
    weight_decay: float,
    layer_decay: float = 1.0,
    exclude_norm_and_bias: bool = True,
    norm_bias_lr_scale: float = 1.0,
    fixed_lr: Sequence[nn.Module] = (),
    skip: Sequence[nn.Module] = (),
) -> list[dict[str, Any]]:
    """The optimiser's groups of ``model``'s trainable parameters.

    First those of submodules that group their own (:class:`GroupsOwnParameters`, given ``layer_decay``), then the
    rest in two groups: weights with ``weight_decay``, and the biases and norm-layer parameters (every 0-d/1-d
    tensor), marked :data:`EXCLUDE`, without weight decay and at ``norm_bias_lr_scale`` times the learning rate. With
    ``exclude_norm_and_bias`` false every parameter is decayed (and adapted by LARS). The parameters of the modules
    in ``fixed_lr`` get groups of their own marked :data:`FIXED_LR`; those of the modules in ``skip`` are left out
    (another optimiser owns them). Empty groups are left out.

    Example:
        >>> groups = parameter_groups(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)), 0.1)
        >>> [(len(g["params"]), g["weight_decay"], g[EXCLUDE]) for g in groups]
        [(1, 0.1, False), (3, 0.0, True)]
    """
    groups: list[dict[str, Any]] = []
    skipped = {id(p) for module in skip for p in module.parameters()}
    for module in model.modules():
        if isinstance(module, GroupsOwnParameters) and module is not model:
            for own in module.parameter_groups(weight_decay, layer_decay):
                own = {**own, "params": [p for p in own["params"] if id(p) not in skipped]}
                if own["params"]:
                    excluded = exclude_norm_and_bias and own["weight_decay"] == 0.0
                    groups.append({**own, "weight_decay": 0.0 if excluded else weight_decay, EXCLUDE: excluded})
    grouped = skipped | {id(p) for group in groups for p in group["params"]}
    fixed = {id(p) for module in fixed_lr for p in module.parameters()}
    plain: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for param in model.parameters():
        if param.requires_grad and id(param) not in grouped:
            excluded = exclude_norm_and_bias and param.ndim <= 1
            plain.setdefault((id(param) in fixed, excluded), []).append(param)
    for (is_fixed, excluded), params in sorted(plain.items()):
        group: dict[str, Any] = {"params": params, "weight_decay": 0.0 if excluded else weight_decay, EXCLUDE: excluded}
        if excluded and norm_bias_lr_scale != 1.0:
            group[LR_SCALE] = norm_bias_lr_scale
        if is_fixed:
            group[FIXED_LR] = True
        groups.append(group)
    return groups


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


__all__ = [
    "EXCLUDE",
    "FIXED_LR",
    "LR_SCALE",
    "GroupsOwnParameters",
    "gathered_state_dict",
    "load_split_state_dict",
    "parameter_groups",
]
