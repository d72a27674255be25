"""The optimisers a run may train with, registered by name (``optim.optimizer``).

Each entry maps parameter groups (each with its own ``weight_decay``, and ``exclude`` for the biases and norm
layers' group) and the run's :class:`OptimizerOptions` to a ``torch.optim.Optimizer``. SGD with momentum is what
the convnet recipes of InvP, MoCo v2, SimSiam and the pretext tasks use; LARS (:class:`LARS`) what SimCLR, BYOL,
Barlow Twins, VICReg and SwAV use; AdamW (Loshchilov & Hutter, 2019) the ViT recipes (e.g. MoCo v3: Chen, Xie & He,
2021, Sec. 4); Adam with L2 weight decay colorization's (Zhang et al., 2016, the authors' solver).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor

from invprop.registry import Registry


@dataclass(frozen=True)
class OptimizerOptions:
    """What the optimisers take beside the parameter groups (the ``optim`` settings they read).

    Attributes:
        lr: the learning rate the optimiser starts with (the engine sets each group's lr at every step).
        momentum: SGD's and LARS's momentum.
        betas: Adam's and AdamW's (beta1, beta2).
        nesterov: SGD with Nesterov momentum.
        eta: LARS's trust coefficient.
        clip: LARS's LARC clipping: a layer's lr is at most the global lr.
    """

    lr: float
    momentum: float = 0.9
    betas: Sequence[float] = (0.9, 0.999)
    nesterov: bool = False
    eta: float = 0.001
    clip: bool = False


#: ``(groups, options) -> optimiser``.
OptimizerFactory = Callable[[list[dict[str, Any]], OptimizerOptions], torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling (You, Gitman & Ginsburg, 2017) as the self-supervised papers ran it.

    For each parameter tensor ``w`` of a group that is adapted, with gradient ``g``, weight decay ``beta``, trust
    coefficient ``eta`` and the group's learning rate ``lr``::

        g'    = g + beta w                                  (coupled weight decay)
        trust = eta ||w|| / ||g'||                          (1 when either norm is 0)
        scale = min(trust / lr, 1) if clip else trust       (LARC's clip: the layer's lr is at most lr)
        mu    = momentum mu + scale g'
        w     = w - lr mu

    A group with ``exclude=True`` -- the biases and norm layers' parameters, which the engine puts in a group of
    their own with weight decay 0 -- is neither adapted nor decayed: ``mu = momentum mu + g; w = w - lr mu``.

    This is the variant of Barlow Twins' and VICReg's code (and BYOL's, MoCo v3's and DINO's, which match it):
    ``||g + beta w||`` in the trust ratio, the learning rate outside the momentum buffer, and the 1-D parameters
    excluded from adaptation and weight decay. It is the variant of the papers invprop follows; the other
    published variants differ in the denominator (``||g|| + beta ||w||``: You et al., apex's LARC, lightning-bolts
    and solo-learn; it is never smaller, so their trust ratio is never larger), in where the lr enters the buffer
    (SimCLR's "classic momentum": identical while the lr is constant), and in what is excluded (SwAV's LARC:
    nothing; ``exclude=False`` on every group gives that). ``clip`` is solo-learn's ``clip_lr`` (apex LARC's
    ``clip=True``), which all of solo-learn's CIFAR recipes use with ``eta`` 0.02.
    """

    def __init__(
        self, params: Iterable[Any], lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
        eta: float = 0.001, clip: bool = False,
    ) -> None:  # fmt: skip
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "eta": eta, "clip": clip,
                    "exclude": False}  # fmt: skip
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = lars_update(
                    p, p.grad, group["weight_decay"], group["eta"], lr, group["clip"], group["exclude"]
                )
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buffer: Tensor = state["momentum_buffer"]
                buffer.mul_(momentum).add_(update)
                p.add_(buffer, alpha=-lr)
        return loss


