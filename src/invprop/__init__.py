"""invprop: unsupervised visual representation learning by Invariance Propagation (InvP, Wang et al., 2020).

Layers, each importing only from those below: ``settings``, ``registry``, ``errors``, ``files``, ``machine``,
``schedules`` (utilities) -> ``distributed`` (a batch against N rows, whole or split over processes) -> ``core`` (the
methods' mathematics) -> ``models``, ``data`` -> ``methods`` -> ``config`` -> ``engine`` -> ``evaluation``, ``cli``.

In your own training loop, a method object does the bookkeeping (memory bank, neighbour graph, classifier)::

    method = invprop.create_method("invp", encoder, num_samples=len(dataset), embedding_dim=128)
    out = method.training_step(invprop.Batch.of(indices, images, epoch=epoch))   # out.loss, out.terms
    out.loss.backward(); optimizer.step(); method.after_step([out])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: Each public name and the module it lives in. They are imported on first use, so that importing the package (the
#: command line's entry point does, before anything else) loads no torch: a Ctrl-C while the command starts is caught.
_PUBLIC = {
    **dict.fromkeys(("Config", "from_dict", "preset"), "invprop.config"),
    **dict.fromkeys(
        ("CosineInstanceClassifier", "InvariancePropagationLoss", "InvPLossOutput", "MemoryBank", "binary_rampup",
         "gaussian_rampup", "knn_class_scores", "knn_graph", "online_neighbors", "propagate", "rampup_weight",
         "total_loss"),
        "invprop.core",
    ),
    **dict.fromkeys(
        ("METHODS", "Batch", "BuildContext", "InstanceClassification", "InvariancePropagation", "Method",
         "StepOutput", "create_method", "register_method"),
        "invprop.methods",
    ),
}  # fmt: skip

if TYPE_CHECKING:
    from invprop.config import Config, from_dict, preset
    from invprop.core import (
        CosineInstanceClassifier,
        InvariancePropagationLoss,
        InvPLossOutput,
        MemoryBank,
        binary_rampup,
        gaussian_rampup,
        knn_class_scores,
        knn_graph,
        online_neighbors,
        propagate,
        rampup_weight,
        total_loss,
    )
    from invprop.methods import (
        METHODS,
        Batch,
        BuildContext,
        InstanceClassification,
        InvariancePropagation,
        Method,
        StepOutput,
        create_method,
        register_method,
    )

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use (PEP 562)."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'invprop' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])


__all__ = ["__version__", *_PUBLIC]
