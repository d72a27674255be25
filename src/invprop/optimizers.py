"""The optimisers a run may train with, registered by name (``optim.optimizer``).

Each entry maps parameter groups (each with its own ``weight_decay``) and the ``optim`` settings' values to a
``torch.optim.Optimizer``. SGD with momentum is what the convnet recipes of InvP and most of the field use; AdamW
(Loshchilov & Hutter, 2019) is what the ViT recipes use (e.g. MoCo v3: Chen, Xie & He, 2021, Sec. 4).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from invprop.registry import Registry

#: ``(groups, lr, momentum, betas) -> optimiser``.
OptimizerFactory = Callable[[list[dict[str, Any]], float, float, Sequence[float]], torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")


@OPTIMIZERS.register("sgd")
def sgd(groups: list[dict[str, Any]], lr: float, momentum: float, betas: Sequence[float]) -> torch.optim.Optimizer:
    """SGD with (heavy-ball) momentum ``momentum``; ``betas`` are not used."""
    return torch.optim.SGD(groups, lr=lr, momentum=momentum)


@OPTIMIZERS.register("adamw")
def adamw(groups: list[dict[str, Any]], lr: float, momentum: float, betas: Sequence[float]) -> torch.optim.Optimizer:
    """AdamW with ``betas`` (decoupled weight decay, per group); ``momentum`` is not used."""
    beta1, beta2 = betas
    return torch.optim.AdamW(groups, lr=lr, betas=(beta1, beta2))


__all__ = ["OPTIMIZERS", "OptimizerFactory", "adamw", "sgd"]
