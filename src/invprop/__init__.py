"""invprop: unsupervised visual representation learning by Invariance Propagation (InvP, NeurIPS 2020).

Layers, each importing only from those below: ``core`` (pure tensors) -> ``models``, ``data`` -> ``methods`` ->
``engine`` -> ``evaluation``, ``cli``. ``config``, ``registry`` and ``errors`` are dependency-free utilities.
"""

from invprop.config import Config
from invprop.core import (
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

__version__ = "0.1.0"

__all__ = [
    "Config",
    "InvPLossOutput",
    "InvariancePropagationLoss",
    "MemoryBank",
    "__version__",
    "binary_rampup",
    "gaussian_rampup",
    "knn_class_scores",
    "knn_graph",
    "online_neighbors",
    "propagate",
    "rampup_weight",
    "total_loss",
]
