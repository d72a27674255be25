"""Prototypical Contrastive Learning (Li, Zhou, Xiong & Hoi, 2021) as a training method: ``method: pcl``.

ProtoNCE (Eq. 11) = MoCo's InfoNCE against a queue (momentum key encoder) + the prototype term. After
``pcl.warmup_epochs`` epochs of InfoNCE alone, every epoch starts by embedding every training image, not augmented,
with the momentum encoder, L2-normalising, and clustering at each granularity of ``pcl.clusters`` by k-means
(:func:`invprop.core.clustering.kmeans`); each cluster's prototype is its normalised centroid and its
concentration phi is estimated from its members' distances
(:func:`invprop.core.clustering.cluster_concentration`). The prototype term
(:func:`invprop.core.clustering_losses.proto_nce_loss`) contrasts a query with its own prototype against the
batch's other positives and up to ``pcl.negative_prototypes`` others drawn at random, each scaled by 1/phi; it is
averaged over the granularities. Clusters, prototypes and concentrations are part of the saved state. Its settings
are one section, ``pcl``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invprop.core.clustering import KMEANS_BACKENDS, cluster_concentration, initial_centroids, kmeans_with
from invprop.core.clustering_losses import proto_nce_loss
from invprop.core.faiss_search import faiss_available
from invprop.errors import ConfigError
from invprop.methods.base import METHODS, BuildContext, MethodSpec, StepOutput
from invprop.methods.field_published import FIELD_DEVIATIONS, FIELD_PRESETS, FIELD_REFERENCES
from invprop.methods.moco import MoCo, MoCoOptions
from invprop.methods.two_views import warn_if_queue_holds_the_dataset
from invprop.settings import AT_LEAST_ONE, FRACTION, NON_NEGATIVE, POSITIVE, section, setting

#: Seeds of an epoch's k-means initialisation: drawn from the epoch's seeded global generator.
SEED_RANGE = 2**62
#: The paper's granularities on ImageNet (Li et al., 2021, Sec. 4).
PAPER_CLUSTERS = (25000, 50000, 100000)


@dataclass
class PCLOptions:
    """The ``pcl`` section."""

    temperature: float = setting(0.2, "tau of InfoNCE (and the mean concentration of the prototypes)", bounds=POSITIVE)
    queue_size: int = setting(16384, "K, keys in the queue of negatives (keep it below the dataset size)",
                              bounds=AT_LEAST_ONE)  # fmt: skip
    momentum: float = setting(0.999, "momentum of the key encoder (fixed)", bounds=FRACTION)
    clusters: list[int] = setting(None, "k of each k-means granularity", factory=lambda: list(PAPER_CLUSTERS))
    warmup_epochs: int = setting(20, "epochs of InfoNCE alone before the prototypes join", bounds=NON_NEGATIVE)
    kmeans: str = setting(
        "torch",
        "k-means implementation: torch (exact, on the training device) or faiss (pip install 'invprop[faiss]')",
        choices=KMEANS_BACKENDS,
    )
    kmeans_iterations: int = setting(20, "at most this many Lloyd iterations per clustering", bounds=AT_LEAST_ONE)
    negative_prototypes: int = setting(16000, "r, prototypes drawn as negatives per step (all if fewer)",
                                       bounds=AT_LEAST_ONE)  # fmt: skip


@dataclass
class PCLSettings:
    pcl: PCLOptions = section(PCLOptions, "PCL's momentum encoder, queue and prototypes")


class PCL(MoCo):
    """ProtoNCE with a momentum encoder and k-means prototypes at several granularities (Li et al., 2021, Alg. 1).

    Args:
        encoder: backbone + projector (the query encoder).
        num_samples: N.
        embedding_dim: D.
        options: the ``pcl`` section.
        distributed: gather keys before enqueueing; every process clusters the whole dataset the same way.
    """

    ready: Tensor

    def __init__(
        self, encoder: nn.Module, num_samples: int, embedding_dim: int, options: PCLOptions, distributed: bool = False
    ) -> None:
        moco = MoCoOptions(options.temperature, options.queue_size, options.momentum, options.momentum, False)
        super().__init__(encoder, embedding_dim, moco, distributed)
        self.pcl = options
        self.granularities = len(options.clusters)
        for m, k in enumerate(options.clusters):
            self.register_buffer(f"assignments_{m}", torch.zeros(num_samples, dtype=torch.long))
            self.register_buffer(f"prototypes_{m}", torch.zeros(k, embedding_dim))
            self.register_buffer(f"concentration_{m}", torch.ones(k))
        self.register_buffer("ready", torch.zeros((), dtype=torch.bool))
        self._source: Callable[[nn.Module], Tensor] | None = None
        self._stats: dict[str, float] = {}

    def set_feature_source(self, source: Callable[[nn.Module], Tensor]) -> None:
        self._source = source

    def clustering(self, m: int) -> tuple[Tensor, Tensor, Tensor]:
        """Granularity ``m``'s (N,) assignments, (k, D) prototypes and (k,) concentrations."""
        return (
            getattr(self, f"assignments_{m}"),
            getattr(self, f"prototypes_{m}"),
            getattr(self, f"concentration_{m}"),
        )

    @torch.no_grad()
    def cluster(self, embeddings: Tensor, generator: torch.Generator) -> None:
        """Prototypes and concentrations of every granularity from momentum embeddings (N, D)."""
        points = F.normalize(embeddings.float(), dim=1)
        for m, k in enumerate(self.pcl.clusters):
            start = initial_centroids(points, k, generator)
            result = kmeans_with(self.pcl.kmeans, points, start, self.pcl.kmeans_iterations, generator)
            assignments, prototypes, concentration = self.clustering(m)
            assignments.copy_(result.assignments.to(assignments.device))
            prototypes.copy_(F.normalize(result.centroids, dim=1).to(prototypes.device))
            phi = cluster_concentration(result.distances.sqrt(), result.assignments, k, self.pcl.temperature)
            concentration.copy_(phi.to(concentration.device))
            self._stats[f"kmeans_loss_{k}"] = float(result.distances.mean())
        self.ready.fill_(True)

    @torch.no_grad()
    def on_epoch_start(self, epoch: int) -> None:
        if epoch <= self.pcl.warmup_epochs:
            return
        if self._source is None:
            raise RuntimeError("pcl needs the training images' embeddings: call set_feature_source first")
        seed = int(torch.randint(SEED_RANGE, (1,)))  # the engine seeds the global generator from (seed, epoch)
        self.cluster(self._source(self.key_encoder), torch.Generator().manual_seed(seed))

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        stats, self._stats = self._stats, {}
        return stats

    def prototype_loss(self, query: Tensor, indices: Tensor) -> Tensor:
        """The prototype term averaged over the granularities, for (B, D) queries of the images ``indices``."""
        q = F.normalize(query.float(), dim=1)
        terms = []
        for m in range(self.granularities):
            assignments, prototypes, concentration = self.clustering(m)
            positives = assignments[indices.to(assignments.device)]
            others = torch.ones(prototypes.shape[0], dtype=torch.bool, device=prototypes.device)
            others[positives] = False
            candidates = others.nonzero().flatten()
            if candidates.numel() > self.pcl.negative_prototypes:
                draw = torch.randperm(candidates.numel())[: self.pcl.negative_prototypes]
                candidates = candidates[draw.to(candidates.device)]
            chosen = torch.cat([positives, candidates])
            target = torch.arange(positives.shape[0], device=q.device)
            terms.append(proto_nce_loss(q, prototypes[chosen], concentration[chosen], target))
        return torch.stack(terms).mean()

    def training_step(self, indices: Tensor, images: Tensor, epoch: int) -> StepOutput:
        nce, query = self.contrast(images)
        if not bool(self.ready) or epoch <= self.pcl.warmup_epochs:
            return StepOutput(nce, {"loss_nce": nce.detach()})
        proto = self.prototype_loss(query, indices)
        return StepOutput(nce + proto, {"loss_nce": nce.detach(), "loss_proto": proto.detach()})


