"""The optimiser registry (``optim.optimizer``): each entry keeps the groups' own weight decay and takes the
settings it uses; a name outside the registry is a one-line error with the closest name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from invprop.config import from_dict, validate
from invprop.engine.optimizer import parameter_groups
from invprop.errors import ConfigError
from invprop.optimizers import OPTIMIZERS, OptimizerOptions


def _groups() -> list[dict]:
    return parameter_groups(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)), weight_decay=0.1)


def test_sgd_keeps_the_groups_weight_decay_and_takes_the_momentum() -> None:
    optimizer = OPTIMIZERS.get("sgd")(_groups(), OptimizerOptions(0.5, 0.8, (0.9, 0.999)))
    assert isinstance(optimizer, torch.optim.SGD)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    assert {g["momentum"] for g in optimizer.param_groups} == {0.8} and optimizer.param_groups[0]["lr"] == 0.5


def test_adamw_decouples_the_groups_weight_decay_and_takes_the_betas() -> None:
    optimizer = OPTIMIZERS.get("adamw")(_groups(), OptimizerOptions(1e-3, 0.9, (0.8, 0.95)))
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]
    assert {g["betas"] for g in optimizer.param_groups} == {(0.8, 0.95)}


def test_an_unknown_optimizer_is_refused_with_the_closest_name() -> None:
    with pytest.raises(ConfigError, match="optim.optimizer must be one of .*adamw.*did you mean adamw"):
        validate(from_dict({"optim": {"optimizer": "adam_w"}}))


def _lars_by_hand(params: list[torch.Tensor], grads: list[list[torch.Tensor]], lrs: list[float], excluded: list[bool],
                  weight_decay: float, eta: float, clip: bool, momentum: float) -> list[torch.Tensor]:  # fmt: skip
    """LARS written out tensor by tensor (the docstring's rule), over the steps of ``grads`` at ``lrs``."""
    weights = [p.clone() for p in params]
    buffers = [torch.zeros_like(p) for p in params]
    for step_grads, lr in zip(grads, lrs):
        for i, (w, g) in enumerate(zip(weights, step_grads)):
            if excluded[i]:
                update = g
            else:
                decayed = g + weight_decay * w
                w_norm, g_norm = float(w.norm()), float(decayed.norm())
                trust = eta * w_norm / g_norm if w_norm > 0 and g_norm > 0 else 1.0
                update = (min(trust / lr, 1.0) if clip else trust) * decayed
            buffers[i] = momentum * buffers[i] + update
            weights[i] = w - lr * buffers[i]
    return weights


@pytest.mark.parametrize("clip", [False, True], ids=["plain", "larc-clip"])
def test_lars_follows_its_rule_tensor_by_tensor(clip: bool) -> None:
    from invprop.optimizers import LARS

    g = torch.Generator().manual_seed(0)
    params = [
        torch.randn(4, 3, generator=g),
        torch.zeros(5, 2),
        torch.randn(3, generator=g),
        torch.randn(6, generator=g),
    ]
    excluded = [False, False, True, True]  # a weight, an all-zero weight (trust 1), a bias and a norm scale
    grads = [[torch.randn(p.shape, generator=g) for p in params] for _ in range(3)]
    lrs = [0.5, 0.05, 0.2]  # e.g. a schedule: LARC's clip compares each layer's lr with these
    weights = [nn.Parameter(p.clone()) for p in params]
    optimizer = LARS(
        [{"params": weights[:2], "weight_decay": 0.01, "exclude": False},
         {"params": weights[2:], "weight_decay": 0.0, "exclude": True}],
        lr=0.5, momentum=0.9, eta=0.02, clip=clip,
    )  # fmt: skip
    for step_grads, lr in zip(grads, lrs):
        for group in optimizer.param_groups:
            group["lr"] = lr
        for w, grad in zip(weights, step_grads):
            w.grad = grad.clone()
        optimizer.step()
    expected = _lars_by_hand(params, grads, lrs, excluded, weight_decay=0.01, eta=0.02, clip=clip, momentum=0.9)
    for got, want in zip(weights, expected):
        torch.testing.assert_close(got.detach(), want, rtol=1e-6, atol=1e-7)
    assert not torch.equal(weights[0].detach(), params[0])  # it moved


def test_lars_is_built_from_the_settings_with_biases_and_norms_excluded() -> None:
    from invprop.optimizers import LARS

    optimizer = OPTIMIZERS.get("lars")(_groups(), OptimizerOptions(0.3, 0.9, eta=0.02, clip=True))
    assert isinstance(optimizer, LARS)
    assert [(g["weight_decay"], g["exclude"]) for g in optimizer.param_groups] == [(0.1, False), (0.0, True)]
    assert {(g["eta"], g["clip"], g["momentum"]) for g in optimizer.param_groups} == {(0.02, True, 0.9)}


def test_every_parameter_is_decayed_when_the_recipe_says_so() -> None:
    groups = parameter_groups(nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)), 0.1, exclude_norm_and_bias=False)
    assert [(len(g["params"]), g["weight_decay"], g["exclude"]) for g in groups] == [(4, 0.1, False)]


def test_a_module_with_a_fixed_lr_and_the_biases_own_lr_get_their_groups() -> None:
    from invprop.engine.optimizer import FIXED_LR, LR_SCALE

    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    groups = parameter_groups(model, 0.1, norm_bias_lr_scale=0.024, fixed_lr=[model[1]])
    described = [(len(g["params"]), g.get(FIXED_LR, False), g.get(LR_SCALE, 1.0)) for g in groups]
    assert described == [(1, False, 1.0), (1, False, 0.024), (1, True, 1.0), (1, True, 0.024)]


def test_a_run_with_lars_resumes_exactly(tmp_path) -> None:
    from invprop.config import preset
    from resume_check import assert_resumes_exactly

    cfg = from_dict({"epochs": 2, "optim": {"optimizer": "lars", "lr": 0.3, "lr_scaling": "linear", "lars_eta": 0.02,
                     "lars_clip": True, "batch_size": 64, "warmup_epochs": 1, "warmup_share": 0.5}},
                    base=preset("digits"))  # fmt: skip
    assert_resumes_exactly(cfg, tmp_path)
