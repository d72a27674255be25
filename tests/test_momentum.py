"""EMA updates of momentum networks and BYOL's cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from invprop.core.momentum import cosine_momentum, ema_update_, frozen_copy, linear_momentum


def test_ema_update_moves_each_parameter_and_copies_buffers() -> None:
    online = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    target = frozen_copy(online)
    assert all(not p.requires_grad for p in target.parameters())
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
        online[1].running_mean.fill_(5.0)
    before = [p.clone() for p in target.parameters()]
    ema_update_(target, online, 0.9)
    for t, o, b in zip(target.parameters(), online.parameters(), before, strict=True):
        assert torch.allclose(t, 0.9 * b + 0.1 * o)
    assert torch.equal(target[1].running_mean, online[1].running_mean)
    ema_update_(target, online, 0.0)  # m = 0: a copy
    assert all(torch.equal(t, o) for t, o in zip(target.parameters(), online.parameters(), strict=True))


def test_cosine_momentum_follows_byol_s_formula() -> None:
    base, total = 0.996, 1000
    for k in (0, 1, 250, 500, 999, 1000):
        expected = 1 - (1 - base) * (math.cos(math.pi * k / total) + 1) / 2
        assert cosine_momentum(base, k, total) == pytest.approx(expected)
    assert cosine_momentum(0.99, 500, 1000, final=0.999) == pytest.approx((0.99 + 0.999) / 2)
    assert cosine_momentum(0.99, 5000, 1000) == 1.0  # past the end: the final value
    assert cosine_momentum(0.99, 10, 1000, final=0.99) == 0.99  # equal ends: fixed


def test_linear_momentum_rises_by_equal_steps_and_stays_at_its_final_value() -> None:
    base, total = 0.996, 8
    values = [linear_momentum(base, k, total) for k in range(total + 3)]
    steps = [b - a for a, b in zip(values[: total + 1], values[1 : total + 1])]
    assert steps == pytest.approx([(1.0 - base) / total] * total)
    assert values[0] == base and values[total:] == pytest.approx([1.0] * 3)