def build_pcl(settings: PCLSettings, encoder: nn.Module, context: BuildContext) -> PCL:
    o = settings.pcl
    too_many = [k for k in o.clusters if not 2 <= k <= context.num_samples]
    if not o.clusters or too_many:
        raise ConfigError(f"pcl.clusters must be a list of cluster counts between 2 and the {context.num_samples} "
                          f"training images, got {o.clusters}")  # fmt: skip
    warn_if_queue_holds_the_dataset("pcl.queue_size", o.queue_size, context.num_samples)
    return PCL(encoder, context.num_samples, context.embedding_dim, o, context.distributed)


def check_faiss(settings: PCLSettings) -> None:
    """FAISS k-means needs FAISS installed: say so before any work."""
    if settings.pcl.kmeans == "faiss" and not faiss_available():
        raise ConfigError("pcl.kmeans=faiss needs FAISS: pip install 'invprop[faiss]' (or faiss-gpu)")


METHODS.register("pcl")(
    MethodSpec(
        "PCL: ProtoNCE, InfoNCE plus k-means prototypes at several granularities (Li et al., 2021)",
        PCLSettings,
        build_pcl,
        presets=FIELD_PRESETS["pcl"],
        preflight=check_faiss,
        headline=("pcl.clusters", "pcl.warmup_epochs", "pcl.queue_size"),
        references=FIELD_REFERENCES["pcl"],
        deviations=FIELD_DEVIATIONS["pcl"],
    )
)

__all__ = ["PCL", "PCLOptions", "PCLSettings", "build_pcl"]
