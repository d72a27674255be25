"""Exemplar-CNN (Dosovitskiy, Springenberg, Riedmiller & Brox, NIPS 2014) as a training method: ``method: exemplar``.

Every training image is a surrogate class, and the network learns to tell each image's transformed copies apart
from every other image's: a plain N-way softmax with a bias (``W f(T x_i) + b``, no cosine, no temperature, no
prior, no smoothing -- the differences from ``instance-classifier``), one transformed copy of each image per batch,
drawn by the paper's transformations (the augmentation preset ``exemplar``, :mod:`invprop.data.exemplar_augment`).
The encoder's head is the paper's 512-unit fully connected layer; the classifier reads it through ReLU and
dropout, as the authors' network does.

Two differences from the paper, each a choice of scale:
- The paper's K = 150 transformed copies per seed were drawn once and stored; here each copy is drawn when the batch
  is (K unbounded). The paper's Fig. 4 finds accuracy rising with K until about 100 and flat beyond.
- At dataset scale the paper's own remedy applies, not the parametric classifier's machinery: the paper's accuracy
  saturated, then fell, as the surrogate classes grew past about 8,000 -- 16,000 (Fig. 3), so a training set larger
  than ``exemplar.max_classes`` is told, once, to train on a subset (``data.subset``), as the paper took 16,000
  seeds from STL-10's 100,000 unlabelled images. The full softmax is kept (at 16,000 classes and 512 dimensions
  its weights are 33 MB).

The authors' per-layer weight-decay multipliers (0, 0, 0.25, 1, 4 over their five layers) are not reproduced: every
parameter takes the one ``optim.weight_decay``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import nn

from invprop.core.pretext_losses import surrogate_class_loss
from invprop.methods.method import Batch, BuildContext, Method, StepOutput
from invprop.methods.recipes import paper_sgd
from invprop.methods.spec import Curve, MethodSpec, SmokeRun, Torchrun, register_method
from invprop.settings import AT_LEAST_TWO, UNIT_INTERVAL, Reference, setting

logger = logging.getLogger(__name__)

_PAPER = "Dosovitskiy et al. (2014)"
_CODE = "Dosovitskiy et al. (2014), the authors' release (train_nn_pretrain_distr.sh and the 64c5-128c5-256c5-512f net)"
#: The authors' schedule, in iterations: lr 0.01 for 1.2M, then x0.4, x0.25, x0.4, x0.25 for 120k, 120k, 60k, 60k.
_ITERATIONS = 1_560_000
_DROPS = ((1_200_000, 0.4), (1_320_000, 0.25), (1_440_000, 0.4), (1_500_000, 0.25))
#: Each pair of the authors' drops in one factor: 0.4 x 0.25 = 0.1.
_PAIR_GAMMA = _DROPS[0][1] * _DROPS[1][1]


@dataclass
class ExemplarSettings:
    """The ``exemplar`` section."""

    dropout: float = setting(
        0.5, "dropout before the classifier, on the ReLU of the head's output", bounds=UNIT_INTERVAL
    )
    max_classes: int = setting(
        16000,
        "the most surrogate classes (training images) before a warning to train on a subset (data.subset): the "
        "paper's accuracy fell past about 8,000-16,000",
        bounds=AT_LEAST_TWO,
    )


SPEC = MethodSpec(
    "Exemplar-CNN: every image a surrogate class of its transformed copies, a plain N-way softmax (Dosovitskiy "
    "et al., 2014)",
    ExemplarSettings,
    section="exemplar",
    section_help="Exemplar-CNN's surrogate-class softmax",
    presets={
        "*": {
            "model": {"head": "linear", "embedding_dim": 512},
            "data": {"augment": "exemplar"},
            "optim": {
                "milestone_shares": [_DROPS[1][0] / _ITERATIONS, _DROPS[3][0] / _ITERATIONS],
                "gamma": _PAIR_GAMMA,
            },
        }
    },
    recipes={
        "*": paper_sgd(
            f"{_CODE} (SGD 0.01, momentum 0.9, wd 0.004, batch 128; 1.2M iterations, then x0.4, x0.25, x0.4, x0.25 "
            "for 120k, 120k, 60k, 60k)",
            lr=0.01,
            weight_decay=0.004,
            lr_scaling="none",
            schedule="step",
        ),
    },
    references={
        "*": {
            "exemplar.dropout": Reference(0.5, f"{_CODE}, train.prototxt"),
            "exemplar.max_classes": Reference(16000, f"{_CODE} (16,000 classes) and {_PAPER}, Fig. 3"),
            "model.embedding_dim": Reference(512, f"{_CODE}: fc 512"),
            "model.head": Reference("linear", f"{_CODE}: fc 512 after the last convolution"),
            "optim.batch_size": Reference(128, _CODE),
            "optim.milestone_shares": Reference([step / _ITERATIONS for step, _ in _DROPS], _CODE),
            "data.augment": Reference("exemplar", f"{_PAPER}, Sec. 2"),
        }
    },
    deviations={
        "*": {
            "optim.milestone_shares": "the authors' four drops (x0.4, x0.25, x0.4, x0.25) as two of x0.1 (optim.gamma) "
            "at their second and fourth: the step schedule has one factor, and 0.4 x 0.25 = 0.1",
        },
        "imagenet": {"optim.batch_size": "the ImageNet preset's batch; the authors trained on 32 x 32 patches"},
    },
    headline=("exemplar.dropout", "data.augment"),
    terms=("loss_surrogate",),
    curves=(Curve("surrogate-class cross-entropy", ("loss_surrogate",)),),
    smoke=SmokeRun(epochs=6),
    torchrun=Torchrun.RUNS,
    torchrun_note="each process draws its own dropout masks",
    compare=False,
)


@register_method("exemplar", SPEC)
class Exemplar(Method):
    """Cross-entropy of each transformed copy against its image's surrogate class (Dosovitskiy et al., 2014, Eq. 1).

    Args:
        settings: the ``exemplar`` section (dropout, the class count's warning threshold).
        encoder: backbone + the 512-unit head.
        context: N, the surrogate classes, and D, the head's width.
    """

    def __init__(self, settings: ExemplarSettings, encoder: nn.Module, context: BuildContext) -> None:
        super().__init__(encoder, context)
        if context.num_samples > settings.max_classes:
            logger.warning(
                "exemplar: %d training images are %d surrogate classes, past the %d beyond which the paper's accuracy "
                "fell; train on a subset (--set data.subset=%d)", context.num_samples, context.num_samples,
                settings.max_classes, settings.max_classes,
            )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.ReLU(), nn.Dropout(settings.dropout), nn.Linear(context.embedding_dim, context.num_samples)
        )

    def shared_modules(self) -> list[nn.Module]:
        return [self.classifier]

    def training_step(self, batch: Batch) -> StepOutput:
        logits = self.classifier(self.encode(self.views_of(batch)))
        loss = surrogate_class_loss(logits, batch.indices.to(logits.device))
        return StepOutput(loss, {"loss_surrogate": loss.detach()})


__all__ = ["SPEC", "Exemplar", "ExemplarSettings"]
