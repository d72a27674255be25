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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invprop.core.clustering import KMEANS_BACKENDS, cluster_concentration, initial_centroids, kmeans_with
from invprop.core.clustering_losses import proto_nce_loss
from invprop.errors import ConfigError
from invprop.methods.citations import QUEUE_DIGITS
from invprop.methods.contrastive.moco import KeyUpdate, MoCo, MoCoSettings
from invprop.methods.method import Batch, BuildContext, StepOutput
from invprop.methods.recipes import paper_sgd
from invprop.methods.spec import Accumulation, Curve, MethodSpec, SmokeRun, Torchrun, register_method, require_faiss
from invprop.settings import AT_LEAST_ONE, FRACTION, NON_NEGATIVE, POSITIVE, Reference, setting

#: Seeds of an epoch's k-means initialisation: drawn from the epoch's seeded global generator.
SEED_RANGE = 2**62
#: The paper's granularities on ImageNet (Li et al., 2021, Sec. 4).
PAPER_CLUSTERS = (25000, 50000, 100000)


@dataclass
class PCLSettings:
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


_LI = "Li et al. (2021)"
SPEC = MethodSpec(
    "PCL: ProtoNCE, InfoNCE plus k-means prototypes at several granularities (Li et al., 2021)",
    PCLSettings,
    section="pcl",
    section_help="PCL's momentum encoder, queue and prototypes",
    multi_crop=True,
    accumulation=Accumulation.RUNS,
    accumulation_note="each batch draws its own negative prototypes",
    recipes={  # no CIFAR recipe is published
        "*": paper_sgd(
            f"{_LI}, the authors' main_pcl.py and README (0.03 at batch 256, --cos)", lr=0.03, weight_decay=1e-4
        ),
    },
    presets={
        "digits": {
            "model": {"head": "mlp"},
            "pcl": {"queue_size": 1024, "clusters": [25, 50, 100], "warmup_epochs": 10},
        },
        "cifar10": {
            "model": {"head": "mlp", "hidden_dim": 2048, "embedding_dim": 128},
            "pcl": {"clusters": [250, 500, 1000]},
        },
    },  # fmt: skip
    references={
        "*": {
            "pcl.temperature": Reference(0.2, f"{_LI}, Sec. 4 (MoCo v2's)"),
            "pcl.queue_size": Reference(16384, f"{_LI}, Sec. 4"),
            "pcl.momentum": Reference(0.999, f"{_LI}, Sec. 4 (MoCo's)"),
            "pcl.clusters": Reference(list(PAPER_CLUSTERS), f"{_LI}, Sec. 4 (ImageNet)"),
            "pcl.warmup_epochs": Reference(20, f"{_LI}, Sec. 4 (of 200)"),
            "pcl.negative_prototypes": Reference(16000, f"{_LI}, Sec. 3.2 (r)"),
        },
    },
    deviations={
        "digits": {
            "pcl.queue_size": QUEUE_DIGITS,
            "pcl.clusters": "the paper's about 50, 25 and 13 images per cluster, for 1,347 images",
            "pcl.warmup_epochs": "the paper's 10% of the schedule (100 epochs on digits)",
        },
        "cifar10": {
            "pcl.clusters": "the paper's images per cluster, roughly, for CIFAR-10's 50,000 images (it has 1.28 M)",
        },
    },
    headline=("pcl.clusters", "pcl.warmup_epochs", "pcl.queue_size"),
    terms=("loss_nce", "loss_proto"),
    curves=(Curve("ProtoNCE's terms", ("loss_nce", "loss_proto")),),
    smoke=SmokeRun(settings={"pcl": {"warmup_epochs": 1}}),  # prototypes from epoch 2
    torchrun=Torchrun.RUNS,
    torchrun_note="each process draws its own negative prototypes",
    preflight=lambda settings: require_faiss("pcl.kmeans", settings.kmeans == "faiss"),
)


