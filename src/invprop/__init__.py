"""invprop: unsupervised visual representation learning by Invariance Propagation (InvP, Wang et al., 2020).

Layers, each importing only from those below: ``settings``, ``registry``, ``errors``, ``files``, ``machine``,
``schedules`` (utilities) -> ``distributed`` (a batch against N rows, whole or split over processes) -> ``core`` (the
methods' mathematics) -> ``models``, ``data`` -> ``methods`` -> ``config`` -> ``engine`` -> ``evaluation``, ``cli``.

In your own training loop, a method object does the bookkeeping (memory bank, neighbour graph, classifier)::

    method = invprop.create_method("invp", encoder, num_samples=len(dataset), embedding_dim=128)
    out = method.training_step(invprop.Batch.of(indices, images, epoch=epoch))   # out.loss, out.terms
    out.loss.backward(); optimizer.step(); method.after_step([out])
"""

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

__all__ = [
    "METHODS",
    "Batch",
    "BuildContext",
    "Config",
    "CosineInstanceClassifier",
    "InstanceClassification",
    "InvPLossOutput",
    "InvariancePropagation",
    "InvariancePropagationLoss",
    "MemoryBank",
    "Method",
    "StepOutput",
    "__version__",
    "binary_rampup",
    "create_method",
    "from_dict",
    "gaussian_rampup",
    "knn_class_scores",
    "knn_graph",
    "online_neighbors",
    "preset",
    "propagate",
    "register_method",
    "rampup_weight",
    "total_loss",
]
