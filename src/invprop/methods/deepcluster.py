"""DeepCluster (Caron, Bojanowski, Joulin & Douze, 2018) as a training method: ``method: deepcluster``.

At the start of every epoch the embeddings (backbone + ``model.head``) of every training image, not augmented, are
PCA-whitened (:func:`invprop.core.clustering.pca_whitening`), L2-normalised and clustered by k-means
(:func:`invprop.core.clustering.kmeans`: exact, with the paper's remedy for empty clusters); the clusters are the
epoch's pseudo-labels. A linear classifier on the embedding, re-initialised every epoch (its optimiser state
cleared), learns them by cross-entropy, and the epoch visits images uniformly over the clusters
(:func:`invprop.data.loader.cluster_balanced_order`). The pseudo-labels are part of the saved state, so a run
resumed mid-epoch sees the same labels and the same order. In a distributed run every process embeds and clusters
the whole dataset with the same seed, so all hold the same clusters. Its settings are one section, ``deepcluster``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invprop.core.clustering import KMEANS_BACKENDS, initial_centroids, kmeans_with, pca_whitening
from invprop.core.faiss_search import faiss_available
from invprop.data.loader import cluster_balanced_order, epoch_order
from invprop.errors import ConfigError
from invprop.methods.base import METHODS, BuildContext, Method, MethodSpec, StepOutput
from invprop.methods.field_published import FIELD_DEVIATIONS, FIELD_PRESETS, FIELD_REFERENCES
from invprop.settings import AT_LEAST_ONE, AT_LEAST_TWO, section, setting

#: Seeds of an epoch's k-means initialisation: drawn from the epoch's seeded global generator.
SEED_RANGE = 2**62


@dataclass
class DeepClusterOptions:
    """The ``deepcluster`` section."""

    clusters: int = setting(10000, "k, the clusters of k-means (the classifier's classes)", bounds=AT_LEAST_TWO)
    pca_dim: int = setting(256, "components kept by the PCA-whitening (at most the embedding width)",
                           bounds=AT_LEAST_ONE)  # fmt: skip
    kmeans: str = setting(
        "torch",
        "k-means implementation: torch (exact, on the training device) or faiss (pip install 'invprop[faiss]')",
        choices=KMEANS_BACKENDS,
    )
    kmeans_iterations: int = setting(20, "at most this many Lloyd iterations per epoch", bounds=AT_LEAST_ONE)
    balanced_sampling: bool = setting(True, "visit images uniformly over the clusters (false: every image once)")


@dataclass
class DeepClusterSettings:
    deepcluster: DeepClusterOptions = section(DeepClusterOptions, "DeepCluster's k-means and pseudo-label classifier")


class DeepCluster(Method):
    """Alternate k-means on the embeddings and classification of the cluster assignments (Caron et al., 2018,
    Eq. 2 and Sec. 3.3).

    Args:
        encoder: backbone + head.
        num_samples: N.
        embedding_dim: D.
        options: the ``deepcluster`` section.
        distributed: average the classifier's gradients over processes.
    """

    pseudo_labels: Tensor
    clustered: Tensor

    def __init__(
        self, encoder: nn.Module, num_samples: int, embedding_dim: int, options: DeepClusterOptions,
        distributed: bool = False,
    ) -> None:  # fmt: skip
        super().__init__(encoder, distributed)
        if options.clusters > num_samples:
            raise ConfigError(f"deepcluster.clusters={options.clusters} is more than the {num_samples} training images; "
                              "lower it")  # fmt: skip
        self.options = options
        self.pca_dim = min(options.pca_dim, embedding_dim)
        self.classifier = nn.Linear(embedding_dim, options.clusters)
        self.register_buffer("pseudo_labels", torch.zeros(num_samples, dtype=torch.long))
        self.register_buffer("clustered", torch.zeros((), dtype=torch.bool))
        self._source: Callable[[nn.Module], Tensor] | None = None
        self._reinitialised: list[nn.Parameter] = []
        self._stats: dict[str, float] = {}

    def set_feature_source(self, source: Callable[[nn.Module], Tensor]) -> None:
        self._source = source

    def shared_modules(self) -> list[nn.Module]:
        return [self.classifier]

    def reinitialised_parameters(self) -> list[nn.Parameter]:
        return self._reinitialised

    @torch.no_grad()
    def cluster(self, embeddings: Tensor, generator: torch.Generator) -> dict[str, float]:
        """Pseudo-labels from ``embeddings`` (N, D): PCA-whitening, L2-normalisation, k-means; returns statistics."""
        points = F.normalize(pca_whitening(embeddings, self.pca_dim)(embeddings), dim=1)
        start = initial_centroids(points, self.options.clusters, generator)
        result = kmeans_with(self.options.kmeans, points, start, self.options.kmeans_iterations, generator)
        self.pseudo_labels.copy_(result.assignments.to(self.pseudo_labels.device))
        self.clustered.fill_(True)
        sizes = torch.bincount(result.assignments, minlength=self.options.clusters)
        return {"kmeans_loss": float(result.distances.mean()), "kmeans_splits": float(result.splits),
                "largest_cluster": float(sizes.max())}  # fmt: skip

    @torch.no_grad()
    def on_epoch_start(self, epoch: int) -> None:
        if self._source is None:
            raise RuntimeError("deepcluster needs the training images' embeddings: call set_feature_source first")
        seed = int(torch.randint(SEED_RANGE, (1,)))  # the engine seeds the global generator from (seed, epoch)
        self._stats = self.cluster(self._source(self.encoder), torch.Generator().manual_seed(seed))
        self.classifier.reset_parameters()
        self._reinitialised = list(self.classifier.parameters())

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        return dict(self._stats)

    def epoch_order(self, n: int, seed: int) -> Tensor:
        if not self.options.balanced_sampling or not bool(self.clustered):
            return epoch_order(n, seed)
        return cluster_balanced_order(self.pseudo_labels, seed)

    def training_step(self, indices: Tensor, images: Tensor, epoch: int) -> StepOutput:
        labels = self.pseudo_labels[indices.to(self.pseudo_labels.device)]
        logits = self.classifier(self.encode(images))
        loss = F.cross_entropy(logits.float(), labels.to(logits.device))
        return StepOutput(loss, {"loss_cluster": loss.detach()})


def build_deepcluster(settings: DeepClusterSettings, encoder: nn.Module, context: BuildContext) -> DeepCluster:
    return DeepCluster(encoder, context.num_samples, context.embedding_dim, settings.deepcluster, context.distributed)


def check_faiss(settings: DeepClusterSettings) -> None:
    """FAISS k-means needs FAISS installed: say so before any work."""
    if settings.deepcluster.kmeans == "faiss" and not faiss_available():
        raise ConfigError("deepcluster.kmeans=faiss needs FAISS: pip install 'invprop[faiss]' (or faiss-gpu)")


METHODS.register("deepcluster")(
    MethodSpec(
        "DeepCluster: classify each image's k-means cluster, re-clustered every epoch (Caron et al., 2018)",
        DeepClusterSettings,
        build_deepcluster,
        presets=FIELD_PRESETS["deepcluster"],
        preflight=check_faiss,
        headline=("deepcluster.clusters", "deepcluster.pca_dim"),
        references=FIELD_REFERENCES["deepcluster"],
        deviations=FIELD_DEVIATIONS["deepcluster"],
    )
)

__all__ = ["DeepCluster", "DeepClusterOptions", "DeepClusterSettings", "build_deepcluster"]