@register_method("pcl", SPEC)
class PCL(MoCo):
    """ProtoNCE with a momentum encoder and k-means prototypes at several granularities (Li et al., 2021, Alg. 1).

    Args:
        settings: the ``pcl`` section.
        encoder: backbone + projector (the query encoder).
        context: N, D, the embeddings of the training set (``features``), and the process group (keys are gathered
            before they are enqueued; every process clusters the whole dataset the same way).
    """

    ready: Tensor
    section = "pcl"

    def __init__(self, settings: PCLSettings, encoder: nn.Module, context: BuildContext) -> None:
        options, num_samples, embedding_dim = settings, context.num_samples, context.embedding_dim
        too_many = [k for k in options.clusters if not 2 <= k <= num_samples]
        if not options.clusters or too_many:
            raise ConfigError(f"pcl.clusters must be a list of cluster counts between 2 and the {num_samples} "
                              f"training images, got {options.clusters}")  # fmt: skip
        moco = MoCoSettings(options.temperature, options.queue_size, options.momentum, options.momentum, False)
        super().__init__(moco, encoder, context)
        self.pcl = options
        self.granularities = len(options.clusters)
        for m, k in enumerate(options.clusters):
            self.register_buffer(f"assignments_{m}", torch.zeros(num_samples, dtype=torch.long))
            self.register_buffer(f"prototypes_{m}", torch.zeros(k, embedding_dim))
            self.register_buffer(f"concentration_{m}", torch.ones(k))
        self.register_buffer("ready", torch.zeros((), dtype=torch.bool))
        self._features = context.features

    def clustering(self, m: int) -> tuple[Tensor, Tensor, Tensor]:
        """Granularity ``m``'s (N,) assignments, (k, D) prototypes and (k,) concentrations."""
        return (
            getattr(self, f"assignments_{m}"),
            getattr(self, f"prototypes_{m}"),
            getattr(self, f"concentration_{m}"),
        )

    @torch.no_grad()
    def cluster(self, embeddings: Tensor, generator: torch.Generator) -> dict[str, float]:
        """Prototypes and concentrations of every granularity from momentum embeddings (N, D); returns each
        granularity's k-means loss."""
        stats: dict[str, float] = {}
        points = F.normalize(embeddings.float(), dim=1)
        for m, k in enumerate(self.pcl.clusters):
            start = initial_centroids(points, k, generator)
            result = kmeans_with(self.pcl.kmeans, points, start, self.pcl.kmeans_iterations, generator)
            assignments, prototypes, concentration = self.clustering(m)
            assignments.copy_(result.assignments.to(assignments.device))
            prototypes.copy_(F.normalize(result.centroids, dim=1).to(prototypes.device))
            phi = cluster_concentration(result.distances.sqrt(), result.assignments, k, self.pcl.temperature)
            concentration.copy_(phi.to(concentration.device))
            stats[f"kmeans_loss_{k}"] = float(result.distances.mean())
        self.ready.fill_(True)
        return stats

    @torch.no_grad()
    def on_epoch_start(self, epoch: int) -> dict[str, float]:
        """After the warm-up, cluster the training set's momentum embeddings; returns the k-means losses."""
        if epoch <= self.pcl.warmup_epochs:
            return {}
        if self._features is None:
            raise RuntimeError("pcl needs the training images' embeddings: BuildContext.features")
        seed = int(torch.randint(SEED_RANGE, (1,)))  # the engine seeds the global generator from (seed, epoch)
        return self.cluster(self._features(self.key_encoder), torch.Generator().manual_seed(seed))

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

    def training_step(self, batch: Batch) -> StepOutput:
        nce, query, keys = self.contrast(batch)
        update = KeyUpdate(keys, self.momentum(batch.step))
        if batch.epoch <= self.pcl.warmup_epochs or not bool(self.ready):
            return StepOutput(nce, {"loss_nce": nce.detach()}, update)
        proto = self.prototype_loss(query, batch.indices)
        return StepOutput(nce + proto, {"loss_nce": nce.detach(), "loss_proto": proto.detach()}, update)


__all__ = ["PAPER_CLUSTERS", "SPEC", "PCL", "PCLSettings"]
