"""SimCLRv2's self-supervised stage (Chen, Kornblith, Swersky, Norouzi & Hinton, NeurIPS 2020) as a training method:
``method: simclr-v2``.

SimCLR's NT-Xent (:func:`invprop.core.contrastive_losses.nt_xent_loss`) through the paper's deeper projector: three
layers, the first two as wide as the backbone's features with BatchNorm and ReLU, the last to 128 with BatchNorm and
no ReLU, no bias and no shift (``model.head: mlp3_bn_scaled``). The paper then fine-tunes from the projector's first layer rather than from
the backbone, and distils the fine-tuned network into a student on the unlabelled images; both use labels, so they
are evaluation protocols: ``invprop eval semi --from-head-layer 1`` and ``invprop eval distill``.

Not here: the paper's optional MoCo-style memory of 65,536 momentum-encoded negatives (+1% on ImageNet); the authors'
public code has none, nor has its CIFAR-10 command (``moco`` is this library's queue method). The paper's bigger
selective-kernel ResNets are backbones, not part of the objective.
"""

from __future__ import annotations

from dataclasses import dataclass

from invprop.methods.contrastive.simclr import SimCLR, SimCLRSettings
from invprop.methods.recipes import paper_lars
from invprop.methods.spec import Accumulation, Curve, MethodSpec, register_method
from invprop.settings import POSITIVE, Reference, setting

_PAPER = "Chen et al. (2020b), SimCLRv2"
_CODE = "Chen et al. (2020b), the authors' google-research/simclr tf2 code"
_README = f"{_CODE}, README"


@dataclass
class SimCLRv2Settings(SimCLRSettings):
    """The ``simclr_v2`` section."""

    temperature: float = setting(0.1, "tau of NT-Xent", bounds=POSITIVE)


SPEC = MethodSpec(
    "SimCLRv2: NT-Xent through a three-layer projector, fine-tuned later from its first layer (Chen et al., 2020b)",
    SimCLRv2Settings,
    section="simclr_v2",
    section_help="SimCLRv2's contrastive loss",
    multi_crop=True,
    accumulation=Accumulation.REFUSED,
    accumulation_note="NT-Xent contrasts every view of the whole batch with every other",
    presets={
        "*": {"model": {"head": "mlp3_bn_scaled", "embedding_dim": 128}},
        "cifar10": {"simclr_v2": {"temperature": 0.5}},
    },
    recipes={
        "*": paper_lars(
            f"{_README} ImageNet command (LARS, 0.075 x sqrt(B), wd 1e-4, 10 warm-up epochs)",
            lr=1.2,
            weight_decay=1e-4,
            lr_scaling="sqrt",
        ),
        "cifar10": paper_lars(
            f"{_README} CIFAR-10 command (LARS, lr 1.0 x B / 256, wd 1e-4, batch 512, 1000 epochs; run.py's 10 "
            "warm-up epochs)",
            lr=1.0,
            weight_decay=1e-4,
        ),
    },
    references={
        "*": {
            "simclr_v2.temperature": Reference(0.1, f"{_CODE}, run.py (--temperature)"),
            "model.head": Reference("mlp3_bn_scaled", f"{_CODE}, model.py ProjectionHead (--num_proj_layers=3)"),
            "model.embedding_dim": Reference(128, f"{_CODE}, run.py (--proj_out_dim)"),
            "optim.batch_size": Reference(4096, f"{_README} ImageNet command"),
            "epochs": Reference(800, f"{_PAPER}, Sec. 4"),
        },
        "cifar10": {
            "simclr_v2.temperature": Reference(0.5, f"{_README} CIFAR-10 command"),
            "optim.batch_size": Reference(512, f"{_README} CIFAR-10 command"),
            "epochs": Reference(1000, f"{_README} CIFAR-10 command"),
        },
    },
    deviations={
        "*": {
            "optim.batch_size": "the dataset preset's batch (4096 needs many accelerators); the lr follows the "
            "recipe's sqrt rule",
            "epochs": "the dataset preset's length, which every method of a compare shares",
        },
        "cifar10": {
            "optim.batch_size": "the CIFAR preset's batch, shared by a compare's methods; the lr follows the recipe's "
            "linear rule",
            "epochs": "the dataset preset's length, which every method of a compare shares",
        },
    },
    headline=("simclr_v2.temperature", "model.head"),
    terms=("loss_nce",),
    curves=(Curve("NT-Xent", ("loss_nce",)),),
    compare=False,
)


@register_method("simclr-v2", SPEC)
class SimCLRv2(SimCLR):
    """NT-Xent between the two views' projections through the three-layer projector (Chen et al., 2020b, Sec. 2.1;
    the loss of Chen et al., 2020, Eq. 1)."""


__all__ = ["SPEC", "SimCLRv2", "SimCLRv2Settings"]
