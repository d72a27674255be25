"""Contrastive multiview coding (Tian, Krishnan & Isola, 2019) as a training method: ``method: cmc``.

Each image is converted to a colour space and split into channel groups -- L and ab of CIE Lab by default -- and
each group has its own backbone and head (``model.colour_split``, :mod:`invprop.models.colour_split`). A memory
bank per view holds an EMA of each image's L2-normalised embedding of that view. Each view's embedding is
contrasted with the other view's memory of the same image (the positive) against the other view's memories of
randomly drawn images (the negatives), in both directions, summed
(:func:`invprop.core.contrastive_losses.full_graph_loss`); with more groups, every ordered pair. The pair loss is
the softmax cross-entropy over the positive and the negatives (the authors' ``--softmax``, which their README
recommends over NCE and uses for its ImageNet-100 table) or NCE with each direction's normaliser estimated at every
step (PIRL's, measured on digits: :mod:`invprop.methods.contrastive.pirl`). The views are crops and flips only
(``data.augment: crop_flip``): colour jitter or grey-scaling would change the views themselves.

Evaluation and export see the groups' backbone features side by side, as the authors' linear probe concatenates
the two encoders' features. Differences from the authors' code: each group gets the whole backbone (their
``resnet50v2``; their ``resnet50v1`` halves each ResNet's width, which invprop's backbones have no setting for);
one draw of negatives serves the whole batch (theirs draws per image). Colour images only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invprop.core.bank import MemoryBank
from invprop.core.contrastive_losses import full_graph_loss, info_nce_queue_loss, log_nce_normaliser, pirl_nce_loss
from invprop.errors import ConfigError
from invprop.methods.method import Batch, BuildContext, Method, StepOutput
from invprop.methods.recipes import paper_sgd
from invprop.methods.spec import Accumulation, Curve, Floor, MethodSpec, SmokeRun, Torchrun, register_method
from invprop.models.colour_split import ColourSplitBackbone
from invprop.settings import AT_LEAST_ONE, POSITIVE, UNIT_INTERVAL, Reference, setting

_PAPER = "Tian et al. (2019), CMC"
_CODE = "Tian et al. (2019), the authors' HobbitLong/CMC"


def softmax_pair_loss(anchor: Tensor, positive: Tensor, negatives: Tensor, temperature: float, rows: int) -> Tensor:
    """One ordered pair of views: the softmax cross-entropy over the positive and the negatives (the authors'
    ``--softmax``; ``rows``, the memory's size, is not used)."""
    return info_nce_queue_loss(anchor, positive, negatives, temperature)


def nce_pair_loss(anchor: Tensor, positive: Tensor, negatives: Tensor, temperature: float, rows: int) -> Tensor:
    """One ordered pair of views: NCE against uniform noise over the ``rows`` memory rows, its normaliser Z
    estimated from this step's similarities of the pair's anchors to its negatives (the authors keep one Z per
    direction)."""
    normaliser = log_nce_normaliser(anchor.detach() @ negatives.T, temperature, rows)
    return pirl_nce_loss(positive, anchor, negatives, temperature, normaliser, rows)


#: The pair losses ``cmc.loss`` may name: ``(anchor, positive, negatives, tau, memory rows) -> 0-d loss``.
PAIR_LOSSES: dict[str, Callable[[Tensor, Tensor, Tensor, float, int], Tensor]] = {
    "softmax": softmax_pair_loss,
    "nce": nce_pair_loss,
}


@dataclass
class CMCSettings:
    """The ``cmc`` section."""

    loss: str = setting(
        "softmax",
        "the loss of a pair of views: softmax (cross-entropy over the positive and the negatives) or nce (noise-"
        "contrastive estimation, each direction's normaliser estimated at every step)",
        choices=PAIR_LOSSES,
    )
    temperature: float = setting(0.07, "tau", bounds=POSITIVE)
    negatives: int = setting(4096, "K, memory rows of the other view drawn as negatives per step",
                             bounds=AT_LEAST_ONE)  # fmt: skip
    bank_momentum: float = setting(0.5, "EMA momentum of the memory banks", bounds=UNIT_INTERVAL)


SPEC = MethodSpec(
    "CMC: contrast each image's L and ab (two encoders) through a memory bank per view (Tian et al., 2019)",
    CMCSettings,
    section="cmc",
    section_help="CMC's views, memory banks and pair loss",
    recipes={  # no CIFAR recipe is published
        "*": paper_sgd(
            f"{_CODE}, train_CMC.py at HEAD (SGD 0.03, momentum 0.9, wd 1e-4, batch 128, x0.1 at epochs 120, 160 "
            "and 200 of 240; no batch rule)",
            lr=0.03,
            weight_decay=1e-4,
            lr_scaling="none",
            reference_batch=128,
            schedule="step",
            milestone_shares=[0.5, 2 / 3, 5 / 6],
            gamma=0.1,
        ),
    },
    presets={
        "*": {
            "model": {"colour_split": "lab", "head": "linear", "embedding_dim": 128},
            "data": {"augment": "crop_flip"},
        },
        "digits": {"cmc": {"negatives": 1024}},
    },
    references={
        "*": {
            "cmc.loss": Reference("nce", f"{_CODE}, train_CMC.py (NCE unless --softmax)"),
            "cmc.temperature": Reference(0.07, f"{_CODE}, README (nce_t 0.07 for ImageNet, 0.1 for STL-10)"),
            "cmc.negatives": Reference(4096, f"{_CODE}, README (nce_k 4096; the released weights)"),
            "cmc.bank_momentum": Reference(0.5, f"{_CODE}, README (nce_m)"),
            "model.colour_split": Reference("lab", f"{_PAPER}, Sec. 4.2; {_CODE}, README (L and ab by default)"),
            "model.head": Reference("linear", f"{_CODE}, models/resnet.py (a linear layer to feat_dim, L2-normalised)"),
            "model.embedding_dim": Reference(128, f"{_CODE}, train_CMC.py (feat_dim)"),
            "data.augment": Reference(
                "crop_flip",
                f"{_CODE}, train_CMC.py (RandomResizedCrop with scale (crop_low 0.2, "
                "1) and a flip; no colour jitter, which would change the views themselves)",
            ),
        },
    },
    deviations={
        "*": {
            "cmc.loss": f"{_CODE}, README: switching to softmax-CE is likely to improve the results, and its "
            "ImageNet-100 table's CMC row (75.8) is trained with it",
        },
        "digits": {"cmc.negatives": "below the 1,347 digits training images (drawn with replacement)"},
    },
    headline=("cmc.loss", "cmc.temperature", "cmc.negatives", "model.colour_split"),
    terms=("loss_cmc",),
    curves=(Curve("CMC's loss over both directions", ("loss_cmc",)),),
    compare=False,
    colour_only=True,
    colour_split=True,
    smoke=SmokeRun(
        floor=Floor.FINITE,
        why="the test's colour images are digits tinted with a random colour per image, so the information L and ab "
        "share is mostly the tint, which says nothing of the class; measured (3 epochs, crops and flips): the head's "
        "kNN fell from the untrained 0.6600 to 0.0933 and the backbone's from 0.8133 to 0.2067, while each test "
        "image's nearest neighbour by the embedding is nearer in tint than a random image (mean distance of the "
        "normalised tints 0.13 against 0.24); a short run checks its terms and finite losses",
    ),
    torchrun=Torchrun.REFUSED,
    torchrun_note="its memory banks are not split over processes",
    accumulation=Accumulation.RUNS,
    accumulation_note="each chunk draws its own negatives",
)


@dataclass
class ViewsUpdate:
    """The bank rows of a step and each view's embeddings they move towards."""

    indices: Tensor
    embeddings: list[Tensor]


@register_method("cmc", SPEC)
class CMC(Method):
    """Contrastive multiview coding between the channel groups of a colour space (Tian et al., 2019, Sec. 3).

    Args:
        settings: the ``cmc`` section.
        encoder: an :class:`invprop.models.Encoder` whose backbone is a
            :class:`~invprop.models.colour_split.ColourSplitBackbone` (``model.colour_split``); its head gives each
            view's D-wide embedding side by side.
        context: N (the banks' rows) and D; a distributed run is refused.
    """

    def __init__(self, settings: CMCSettings, encoder: nn.Module, context: BuildContext) -> None:
        backbone = getattr(encoder, "backbone", None)
        if not isinstance(backbone, ColourSplitBackbone):
            raise ConfigError("method cmc needs one backbone per view: set model.colour_split (lab: CMC's L and ab, "
                              "or ycbcr)")  # fmt: skip
        super().__init__(encoder, context)
        self.options = settings
        self.num_samples = context.num_samples
        self.embedding_dim = context.embedding_dim
        self.banks = nn.ModuleList(
            MemoryBank(context.num_samples, context.embedding_dim, momentum=settings.bank_momentum, num_neighbors=1)
            for _ in backbone.group_dims
        )

    @property
    def view_banks(self) -> list[MemoryBank]:
        """The memory bank of each view, in the views' order."""
        return [cast(MemoryBank, bank) for bank in self.banks]

    def view_embeddings(self, images: Tensor) -> list[Tensor]:
        """Each view's L2-normalised embedding (B, D) of a batch."""
        joined = self.encode(images).float()
        return [F.normalize(part, dim=1) for part in joined.split(self.embedding_dim, dim=1)]

    def training_step(self, batch: Batch) -> StepOutput:
        embeddings = self.view_embeddings(self.views_of(batch))
        indices = batch.indices.to(embeddings[0].device)
        draws = torch.randint(self.num_samples, (self.options.negatives,), device=indices.device)
        memories = [bank.features[indices].float() for bank in self.view_banks]
        drawn = [bank.features[draws].float() for bank in self.view_banks]
        loss_of, tau, rows = PAIR_LOSSES[self.options.loss], self.options.temperature, self.num_samples

        def pair_loss(anchor: Tensor, positive: Tensor, negatives: Tensor) -> Tensor:
            return loss_of(anchor, positive, negatives, tau, rows)

        loss = full_graph_loss(embeddings, memories, drawn, pair_loss)
        return StepOutput(loss, {"loss_cmc": loss.detach()}, ViewsUpdate(indices, [z.detach() for z in embeddings]))

    @torch.no_grad()
    def after_step(self, outputs: Sequence[StepOutput]) -> None:
        for output in outputs:
            for bank, embeddings in zip(self.view_banks, output.update.embeddings, strict=True):
                bank.update(output.update.indices, embeddings)


__all__ = ["CMC", "CMCSettings", "PAIR_LOSSES", "SPEC", "nce_pair_loss", "softmax_pair_loss"]
