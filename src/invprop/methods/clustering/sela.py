"""SeLa, self-labelling (Asano, Rupprecht & Vedaldi, ICLR 2020) as a training method: ``method: sela``.

Several linear heads on the embedding (backbone + ``model.head``) each classify every image into K labels. The
labels are not clusters of the embeddings but the solution of an optimal transport: the assignment that agrees best
with the head's own predictions while giving every label the same number of images
(:func:`invprop.core.clustering.self_labels`, Sinkhorn-Knopp over the whole training set). Training alternates the
two: at the start of every ``sela.relabel_every``-th epoch the predictions of every training image, not augmented,
are turned into new labels -- of every head (the authors' ImageNet code) or of one head in turn (their CIFAR code,
``sela.relabel: one``) -- and between label updates the heads and the encoder learn the labels by cross-entropy,
averaged over the heads. Before the first update every head's labels are a random equipartition, as in the authors'
code. The labels are part of the saved state, so a run resumed mid-epoch sees the same ones; in a distributed run
every process labels the whole dataset from the same predictions, so all hold the same labels.

Differences from the authors' code: the heads sit on the embedding (as DeepCluster's classifier does here), not
directly on the backbone's features; the predictions a label update uses are of the images not augmented, in eval
mode (their CIFAR code passes augmented images in train mode); label updates happen at epoch starts, every
``relabel_every`` epochs -- their CIFAR code spaces 400 updates evenly over 400 epochs (the same thing), their
ImageNet code spaces 100 over 400 epochs quadratically, denser at the start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invprop.core.clustering import self_labels
from invprop.errors import ConfigError
from invprop.methods.method import Batch, BuildContext, Method, StepOutput
from invprop.methods.recipes import paper_sgd
from invprop.methods.spec import Curve, MethodSpec, register_method
from invprop.settings import AT_LEAST_ONE, AT_LEAST_TWO, POSITIVE, Reference, setting

logger = logging.getLogger(__name__)

#: Which heads a label update relabels.
RELABEL = {
    "all": "every head at each label update (the authors' ImageNet code)",
    "one": "one head per update, in turn (the authors' CIFAR code)",
}


@dataclass
class SeLaSettings:
    """The ``sela`` section."""

    heads: int = setting(10, "T, the classification heads, each with its own labels", bounds=AT_LEAST_ONE)
    clusters: int = setting(3000, "K, the labels of each head", bounds=AT_LEAST_TWO)
    lam: float = setting(25.0, "lambda, the exponent of the predictions in the transport (P^lambda)", bounds=POSITIVE)
    relabel_every: int = setting(4, "a label update at the start of every this many epochs", bounds=AT_LEAST_ONE)
    relabel: str = setting("all", "which heads a label update relabels: all or one (in turn)", choices=RELABEL)


_ASANO = "Asano et al. (2020)"
_CODE = "the authors' self-label code"
#: The values of the authors' CIFAR-10 code (also the small-image values for digits).
_CIFAR_REFERENCES = {
    "sela.clusters": Reference(128, f"{_CODE}, scripts/cifar.sh"),
    "sela.lam": Reference(10.0, f"{_CODE}, scripts/cifar.sh"),
    "sela.relabel_every": Reference(1, f"{_CODE}, scripts/cifar.sh (400 label updates over 400 epochs)"),
    "sela.relabel": Reference("one", f"{_CODE}, cifar.py (one head per update, head = update mod heads)"),
}
#: The authors' CIFAR-10 recipe (also the small-image recipe for digits).
_CIFAR_RECIPE = paper_sgd(
    f"{_ASANO}, {_CODE} (scripts/cifar.sh and cifar.py: SGD 0.03 at batch 128, wd 5e-4, x0.1 at epochs 160, 240 "
    "and 320 of 400)",
    lr=0.03,
    weight_decay=5e-4,
    lr_scaling="none",
    schedule="step",
    milestone_shares=[160 / 400, 240 / 400, 320 / 400],
    gamma=0.1,
)
SPEC = MethodSpec(
    "SeLa: self-labelling by an equipartitioned optimal transport of the heads' predictions (Asano et al., 2020)",
    SeLaSettings,
    section="sela",
    section_help="SeLa's heads and label updates",
    recipes={
        "*": paper_sgd(
            f"{_ASANO}, {_CODE} (main.py and scripts/resnet.sh: SGD 0.05 at batch 256, wd 1e-5, x0.1 at epochs 150 "
            "and 300 and x1e-3 of the base from 350, of 400)",
            lr=0.05,
            weight_decay=1e-5,
            lr_scaling="none",
            schedule="step",
            milestone_shares=[150 / 400, 300 / 400, 350 / 400],
            gamma=0.1,
        ),
        "cifar10": _CIFAR_RECIPE,
        "digits": _CIFAR_RECIPE,
    },
    presets={
        "cifar10": {"sela": {"clusters": 128, "lam": 10.0, "relabel_every": 1, "relabel": "one"}},
        "digits": {"sela": {"clusters": 30, "lam": 10.0, "relabel_every": 1, "relabel": "one"}},
    },
    references={
        "*": {
            "sela.heads": Reference(10, f"{_ASANO}, Sec. 4 (the 10x3k model)"),
            "sela.clusters": Reference(3000, f"{_ASANO}, Sec. 4 (ImageNet)"),
            "sela.lam": Reference(25.0, f"{_CODE}, main.py (ImageNet)"),
            "sela.relabel_every": Reference(
                4, f"{_CODE}, main.py and scripts/resnet.sh (100 label updates over 400 epochs, spaced quadratically)"
            ),
            "sela.relabel": Reference("all", f"{_CODE}, sinkhornknopp.py (every head at each update)"),
        },
        "cifar10": _CIFAR_REFERENCES,
        "digits": _CIFAR_REFERENCES,
    },
    deviations={
        "digits": {
            "sela.clusters": "3 per class of the 10 digits, as DeepCluster's digits preset (1,347 images; the CIFAR "
            "code's 128 would leave about 10 images per label); not tuned"
        },
    },
    headline=("sela.heads", "sela.clusters", "sela.lam"),
    terms=("loss_labels", "largest_label"),
    curves=(
        Curve("self-label classification", ("loss_labels",)),
        Curve("largest label", ("largest_label",), "share of the images"),
    ),
    compare=False,
)


@register_method("sela", SPEC)
class SeLa(Method):
    """Cross-entropy of T heads against labels from an equipartitioned transport of their predictions (Asano et al.,
    2020, Sec. 3.1: Eqs. 3-5, and the multi-head model of Sec. 3.4).

    Args:
        settings: the ``sela`` section.
        encoder: backbone + head.
        context: N, D, the embeddings of the training set (``features``), and the process group (the heads'
            gradients are averaged over processes).
    """

    labels: Tensor

    def __init__(self, settings: SeLaSettings, encoder: nn.Module, context: BuildContext) -> None:
        super().__init__(encoder, context)
        if settings.clusters > context.num_samples:
            raise ConfigError(f"sela.clusters={settings.clusters} is more than the {context.num_samples} training "
                              "images; lower it")  # fmt: skip
        self.options = settings
        self.heads = nn.Linear(context.embedding_dim, settings.heads * settings.clusters)
        initial = torch.stack([torch.randperm(context.num_samples) % settings.clusters for _ in range(settings.heads)])
        self.register_buffer("labels", initial)  # a random equipartition per head, the authors' start
        self._features = context.features

    def shared_modules(self) -> list[nn.Module]:
        return [self.heads]

    def head_logits(self, z: Tensor) -> Tensor:
        """(B, T, K) logits of the T heads."""
        return self.heads(z).view(z.shape[0], self.options.heads, self.options.clusters)

    def relabelled_heads(self, epoch: int) -> list[int]:
        """The heads whose labels the start of ``epoch`` updates (none between updates)."""
        update, offset = divmod(epoch - 1, self.options.relabel_every)
        if offset:
            return []
        return list(range(self.options.heads)) if self.options.relabel == "all" else [update % self.options.heads]

    def head_log_probs(self, embeddings: Tensor, head: int) -> Tensor:
        """(N, K) log-probabilities of one head (one head at a time bounds the memory to N x K)."""
        k = self.options.clusters
        weight, bias = self.heads.weight[head * k : (head + 1) * k], self.heads.bias[head * k : (head + 1) * k]
        return F.log_softmax(F.linear(embeddings.float(), weight.float(), bias.float()), dim=1)

    @torch.no_grad()
    def on_epoch_start(self, epoch: int) -> dict[str, float]:
        """At a label update, new labels for the update's heads from every training image's predictions; every epoch,
        the largest label's share of the images (1/K when equipartitioned)."""
        stats: dict[str, float] = {}
        heads = self.relabelled_heads(epoch)
        if heads:
            if self._features is None:
                raise RuntimeError("sela needs the training images' embeddings: BuildContext.features")
            embeddings = self._features(self.encoder)
            for head in heads:
                solved = self_labels(self.head_log_probs(embeddings, head), self.options.lam)
                if not solved.converged:
                    logger.warning("sela: the label update of head %d stopped after %d Sinkhorn-Knopp iterations "
                                   "before it converged", head, solved.iterations)  # fmt: skip
                self.labels[head].copy_(solved.labels.to(self.labels.device))
                stats["label_iterations"] = max(stats.get("label_iterations", 0.0), float(solved.iterations))
        counts = torch.stack([torch.bincount(row, minlength=self.options.clusters) for row in self.labels])
        stats["largest_label"] = float(counts.max()) / self.labels.shape[1]
        return stats

    def training_step(self, batch: Batch) -> StepOutput:
        logits = self.head_logits(self.encode(self.views_of(batch))).float()
        targets = self.labels[:, batch.indices.to(self.labels.device)].to(logits.device)  # (T, B)
        loss = F.cross_entropy(logits.permute(0, 2, 1), targets.T)  # the mean over images and heads
        return StepOutput(loss, {"loss_labels": loss.detach()})


__all__ = ["RELABEL", "SPEC", "SeLa", "SeLaSettings"]
