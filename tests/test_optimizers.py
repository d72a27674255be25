"""The optimiser registry (``optim.optimizer``): each entry keeps the groups' own weight decay and takes the
settings it uses; a name outside the registry is a one-line error with the closest name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from invprop.config import from_dict, validate
from invprop.engine.optimizer import parameter_groups
from invprop.errors import ConfigError
from invprop.optimizers import OPTIMIZERS


def _groups() -> list[dict]:
    return parameter_groups(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)), weight_decay=0.1)


def test_sgd_keeps_the_groups_weight_decay_and_takes_the_momentum() -> None:
    optimizer = OPTIMIZERS.get("sgd")(_groups(), 0.5, 0.8, [0.9, 0.999])
    assert isinstance(optimizer, torch.optim.SGD)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    assert {g["momentum"] for g in optimizer.param_groups} == {0.8} and optimizer.param_groups[0]["lr"] == 0.5


def test_adamw_decouples_the_groups_weight_decay_and_takes_the_betas() -> None:
    optimizer = OPTIMIZERS.get("adamw")(_groups(), 1e-3, 0.9, [0.8, 0.95])
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    assert {g["betas"] for g in optimizer.param_groups} == {(0.8, 0.95)}


def test_an_unknown_optimizer_is_refused_with_the_closest_name() -> None:
    with pytest.raises(ConfigError, match="optim.optimizer must be one of .*adamw.*did you mean adamw"):
        validate(from_dict({"optim": {"optimizer": "adam_w"}}))
