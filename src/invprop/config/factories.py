"""What a run's settings build: its method around an encoder, and its data as the encoder needs it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from invprop.config.schema import Config
from invprop.data import DataSplits, InputNeeds, datasets_from
from invprop.errors import ConfigError
from invprop.methods import BuildContext, Method
from invprop.models import ModelSettings, is_timm_backbone, model_input
from invprop.models.timm_backbone import patch_side
from invprop.optim_settings import OptimizerSettings, warmup_epochs_of
from invprop.optimizers import OptimizerOptions
from invprop.schedules import scaled_lr


def build_method(cfg: Config, encoder: nn.Module, num_samples: int, **context: Any) -> Method:
    """The method ``cfg`` describes, around ``encoder``, for ``num_samples`` training images; ``context`` gives the
    other fields of :class:`~invprop.methods.BuildContext` (``distributed``, ``in_channels``, ``mean``, ``std``,
    ``total_steps``, ``labels``, ``features``, ``forward``); its ``seed`` is the run's."""
    built = BuildContext(num_samples, cfg.model.embedding_dim, seed=cfg.seed, **context)
    return cfg.spec.create(cfg.method_settings, encoder, built)


@dataclass(frozen=True)
class LearningRatePlan:
    """An optimiser's learning rate over a run, from its settings, the batch it steps on and its epochs.

    Attributes:
        peak: the peak learning rate: ``lr`` scaled from ``reference_batch`` to the optimiser's batch (the run's
            ``batch_size`` x ``accumulate``).
        warmup_epochs: the warm-up the run gets (the recipe's, at most ``warmup_share`` of the run).
        warmup_start: the share of the peak the warm-up starts from.
        floor: the share of the peak the schedule decays to.
        milestones: the step schedule's epochs (None: its default).
        batch: the batch the peak was scaled to.
    """

    peak: float
    warmup_epochs: int
    warmup_start: float
    floor: float
    milestones: list[int] | None
    batch: int

    def describe(self, optim: OptimizerSettings) -> str:
        """One line for the log: how the peak came about, and the warm-up."""
        o = optim
        rule = "" if o.lr_scaling == "none" else f" ({o.lr} x batch {self.batch}/{o.reference_batch}, {o.lr_scaling})"
        decay = "" if o.final_weight_decay is None else f", weight decay {o.weight_decay} -> {o.final_weight_decay}"
        clip = f", gradients clipped to {o.clip_grad} ({o.clip_scope} norm)" if o.clip_grad else ""
        return (
            f"{o.optimizer}, peak lr {self.peak:.6g}{rule}, {self.warmup_epochs} warm-up epochs, {o.schedule} "
            f"schedule{decay}{clip}"
        )


def learning_rate_plan(optim: OptimizerSettings, batch: int, epochs: int) -> LearningRatePlan:
    """The learning rate of an optimiser of ``optim`` stepping on batches of ``batch`` images over ``epochs``.

    Example:
        >>> from invprop.optim_settings import OptimizerSettings
        >>> plan = learning_rate_plan(OptimizerSettings(lr=0.3, lr_scaling="linear", warmup_epochs=10), 128, 30)
        >>> plan.peak, plan.warmup_epochs
        (0.15, 3)
    """
    o = optim
    if o.final_weight_decay and not o.weight_decay:
        raise ConfigError(f"final_weight_decay={o.final_weight_decay} needs a weight_decay above 0 to start from (the "
                          "schedule scales each group's decay): set weight_decay, or final_weight_decay to null")  # fmt: skip
    peak = scaled_lr(o.lr, batch, o.reference_batch, o.lr_scaling)
    shares = o.milestone_shares
    milestones = o.milestones if o.milestones is not None else None if shares is None else [
        round(share * epochs) for share in shares
    ]  # fmt: skip
    return LearningRatePlan(peak, warmup_epochs_of(o, epochs), o.warmup_start_lr / peak, o.final_lr, milestones, batch)


def lr_plan(cfg: Config) -> LearningRatePlan:
    """The learning rate of a run of ``cfg``'s main optimiser, over the whole run.

    Example:
        >>> from invprop.config import from_dict
        >>> plan = lr_plan(from_dict({"epochs": 30, "optim": {"lr": 0.3, "lr_scaling": "linear", "batch_size": 128,
        ...                                                    "warmup_epochs": 10}}))
        >>> plan.peak, plan.warmup_epochs
        (0.15, 3)
    """
    return learning_rate_plan(cfg.optim, cfg.optim.batch_size * cfg.optim.accumulate, cfg.epochs)


def optimizer_options(optim: OptimizerSettings, peak: float) -> OptimizerOptions:
    """What an optimiser of ``optim`` is built with (its groups aside), starting at ``peak``."""
    o = optim
    return OptimizerOptions(peak, o.momentum, tuple(o.betas), o.nesterov, o.lars_eta, o.lars_clip)


def input_needs(model: ModelSettings) -> InputNeeds:
    """What the encoder of the ``model`` settings asks of the data: for a timm backbone, its native side for image
    folders, its pretrained weights' normalisation (when pretrained) and its patch side; nothing otherwise."""
    if not is_timm_backbone(model.backbone):
        return InputNeeds()
    native = model_input(model.backbone)
    normalization = (native.mean, native.std) if model.pretrained else None
    return InputNeeds(native.image_size, normalization, patch_side(model.backbone, model.patch_size) or 1)


def data_for(cfg: Config, name: str | None = None, foreign: bool = False, subset: bool = True) -> DataSplits:
    """The splits of ``cfg``'s data (or of dataset ``name``) as its encoder needs them (see
    :func:`invprop.data.datasets_from` for the arguments)."""
    return datasets_from(cfg.data, name, foreign, subset, input_needs(cfg.model))


__all__ = [
    "LearningRatePlan",
    "build_method",
    "data_for",
    "input_needs",
    "learning_rate_plan",
    "lr_plan",
    "optimizer_options",
]
