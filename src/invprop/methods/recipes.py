"""Building blocks of the published training recipes that several methods share (each method's file holds its own
recipes, :attr:`invprop.methods.MethodSpec.recipes`; the values and sources are those of
``../shared/docs/recipes.md``).

solo-learn's CIFAR recipes (``scripts/pretrain/cifar/<method>.yaml`` with the defaults of ``solo/methods/base.py``
and ``solo/args/pretrain.py``) share their schedule -- a 10-epoch linear warm-up from 3e-5, then a cosine to 0,
updated per step -- and the linear scaling of the lr from batch 256; their LARS recipes share eta 0.02, LARC's
clip and the exclusion of the 1-D parameters from weight decay and adaptation; their SGD recipes decay every
parameter.
"""

from __future__ import annotations

from typing import Any

from invprop.methods.citations import SOLO
from invprop.methods.spec import Recipe

#: solo-learn's schedule and batch rule (``solo/methods/base.py``: warmup_start_lr 3e-5, warmup_epochs 10, min_lr 0,
#: scheduler warmup_cosine per step; ``solo/args/pretrain.py``: lr x batch / 256).
#: Their weight decay is constant and no gradient is clipped (a method's "*" recipe, e.g. DINO's, may do both).
SOLO_SCHEDULE: dict[str, Any] = {
    "lr_scaling": "linear", "reference_batch": 256, "momentum": 0.9, "schedule": "cosine", "warmup_epochs": 10,
    "warmup_start_lr": 3e-5, "final_lr": 0.0, "final_weight_decay": None, "clip_grad": 0.0,
}  # fmt: skip


def solo_lars(method: str, lr: float, weight_decay: float) -> Recipe:
    """solo-learn's CIFAR LARS recipe of ``method`` (its yaml's name): eta 0.02, clip, 1-D parameters excluded."""
    optim = {"optimizer": "lars", "lr": lr, "weight_decay": weight_decay, "exclude_norm_and_bias": True,
             "lars_eta": 0.02, "lars_clip": True, **SOLO_SCHEDULE}  # fmt: skip
    return Recipe(SOLO.format(method), optim)


def solo_sgd(method: str, lr: float, weight_decay: float, **extra: Any) -> Recipe:
    """solo-learn's CIFAR SGD recipe of ``method``: every parameter decayed."""
    optim = {"optimizer": "sgd", "lr": lr, "weight_decay": weight_decay, "exclude_norm_and_bias": False,
             **SOLO_SCHEDULE, **extra}  # fmt: skip
    return Recipe(SOLO.format(method), optim)


def paper_lars(source: str, lr: float, weight_decay: float, **extra: Any) -> Recipe:
    """A paper's own LARS recipe (eta 0.001, no clip, 1-D parameters excluded, 10 warm-up epochs from 0, cosine,
    linear batch rule from 256) with ``extra`` values over those."""
    optim = {"optimizer": "lars", "lr": lr, "lr_scaling": "linear", "reference_batch": 256, "momentum": 0.9,
             "weight_decay": weight_decay, "exclude_norm_and_bias": True, "lars_eta": 0.001, "lars_clip": False,
             "schedule": "cosine", "warmup_epochs": 10, "warmup_start_lr": 0.0, "final_lr": 0.0, **extra}  # fmt: skip
    return Recipe(source, optim)


def paper_sgd(source: str, lr: float, weight_decay: float, **extra: Any) -> Recipe:
    """A paper's own SGD recipe (momentum 0.9, every parameter decayed, cosine to 0, no warm-up, linear batch rule
    from 256) with ``extra`` values over those."""
    optim = {"optimizer": "sgd", "lr": lr, "lr_scaling": "linear", "reference_batch": 256, "momentum": 0.9,
             "weight_decay": weight_decay, "exclude_norm_and_bias": False, "schedule": "cosine", "warmup_epochs": 0,
             "warmup_start_lr": 0.0, "final_lr": 0.0, **extra}  # fmt: skip
    return Recipe(source, optim)


__all__ = ["SOLO_SCHEDULE", "paper_lars", "paper_sgd", "solo_lars", "solo_sgd"]
