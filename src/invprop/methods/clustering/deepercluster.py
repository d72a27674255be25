"""DeeperCluster (Caron, Bojanowski, Mairal & Joulin, ICCV 2019) as a training method: ``method: deepercluster``.

RotNet and a two-level DeepCluster in one loss. Every ``deepercluster.recluster_every`` epochs the embeddings of
every training image, not augmented, are PCA-whitened, L2-normalised and clustered in two levels
(:func:`invprop.core.hierarchical_clustering.two_level_kmeans`): m super-clusters, then k / m sub-clusters inside
each. Each training image is turned by a rotation r drawn from the four quarter turns; its super-class is the pair
(super-cluster, r) -- S = 4m super-classes -- and its sub-class its sub-cluster. A linear classifier V learns the
super-class, and one linear classifier W_s per super-class learns the sub-class of the images of that super-class
(:func:`invprop.core.clustering_losses.hierarchical_cluster_loss`). The classifiers are re-initialised at every
re-clustering, and the epochs visit images uniformly over the k clusters. The labels are saved state, so a resumed
run sees the same ones. In a distributed run every process clusters the whole dataset with the same seed.

Not here: the paper's fixed Sobel filtering of the input and its VGG-16 are a backbone's business, not the
objective's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invprop.core.clustering import KMEANS_BACKENDS, pca_whitening
from invprop.core.clustering_losses import hierarchical_cluster_loss
from invprop.core.hierarchical_clustering import two_level_kmeans
from invprop.data.loader import cluster_balanced_order, epoch_order
from invprop.data.pretext import ROTATIONS, hashed_draws
from invprop.errors import ConfigError
from invprop.methods.method import Batch, BuildContext, Method, StepOutput
from invprop.methods.recipes import paper_sgd
from invprop.methods.spec import Curve, MethodSpec, SmokeRun, register_method, require_faiss
from invprop.settings import AT_LEAST_ONE, AT_LEAST_TWO, Reference, setting

#: Seeds of a clustering's initialisation: drawn from the epoch's seeded global generator.
SEED_RANGE = 2**62
#: What a clustering reports (logged every epoch: the clustering in force).
_STATISTICS = ("kmeans_loss", "kmeans_splits", "largest_cluster")

_CODE = "Caron et al. (2019), the authors' main.sh"


@dataclass
class DeeperClusterSettings:
    """The ``deepercluster`` section."""

    super_clusters: int = setting(4, "m, the first level's clusters (S = 4m super-classes with rotation)",
                                  bounds=AT_LEAST_ONE)  # fmt: skip
    clusters: int = setting(
        320000, "k, the clusters of both levels together (k / m inside each super-cluster)", bounds=AT_LEAST_TWO
    )
    rotation: bool = setting(True, "turn each image by one of four quarter turns, part of its super-class")
    pca_dim: int = setting(4096, "components kept by the PCA-whitening (at most the embedding width)",
                           bounds=AT_LEAST_ONE)  # fmt: skip
    kmeans: str = setting(
        "torch",
        "k-means implementation: torch (exact, on the training device) or faiss (pip install 'invprop[faiss]')",
        choices=KMEANS_BACKENDS,
    )
    kmeans_iterations: int = setting(10, "at most this many Lloyd iterations per k-means", bounds=AT_LEAST_ONE)
    recluster_every: int = setting(3, "re-cluster at the start of every this many epochs", bounds=AT_LEAST_ONE)


_SMALL = (
    "the small version of seed-methods.md: one super-cluster (RotNet and DeepCluster trained jointly, four "
    "sub-class heads, one per rotation); a two-level hierarchy serves the paper's 96 M images"
)
SPEC = MethodSpec(
    "DeeperCluster: rotation and two-level k-means clusters in one hierarchical loss (Caron et al., 2019)",
    DeeperClusterSettings,
    section="deepercluster",
    section_help="DeeperCluster's two-level k-means and its classifiers",
    recipes={
        "*": paper_sgd(
            f"{_CODE} (SGD 0.1, wd 1e-5, batch 48 per process x 64, no schedule among its arguments)",
            lr=0.1,
            weight_decay=1e-5,
            lr_scaling="none",
            schedule="constant",
        ),
    },
    presets={
        "digits": {"deepercluster": {"super_clusters": 1, "clusters": 30}},
        "cifar10": {"deepercluster": {"super_clusters": 1, "clusters": 500}},
    },
    references={
        "*": {
            "deepercluster.super_clusters": Reference(4, f"{_CODE} (--super_classes 16 with --rotnet true: 16 / 4)"),
            "deepercluster.clusters": Reference(320000, f"{_CODE} (--k)"),
            "deepercluster.rotation": Reference(True, f"{_CODE} (--rotnet true)"),
            "deepercluster.pca_dim": Reference(4096, f"{_CODE} (--dim_pca)"),
            "deepercluster.kmeans_iterations": Reference(10, f"{_CODE} (--niter)"),
            "deepercluster.recluster_every": Reference(3, f"{_CODE} (--reassignment)"),
            "optim.batch_size": Reference(3072, f"{_CODE} (48 per process, 64 processes)"),
            "epochs": Reference(100, f"{_CODE} (--nepochs)"),
        },
    },
    deviations={
        "*": {
            "optim.batch_size": "the dataset preset's batch (3072 needs 64 processes)",
            "epochs": "the dataset preset's length, which every method of a compare shares",
        },
        "digits": {
            "deepercluster.super_clusters": _SMALL,
            "deepercluster.clusters": "3 per class of the 10 digits, as deepcluster's digits preset",
        },
        "cifar10": {
            "deepercluster.super_clusters": _SMALL,
            "deepercluster.clusters": "about 100 images per cluster of CIFAR-10's 50,000, as deepcluster's CIFAR "
            "preset; not tuned here",
        },
    },
    headline=("deepercluster.super_clusters", "deepercluster.clusters"),
    terms=("loss_hierarchy", "kmeans_loss", "largest_cluster"),
    curves=(
        Curve("super-class + sub-class cross-entropy", ("loss_hierarchy",)),
        Curve("k-means", ("kmeans_loss", "largest_cluster"), "value"),
    ),
    smoke=SmokeRun(epochs=6),
    preflight=lambda settings: require_faiss("deepercluster.kmeans", settings.kmeans == "faiss"),
    compare=False,
)


def rotate_each(images: Tensor, turns: Tensor) -> Tensor:
    """Each image of (B, C, H, W) square images turned by its own number of quarter turns, counter-clockwise."""
    out = images.clone()
    for r in range(1, ROTATIONS):
        chosen = turns == r
        if bool(chosen.any()):
            out[chosen] = torch.rot90(images[chosen], r, dims=(-2, -1))
    return out


@register_method("deepercluster", SPEC)
class DeeperCluster(Method):
    """The hierarchical loss of Caron et al. (2019, Eq. 3) on two-level k-means labels and rotations.

    Args:
        settings: the ``deepercluster`` section.
        encoder: backbone + head.
        context: N, D, the embeddings of the training set (``features``), and the process group (the classifiers'
            gradients are averaged over processes).
    """

    super_labels: Tensor
    sub_labels: Tensor
    clustered: Tensor
    statistics: Tensor

    def __init__(self, settings: DeeperClusterSettings, encoder: nn.Module, context: BuildContext) -> None:
        super().__init__(encoder, context)
        options, n, d = settings, context.num_samples, context.embedding_dim
        if options.clusters % options.super_clusters:
            raise ConfigError(f"deepercluster.clusters={options.clusters} is not a multiple of "
                              f"deepercluster.super_clusters={options.super_clusters}; make it one")  # fmt: skip
        if options.clusters > n:
            raise ConfigError(f"deepercluster.clusters={options.clusters} is more than the {n} training images; "
                              "lower it")  # fmt: skip
        self.options = options
        self.sub_clusters = options.clusters // options.super_clusters
        self.turns = ROTATIONS if options.rotation else 1
        super_classes = options.super_clusters * self.turns
        self.pca_dim = min(options.pca_dim, d)
        self.super_classifier = nn.Linear(d, super_classes)
        self.sub_classifiers = nn.ModuleList(nn.Linear(d, self.sub_clusters) for _ in range(super_classes))
        self.register_buffer("super_labels", torch.zeros(n, dtype=torch.long))
        self.register_buffer("sub_labels", torch.zeros(n, dtype=torch.long))
        self.register_buffer("clustered", torch.zeros((), dtype=torch.bool))
        self.register_buffer("statistics", torch.zeros(len(_STATISTICS)))  # the last clustering's
        self._features = context.features
        self._reclustered = False
        self.seed = context.seed

    def shared_modules(self) -> list[nn.Module]:
        return [self.super_classifier, self.sub_classifiers]

    def before_optimizer_step(self) -> None:
        """A sub-head none of this batch's images reached gets a zero gradient first, so that every process of a
        distributed run averages the same tensors."""
        for parameter in self.sub_classifiers.parameters():
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
        super().before_optimizer_step()

    def reinitialised_parameters(self) -> list[nn.Parameter]:
        if not self._reclustered:
            return []
        return [*self.super_classifier.parameters(), *self.sub_classifiers.parameters()]

    @torch.no_grad()
    def cluster(self, embeddings: Tensor, generator: torch.Generator) -> dict[str, float]:
        """Labels from ``embeddings`` (N, D): PCA-whitening, L2-normalisation, two-level k-means; returns statistics."""
        points = F.normalize(pca_whitening(embeddings, self.pca_dim)(embeddings), dim=1)
        result = two_level_kmeans(points, self.options.super_clusters, self.sub_clusters,
                                  self.options.kmeans_iterations, generator, self.options.kmeans)  # fmt: skip
        self.super_labels.copy_(result.super_labels.to(self.super_labels.device))
        self.sub_labels.copy_(result.sub_labels.to(self.sub_labels.device))
        self.clustered.fill_(True)
        sizes = torch.bincount(result.flat_labels(self.sub_clusters), minlength=self.options.clusters)
        values = (float(result.distances.mean()), float(result.splits), float(sizes.max()))
        self.statistics.copy_(torch.tensor(values))
        return dict(zip(_STATISTICS, values))

    @torch.no_grad()
    def on_epoch_start(self, epoch: int) -> dict[str, float]:
        """Every ``recluster_every`` epochs from the first: cluster the training set and re-initialise the
        classifiers; returns the statistics of the clustering in force."""
        self._reclustered = (epoch - 1) % self.options.recluster_every == 0
        if not self._reclustered:
            return dict(zip(_STATISTICS, self.statistics.tolist()))
        if self._features is None:
            raise RuntimeError("deepercluster needs the training images' embeddings: BuildContext.features")
        seed = int(torch.randint(SEED_RANGE, (1,)))  # the engine seeds the global generator from (seed, epoch)
        stats = self.cluster(self._features(self.encoder), torch.Generator().manual_seed(seed))
        self.super_classifier.reset_parameters()
        for head in self.sub_classifiers:
            assert isinstance(head, nn.Linear)
            head.reset_parameters()
        return stats

    def epoch_order(self, n: int, seed: int) -> Tensor:
        if not bool(self.clustered):
            return epoch_order(n, seed)
        return cluster_balanced_order(self.super_labels * self.sub_clusters + self.sub_labels, seed)

    def rotations(self, batch: Batch) -> Tensor:
        """Each image's quarter turns, a function of the run's seed, the step and the image alone: every process of
        a distributed run draws the turns a single process would, and a resumed run the same ones."""
        if self.turns == 1:
            return torch.zeros(batch.size, dtype=torch.long)
        return hashed_draws(self.seed, batch.step, batch.indices.cpu(), self.turns)

    def own_head_logits(self, embeddings: Tensor, super_labels: Tensor) -> Tensor:
        """``W_{y_n} f(x_n)`` for each sample: (B, D), (B,) -> (B, K_s). Each head runs on its own samples' rows (a
        boolean mask, whose backward is deterministic, unlike an indexed gather of the heads' weights)."""
        logits = embeddings.new_zeros(embeddings.shape[0], self.sub_clusters)
        for label in super_labels.unique().tolist():
            rows = super_labels == label
            logits = logits.index_put((rows,), self.sub_classifiers[label](embeddings[rows]).to(logits.dtype))
        return logits

    def training_step(self, batch: Batch) -> StepOutput:
        images = self.views_of(batch)
        turns = self.rotations(batch).to(images.device)
        embeddings = self.encode(rotate_each(images, turns) if self.turns > 1 else images)
        rows = batch.indices.to(self.super_labels.device)
        super_labels = (self.super_labels[rows] * self.turns + turns.to(rows.device)).to(embeddings.device)
        sub_labels = self.sub_labels[rows].to(embeddings.device)
        sub_logits = self.own_head_logits(embeddings, super_labels)
        loss = hierarchical_cluster_loss(self.super_classifier(embeddings), sub_logits, super_labels, sub_labels)
        return StepOutput(loss, {"loss_hierarchy": loss.detach()})


__all__ = ["SPEC", "DeeperCluster", "DeeperClusterSettings", "rotate_each"]
