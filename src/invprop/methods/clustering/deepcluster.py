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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invprop.core.clustering import KMEANS_BACKENDS, initial_centroids, kmeans_with, pca_whitening
from invprop.data.loader import cluster_balanced_order, epoch_order
from invprop.errors import ConfigError
from invprop.methods.method import Batch, BuildContext, Method, StepOutput
from invprop.methods.recipes import paper_sgd
from invprop.methods.spec import Curve, MethodSpec, register_method, require_faiss
from invprop.settings import AT_LEAST_ONE, AT_LEAST_TWO, Reference, setting

#: Seeds of an epoch's k-means initialisation: drawn from the epoch's seeded global generator.
SEED_RANGE = 2**62


@dataclass
class DeepClusterSettings:
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


_CARON = "Caron et al. (2018)"
SPEC = MethodSpec(
    "DeepCluster: classify each image's k-means cluster, re-clustered every epoch (Caron et al., 2018)",
    DeepClusterSettings,
    section="deepcluster",
    section_help="DeepCluster's k-means and pseudo-label classifier",
    recipes={  # no CIFAR recipe is published
        "*": paper_sgd(
            f"{_CARON}, the authors' main.py (SGD 0.05 at batch 256, constant, wd 10^-5)",
            lr=0.05,
            weight_decay=1e-5,
            lr_scaling="none",
            schedule="constant",
        ),
    },
    presets={"digits": {"deepcluster": {"clusters": 30}}, "cifar10": {"deepcluster": {"clusters": 500}}},
    references={
        "*": {
            "deepcluster.clusters": Reference(10000, f"{_CARON}, Sec. 4 (ImageNet)"),
            "deepcluster.pca_dim": Reference(256, f"{_CARON}, Sec. 3.3"),
            "deepcluster.kmeans_iterations": Reference(20, "the authors' code (FAISS k-means, 20 iterations)"),
            "deepcluster.balanced_sampling": Reference(True, f"{_CARON}, Sec. 3.3"),
        },
    },
    deviations={
        "digits": {
            "deepcluster.clusters": "3 per class of the 10 digits (the paper: about 130 images per cluster; "
            "1,347 images cannot fill 10,000)"
        },
        "cifar10": {
            "deepcluster.clusters": "about 100 images per cluster of CIFAR-10's 50,000 (the paper: 10,000 "
            "for 1.3 M ImageNet images, and over-clustering helps); not tuned here"
        },
    },
    headline=("deepcluster.clusters", "deepcluster.pca_dim"),
    terms=("loss_cluster", "kmeans_loss", "largest_cluster"),
    curves=(
        Curve("pseudo-label classification", ("loss_cluster",)),
        Curve("k-means", ("kmeans_loss", "largest_cluster"), "value"),
    ),
    preflight=lambda settings: require_faiss("deepcluster.kmeans", settings.kmeans == "faiss"),
)


@register_method("deepcluster", SPEC)
class DeepCluster(Method):
    """Alternate k-means on the embeddings and classification of the cluster assignments (Caron et al., 2018,
    Eq. 2 and Sec. 3.3).

    Args:
        settings: the ``deepcluster`` section.
        encoder: backbone + head.
        context: N, D, the embeddings of the training set (``features``), and the process group (the classifier's
            gradients are averaged over processes).
    """

    pseudo_labels: Tensor
    clustered: Tensor

    def __init__(self, settings: DeepClusterSettings, encoder: nn.Module, context: BuildContext) -> None:
        super().__init__(encoder, context)
        options, num_samples, embedding_dim = settings, context.num_samples, context.embedding_dim
        if options.clusters > num_samples:
            raise ConfigError(f"deepcluster.clusters={options.clusters} is more than the {num_samples} training images; "
                              "lower it")  # fmt: skip
        self.options = options
        self.pca_dim = min(options.pca_dim, embedding_dim)
        self.classifier = nn.Linear(embedding_dim, options.clusters)
        self.register_buffer("pseudo_labels", torch.zeros(num_samples, dtype=torch.long))
        self.register_buffer("clustered", torch.zeros((), dtype=torch.bool))
        self._features = context.features

    def shared_modules(self) -> list[nn.Module]:
        return [self.classifier]

    def reinitialised_parameters(self) -> list[nn.Parameter]:
        return list(self.classifier.parameters())

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
    def on_epoch_start(self, epoch: int) -> dict[str, float]:
        """Cluster the training set, re-initialise the classifier; returns the clustering's statistics."""
        if self._features is None:
            raise RuntimeError("deepcluster needs the training images' embeddings: BuildContext.features")
        seed = int(torch.randint(SEED_RANGE, (1,)))  # the engine seeds the global generator from (seed, epoch)
        stats = self.cluster(self._features(self.encoder), torch.Generator().manual_seed(seed))
        self.classifier.reset_parameters()
        return stats

    def epoch_order(self, n: int, seed: int) -> Tensor:
        if not self.options.balanced_sampling or not bool(self.clustered):
            return epoch_order(n, seed)
        return cluster_balanced_order(self.pseudo_labels, seed)

    def training_step(self, batch: Batch) -> StepOutput:
        labels = self.pseudo_labels[batch.indices.to(self.pseudo_labels.device)]
        logits = self.classifier(self.encode(self.views_of(batch)))
        loss = F.cross_entropy(logits.float(), labels.to(logits.device))
        return StepOutput(loss, {"loss_cluster": loss.detach()})


__all__ = ["SPEC", "DeepCluster", "DeepClusterSettings"]
