"""What an optimiser's recipe schedules besides the learning rate: the weight decay on a cosine from
``weight_decay`` to ``final_weight_decay`` (DINO's 0.04 -> 0.4), excluded groups left at 0, and the per-tensor
gradient clipping of ``clip_grad``; bad values refused in one line."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from invprop.config import learning_rate_plan, optimizer_options
from invprop.engine.optimizer import parameter_groups
from invprop.engine.run_optimizers import RunOptimizer
from invprop.errors import ConfigError
from invprop.optim_settings import OptimizerSettings
from invprop.optimizers import OPTIMIZERS, clip_tensor_gradient_


def _run(settings: OptimizerSettings, module: nn.Module, epochs: int = 4) -> RunOptimizer:
    groups = parameter_groups(module, settings.weight_decay, settings.layer_decay, settings.exclude_norm_and_bias)
    plan = learning_rate_plan(settings, 256, epochs)
    optimizer = OPTIMIZERS.get(settings.optimizer)(groups, optimizer_options(settings, plan.peak))
    return RunOptimizer("main", optimizer, settings, plan, epochs)


def _decays(run: RunOptimizer) -> list[float]:
    return [group["weight_decay"] for group in run.optimizer.param_groups]


def test_the_weight_decay_follows_a_cosine_from_its_start_to_its_end_and_excluded_groups_stay_at_zero() -> None:
    module = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    run = _run(OptimizerSettings(optimizer="adamw", weight_decay=0.04, final_weight_decay=0.4), module)
    steps_per_epoch, total = 5, 20
    for step in (0, 7, 10, 19, 20):
        run.set_schedules(step, steps_per_epoch)
        expected = 0.4 + (0.04 - 0.4) * 0.5 * (1 + math.cos(math.pi * step / total))
        decayed, excluded = _decays(run)
        assert decayed == pytest.approx(expected) and excluded == 0.0
    run.set_schedules(0, steps_per_epoch)
    assert _decays(run)[0] == pytest.approx(0.04)


def test_without_a_final_weight_decay_the_decay_stays_as_given() -> None:
    run = _run(OptimizerSettings(weight_decay=5e-4), nn.Linear(3, 4))
    for step in (0, 9, 19):
        run.set_schedules(step, 5)
        assert _decays(run) == pytest.approx([5e-4, 0.0])


def test_a_final_weight_decay_without_a_weight_decay_to_start_from_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match="final_weight_decay=0.4 needs a weight_decay above 0") as error:
        learning_rate_plan(OptimizerSettings(weight_decay=0.0, final_weight_decay=0.4), 256, 4)
    assert "\n" not in str(error.value)


def test_each_tensor_is_clipped_to_the_limit_on_its_own_and_smaller_ones_are_left_alone() -> None:
    module = nn.Linear(2, 2)
    run = _run(OptimizerSettings(clip_grad=3.0), module)
    module.weight.grad = torch.tensor([[30.0, 0.0], [0.0, 40.0]])  # norm 50
    module.bias.grad = torch.tensor([1.0, 2.0])  # norm 5 ** 0.5 < 3
    run.clip_gradients()
    assert module.weight.grad.flatten().tolist() == pytest.approx([1.8, 0.0, 0.0, 2.4], rel=1e-5)
    assert module.bias.grad.tolist() == [1.0, 2.0]


def test_the_global_scope_scales_every_tensor_by_the_joint_norm_and_leaves_a_small_total_alone() -> None:
    module = nn.Linear(2, 2)
    run = _run(OptimizerSettings(clip_grad=5.0, clip_scope="global"), module)
    module.weight.grad = torch.tensor([[6.0, 0.0], [0.0, 8.0]])  # norm 10
    module.bias.grad = torch.tensor([0.0, 0.0])  # joint norm 10: every tensor scaled by 5 / 10
    run.clip_gradients()
    assert module.weight.grad.flatten().tolist() == pytest.approx([3.0, 0.0, 0.0, 4.0], rel=1e-5)
    module.weight.grad = torch.tensor([[3.0, 0.0], [0.0, 0.0]])
    module.bias.grad = torch.tensor([0.0, 4.0])  # joint norm 5: at the limit, nothing changes
    run.clip_gradients()
    assert module.weight.grad.flatten().tolist() == pytest.approx([3.0, 0.0, 0.0, 0.0], rel=1e-5)
    assert module.bias.grad.tolist() == pytest.approx([0.0, 4.0], rel=1e-5)


def test_no_clipping_unless_asked() -> None:
    module = nn.Linear(2, 2)
    run = _run(OptimizerSettings(), module)
    module.weight.grad = torch.full((2, 2), 100.0)
    run.clip_gradients()
    assert module.weight.grad.tolist() == [[100.0, 100.0], [100.0, 100.0]]


def test_clipping_one_tensor_matches_the_formula() -> None:
    grad = torch.tensor([3.0, 4.0])
    clip_tensor_gradient_(grad, 1.0)
    assert grad.tolist() == pytest.approx([3 / (5 + 1e-6), 4 / (5 + 1e-6)])