def lars_update(
    p: Tensor, grad: Tensor, weight_decay: float, eta: float, lr: float, clip: bool, exclude: bool
) -> Tensor:
    """The term LARS adds to a parameter's momentum buffer: ``scale (g + beta w)``, or ``g`` for an excluded one
    (see :class:`LARS`)."""
    if exclude:
        return grad
    decayed = grad.add(p, alpha=weight_decay) if weight_decay else grad
    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(decayed)
    trust = torch.where((w_norm > 0) & (g_norm > 0), eta * w_norm / g_norm, torch.ones_like(w_norm))
    scale = torch.clamp(trust / lr, max=1.0) if clip else trust
    return decayed.mul(scale)


@OPTIMIZERS.register("sgd")
def sgd(groups: list[dict[str, Any]], options: OptimizerOptions) -> torch.optim.Optimizer:
    """SGD with (heavy-ball, or Nesterov) momentum; coupled weight decay per group."""
    return torch.optim.SGD(groups, lr=options.lr, momentum=options.momentum, nesterov=options.nesterov)


@OPTIMIZERS.register("lars")
def lars(groups: list[dict[str, Any]], options: OptimizerOptions) -> torch.optim.Optimizer:
    """:class:`LARS`; the groups marked ``exclude`` are neither adapted nor decayed."""
    return LARS(groups, lr=options.lr, momentum=options.momentum, eta=options.eta, clip=options.clip)


@OPTIMIZERS.register("adamw")
def adamw(groups: list[dict[str, Any]], options: OptimizerOptions) -> torch.optim.Optimizer:
    """AdamW with ``betas`` (decoupled weight decay, per group)."""
    beta1, beta2 = options.betas
    return torch.optim.AdamW(groups, lr=options.lr, betas=(beta1, beta2))


@OPTIMIZERS.register("adam")
def adam(groups: list[dict[str, Any]], options: OptimizerOptions) -> torch.optim.Optimizer:
    """Adam with ``betas`` and L2 weight decay added to the gradient, per group (caffe's Adam, colorization's)."""
    beta1, beta2 = options.betas
    return torch.optim.Adam(groups, lr=options.lr, betas=(beta1, beta2))


#: How ``optim.clip_grad`` limits the gradients before a step: ``clip(gradients, limit)``, in place.
GradientClip = Callable[[Sequence[Tensor], float], None]
#: The gradient-clipping scopes (``optim.clip_scope``), by name.
GRADIENT_CLIPS: Registry[GradientClip] = Registry("gradient clipping scope")


@torch.no_grad()
def clip_tensor_gradient_(grad: Tensor, limit: float) -> None:
    """``g <- g min(1, limit / (||g|| + 1e-6))`` in place (DINO's ``clip_gradients``, per tensor)."""
    grad.mul_((limit / (grad.norm() + 1e-6)).clamp(max=1.0))


@GRADIENT_CLIPS.register("tensor")
def clip_each_tensor_(grads: Sequence[Tensor], limit: float) -> None:
    """Each gradient tensor rescaled to norm ``limit`` at most, tensor by tensor (Caron et al., 2021, DINO, the
    authors' ``utils.clip_gradients``; iBOT's)."""
    for grad in grads:
        clip_tensor_gradient_(grad, limit)


@GRADIENT_CLIPS.register("global")
@torch.no_grad()
def clip_global_norm_(grads: Sequence[Tensor], limit: float) -> None:
    """All gradients rescaled together so that their joint norm is ``limit`` at most: ``g <- g min(1, limit /
    (||(g_1, ..., g_n)|| + 1e-6))`` (torch's ``clip_grad_norm_``; MSN's, Assran et al., 2022)."""
    if not grads:
        return
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
    scale = (limit / (total + 1e-6)).clamp(max=1.0)
    for grad in grads:
        grad.mul_(scale.to(grad.dtype))


__all__ = [
    "GRADIENT_CLIPS",
    "GradientClip",
    "clip_each_tensor_",
    "clip_global_norm_",
    "clip_tensor_gradient_",
    "LARS",
    "OPTIMIZERS",
    "OptimizerFactory",
    "OptimizerOptions",
    "adam",
    "adamw",
    "lars",
    "lars_update",
    "sgd",
]
