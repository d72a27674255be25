"""Invariant and spreading instance features (Ye, Zhang, Yuen & Chang, CVPR 2019) as a training method:
``method: invariant-spreading``.

Two augmented views per image through the encoder, and an instance softmax over the batch's own features, no memory
bank: each embedding is classified among the other 2B - 1 (its other view is its instance), with a term that pulls
the two views together (invariance) and one that pushes each embedding's probability of every other instance down
(spreading) -- :func:`invprop.core.contrastive_losses.invariant_spreading_loss`. Between InsDis (a bank of stale
features) and SimCLR (in-batch negatives through a deeper projector): the paper's network ends in a linear layer to
128 dimensions. In a distributed run the embeddings are gathered, so every anchor is classified among the global
batch, as the authors' single-process batch of 128 images is.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from invprop.core.contrastive_losses import AT_LEAST_ONE_REAL, invariant_spreading_loss
from invprop.core.crop_pairs import mean_over_pairs, view_pairs
from invprop.methods.method import Batch, BuildContext, StepOutput
from invprop.methods.recipes import paper_sgd
from invprop.methods.spec import Accumulation, Curve, MethodSpec, register_method
from invprop.methods.two_views import TwoViewMethod
from invprop.settings import POSITIVE, Reference, setting

#: The authors' code, which sets the published values.
_CODE = "Ye et al. (2019), the authors' demo_seen.py"
#: Their schedule: lr x0.1 from epoch 120 of the 301 (the code's later steps are unreachable elif branches).
_DROP_EPOCH, _EPOCHS = 120, 301


@dataclass
class InvariantSpreadingSettings:
    """The ``invariant_spreading`` section."""

    temperature: float = setting(0.1, "tau of the instance softmax", bounds=POSITIVE)
    negative_weight: float = setting(
        1.0,
        "m, the weight of the negatives in the softmax's denominator and of the spreading term (the authors' "
        "negM; their branch below 1, a subset of hard negatives, is not implemented)",
        bounds=AT_LEAST_ONE_REAL,
    )


SPEC = MethodSpec(
    "Invariant and spreading instance features: an instance softmax over the batch's own features (Ye et al., 2019)",
    InvariantSpreadingSettings,
    section="invariant_spreading",
    section_help="the instance softmax of Ye et al. (2019)",
    multi_crop=True,
    accumulation=Accumulation.REFUSED,
    accumulation_note="each embedding is classified among all the others of the whole batch",
    presets={"*": {"model": {"head": "linear", "embedding_dim": 128}}},
    recipes={
        "*": paper_sgd(
            f"{_CODE} (SGD 0.03, momentum 0.9, wd 5e-4, x0.1 from epoch {_DROP_EPOCH} of {_EPOCHS}, batch 128, "
            "CIFAR-10)",
            lr=0.03,
            weight_decay=5e-4,
            lr_scaling="none",
            schedule="step",
            milestone_shares=[_DROP_EPOCH / _EPOCHS],
            gamma=0.1,
        ),
    },
    references={
        "*": {
            "invariant_spreading.temperature": Reference(0.1, f"{_CODE} (--batch-t) and Sec. 4.1"),
            "invariant_spreading.negative_weight": Reference(1.0, f"{_CODE} (--batch-m)"),
            "model.head": Reference("linear", "Ye et al. (2019), the authors' models/resnet_cifar.py (fc to low_dim)"),
            "model.embedding_dim": Reference(128, f"{_CODE} (--low-dim)"),
            "optim.batch_size": Reference(128, f"{_CODE} (--batch-size)"),
            "epochs": Reference(_EPOCHS, f"{_CODE} (its training loop)"),
        }
    },
    deviations={
        "*": {"epochs": "the dataset preset's length, which every method of a compare shares"},
        "imagenet": {"optim.batch_size": "the ImageNet preset's batch; the authors published CIFAR-10 runs only"},
    },
    headline=("invariant_spreading.temperature", "model.head"),
    terms=("loss_instance",),
    curves=(Curve("instance softmax (invariance + spreading)", ("loss_instance",)),),
    compare=False,
)


@register_method("invariant-spreading", SPEC)
class InvariantSpreading(TwoViewMethod):
    """The loss J of Ye et al. (2019, Sec. 3.2) between the two views' embeddings of the batch.

    Args:
        settings: the ``invariant_spreading`` section (tau, m).
        encoder: backbone + head.
        context: in a distributed run the embeddings of every process are gathered (the global batch).
    """

    def __init__(self, settings: InvariantSpreadingSettings, encoder: nn.Module, context: BuildContext) -> None:
        super().__init__(encoder, context)
        self.temperature = settings.temperature
        self.negative_weight = settings.negative_weight

    def training_step(self, batch: Batch) -> StepOutput:
        z = [self.gather(view) for view in self.encode_views(batch)]
        loss = mean_over_pairs(
            lambda i, j: invariant_spreading_loss(z[i], z[j], self.temperature, self.negative_weight),
            view_pairs(len(z)),
        )
        return StepOutput(loss, {"loss_instance": loss.detach()})


__all__ = ["SPEC", "InvariantSpreading", "InvariantSpreadingSettings"]
