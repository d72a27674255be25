"""The optimisers and stages of a run.

Every run has a main optimiser, from the ``optim`` section; a method that declares parts
(:class:`invprop.methods.Part`) has one more per part, from the part's own section, over the parameters of the
modules the method names for it -- the main optimiser owns the rest. The run's stages (:class:`StagePlan`, from the
method's :class:`invprop.methods.Stage` list) say which optimisers step in each epoch; each optimiser's
learning-rate schedule runs over the epochs that step it alone, so an optimiser stepped only in a later stage
starts its warm-up there. Learning rates are a function of the run's step count, so a resumed run needs only that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from invprop.config import Config, LearningRatePlan, OptimizerSettings, learning_rate_plan, optimizer_options
from invprop.engine.optimizer import FIXED_LR, LR_SCALE, parameter_groups
from invprop.methods import MAIN, Method, Stage
from invprop.optimizers import GRADIENT_CLIPS, OPTIMIZERS
from invprop.schedules import cosine_between, lr_factor


@dataclass(frozen=True)
class StagePlan:
    """The stages of a run, in order, each with its epochs.

    Example:
        >>> plan = StagePlan(((Stage("autoencoder", ("ae",), "x.epochs"), 2), (Stage("repair", ("main",)), 3)))
        >>> plan.stage_of(3).name, plan.epochs_of("main"), plan.epochs_before("main", 5)
        ('repair', 3, 2)
    """

    stages: tuple[tuple[Stage, int], ...]

    def stage_of(self, epoch: int) -> Stage:
        """The stage of ``epoch`` (counting from 1; past the end: the last stage)."""
        end = 0
        for stage, epochs in self.stages:
            end += epochs
            if epoch <= end:
                return stage
        return self.stages[-1][0]

    def epochs_before(self, name: str, epoch: int) -> int:
        """The epochs before ``epoch`` (counting from 1) whose stage steps the optimiser ``name``."""
        return sum(name in self.stage_of(e).steps for e in range(1, epoch))

    def epochs_of(self, name: str) -> int:
        """The epochs of the run whose stage steps the optimiser ``name``."""
        return sum(epochs for stage, epochs in self.stages if name in stage.steps)

    @property
    def staged(self) -> bool:
        """The run has several stages (its history records each epoch's)."""
        return len(self.stages) > 1


@dataclass
class RunOptimizer:
    """One optimiser of a run, with its recipe and its learning rate over the epochs that step it."""

    name: str
    optimizer: torch.optim.Optimizer
    settings: OptimizerSettings
    plan: LearningRatePlan
    epochs: int

    def __post_init__(self) -> None:
        # Each group's weight decay as built (0 for the excluded groups), which a decay schedule scales.
        self.base_decays = [float(group["weight_decay"]) for group in self.optimizer.param_groups]

    def set_schedules(self, step: int, steps_per_epoch: int) -> None:
        """Every group's learning rate and weight decay at this optimiser's ``step`` (counting from 0 over the steps
        it takes). The lr: the schedule's factor of the peak; groups with a fixed lr keep the peak; each group's own
        scale. The weight decay: with ``final_weight_decay``, each decayed group's on a cosine from
        ``weight_decay`` to it over the optimiser's steps; constant otherwise."""
        o, plan = self.settings, self.plan
        factor = lr_factor(
            step, steps_per_epoch, self.epochs, o.schedule, plan.warmup_epochs, plan.milestones, o.gamma,
            plan.warmup_start, plan.floor,
        )  # fmt: skip
        decay = 1.0
        if o.final_weight_decay is not None and o.weight_decay > 0:
            total = steps_per_epoch * self.epochs
            decay = cosine_between(o.weight_decay, o.final_weight_decay, step, total) / o.weight_decay
        for group, base in zip(self.optimizer.param_groups, self.base_decays, strict=True):
            group["lr"] = plan.peak * (1.0 if group.get(FIXED_LR) else factor) * group.get(LR_SCALE, 1.0)
            group["weight_decay"] = base * decay

    def clip_gradients(self) -> None:
        """With ``clip_grad``: the gradients limited to that norm, tensor by tensor or together
        (``optim.clip_scope``, :data:`invprop.optimizers.GRADIENT_CLIPS`)."""
        limit = self.settings.clip_grad
        if not limit:
            return
        grads = [p.grad for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
        GRADIENT_CLIPS.get(self.settings.clip_scope)(grads, limit)

    @property
    def lr(self) -> float:
        """The largest learning rate of its groups now."""
        return max(group["lr"] for group in self.optimizer.param_groups)


def stage_plan(cfg: Config) -> StagePlan:
    """The stages of a run of ``cfg`` (one, stepping the parts and then the main optimiser, for a method that
    declares none)."""
    return StagePlan(tuple(cfg.spec.stage_plan(cfg.method_settings, cfg.epochs)))


def run_optimizers(
    cfg: Config, method: Method, stages: StagePlan, fixed_lr: Sequence[nn.Module] = ()
) -> dict[str, RunOptimizer]:
    """The optimisers of a run of ``cfg`` training ``method``, by name: :data:`~invprop.methods.MAIN` first (over
    every parameter no part claims; ``fixed_lr``: modules whose lr stays at the peak), then one per part of the
    method's spec; each scaled to the run's optimiser batch and planned over the epochs that step it."""
    batch = cfg.optim.batch_size * cfg.optim.accumulate
    owned = {part.name: method.part_modules(part.name) for part in cfg.spec.parts}
    settings: dict[str, OptimizerSettings] = {MAIN: cfg.optim}
    settings.update({part.name: getattr(cfg.method_settings, part.section) for part in cfg.spec.parts})
    built: dict[str, RunOptimizer] = {}
    for name, o in settings.items():
        if name == MAIN:
            skip = [module for modules in owned.values() for module in modules]
            groups = parameter_groups(method, o.weight_decay, o.layer_decay, o.exclude_norm_and_bias,
                                      o.norm_bias_lr_scale, fixed_lr, skip)  # fmt: skip
        else:
            groups = parameter_groups(nn.ModuleList(owned[name]), o.weight_decay, o.layer_decay,
                                      o.exclude_norm_and_bias, o.norm_bias_lr_scale)  # fmt: skip
        epochs = stages.epochs_of(name)
        plan = learning_rate_plan(o, batch, max(epochs, 1))
        optimizer = OPTIMIZERS.get(o.optimizer)(groups, optimizer_options(o, plan.peak))
        built[name] = RunOptimizer(name, optimizer, o, plan, epochs)
    return built


def part_states(optimizers: dict[str, RunOptimizer]) -> dict[str, Any]:
    """The state dicts of the optimisers beside the main one, by name (for the checkpoint)."""
    return {name: run.optimizer.state_dict() for name, run in optimizers.items() if name != MAIN}


def load_part_states(optimizers: dict[str, RunOptimizer], states: dict[str, Any]) -> None:
    """Load :func:`part_states` into the optimisers beside the main one."""
    for name, run in optimizers.items():
        if name != MAIN:
            run.optimizer.load_state_dict(states[name])


__all__ = [
    "RunOptimizer",
    "StagePlan",
    "load_part_states",
    "part_states",
    "run_optimizers",
    "stage_plan",
]
