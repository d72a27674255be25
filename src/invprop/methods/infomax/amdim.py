"""AMDIM, augmented multiscale Deep InfoMax (Bachman, Hjelm & Buchwalter, NeurIPS 2019), as a training method:
``method: amdim``.

Two augmented views of each image. From each view the encoder gives a global vector (its embedding) and its
backbone's last two feature maps (the paper's 5 x 5 and 7 x 7 maps; 4 x 4 and 8 x 8 for the small conv net on
CIFAR); small critics embed each to ``amdim.units`` dimensions (the paper's ``n_rkhs``). Three NCE terms, each
from a source in one view to every location of a target map of the other view
(:func:`invprop.core.mutual_information.amdim_nce_loss`: scaled dot products, soft clipped at ``amdim.clip``, the
other images' locations as negatives, plus ``amdim.penalty`` times the mean squared score): global to the last
map, global to the map before it, and a random location of the last map to every location of the other view's last
map (the paper's 1-5, 1-7 and 5-5). The terms are weighted equally, summed, and averaged over both directions.

Differences from the paper: the backbone is any of this library's (the paper designs its own encoder with
controlled receptive fields), and the authors' 500-step warm-up is left out. In a distributed run the critics'
embeddings are gathered, so the negatives are those of the global batch; the random source locations are drawn
per process.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from invprop.core.mutual_information import amdim_nce_loss
from invprop.methods.method import Batch, BuildContext, StepOutput
from invprop.methods.recipes import paper_sgd
from invprop.methods.spec import Accumulation, Curve, Floor, MethodSpec, SmokeRun, Torchrun, register_method
from invprop.methods.two_views import TwoViewMethod, halves
from invprop.models.dense_head import DenseProjector
from invprop.models.feature_maps import map_channels
from invprop.models.heads import HEADS
from invprop.settings import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Reference, setting

_PAPER = "Bachman et al. (2019), AMDIM"
_CODE = "Bachman et al. (2019), the authors' Philip-Bachman/amdim-public"
#: The backbone stages the local terms read, counted from the last: the last map and the one before it.
STAGES = 2


@dataclass
class AMDIMSettings:
    """The ``amdim`` section."""

    units: int = setting(1024, "n_rkhs, the width the critics embed every source and target to", bounds=AT_LEAST_ONE)
    clip: float = setting(20.0, "c of the soft clipping c tanh(s / c) of the scores (tclip)", bounds=POSITIVE)
    penalty: float = setting(0.05, "the weight of the mean squared raw score", bounds=NON_NEGATIVE)


SPEC = MethodSpec(
    "AMDIM: NCE between a view's global vector or a location and every location of the other view's maps, at "
    "two scales (Bachman et al., 2019)",
    AMDIMSettings,
    section="amdim",
    section_help="AMDIM's critics, soft clipping and score penalty",
    accumulation=Accumulation.REFUSED,
    accumulation_note="the other images' locations in the batch are the negatives",
    presets={
        "*": {"model": {"head": "mlp_bn"}},
        "digits": {"amdim": {"units": 256}},
    },
    recipes={
        "*": paper_sgd(
            f"{_CODE}, train.py and its CIFAR command (Adam 2e-4, betas 0.8 and 0.999, wd 1e-5, x0.1 at 250 and 280 "
            "of 300 epochs)",
            lr=2e-4,
            weight_decay=1e-5,
            lr_scaling="none",
            reference_batch=200,
            optimizer="adam",
            betas=[0.8, 0.999],
            schedule="step",
            milestone_shares=[250 / 300, 280 / 300],
        ),
    },  # fmt: skip
    references={
        "*": {
            "amdim.units": Reference(1024, f"{_CODE}, train.py (n_rkhs)"),
            "amdim.clip": Reference(20.0, f"{_CODE}, train.py (tclip); {_PAPER}, Sec. 3.4"),
            "amdim.penalty": Reference(0.05, f"{_CODE}, costs.py (the squared-score regulariser)"),
        },
    },
    deviations={"digits": {"amdim.units": "scaled down with the 256-wide digits network"}},
    headline=("amdim.units", "amdim.clip"),
    terms=("loss_global_last", "loss_global_before", "loss_local_local"),
    curves=(Curve("AMDIM's NCE terms", ("loss_global_last", "loss_global_before", "loss_local_local")),),
    compare=False,
    smoke=SmokeRun(
        floor=Floor.FINITE,
        why="measured on digits with the authors' Adam at 2e-4: the head's kNN starts below the untrained encoder's "
        "(0.7489 after 2 epochs against 0.8267) and passes it only at epoch 10 (0.8333); a short run checks its "
        "terms and finite losses",
    ),
    torchrun=Torchrun.RUNS,
    torchrun_note="each process draws its own source locations",
)


@register_method("amdim", SPEC)
class AMDIM(TwoViewMethod):
    """AMDIM's three NCE terms between the views (Bachman et al., 2019, Sec. 3).

    Args:
        settings: the ``amdim`` section.
        encoder: backbone + head; the head's output is the global vector, the backbone's last two maps the local
            features.
        context: D, the global vector's width; in a distributed run the critics' embeddings are gathered.
    """

    def __init__(self, settings: AMDIMSettings, encoder: nn.Module, context: BuildContext) -> None:
        backbone = getattr(encoder, "backbone", encoder)
        last, before = map_channels(backbone, -1), map_channels(backbone, -STAGES)
        super().__init__(encoder, context)
        self.options = settings
        u = settings.units
        self.global_critic = HEADS.get("mlp")(context.embedding_dim, u, u)
        self.last_critic = DenseProjector(last, u, u)
        self.before_critic = DenseProjector(before, u, u)

    def shared_modules(self) -> list[nn.Module]:
        return [self.global_critic, self.last_critic, self.before_critic]

    def training_step(self, batch: Batch) -> StepOutput:
        out = self.encode_maps(self.views_of(batch), STAGES)
        before_map, last_map = out.maps.stages
        g, last, before = (
            [self.gather(view) for view in halves(x)]  # each view's rows of every process, in rank order
            for x in (self.global_critic(out.embedding), self.last_critic(last_map), self.before_critic(before_map))
        )
        o = self.options
        terms: dict[str, list[Tensor]] = {"loss_global_last": [], "loss_global_before": [], "loss_local_local": []}
        for a, b in ((0, 1), (1, 0)):  # both directions
            terms["loss_global_last"].append(amdim_nce_loss(g[a], last[b], o.clip, o.penalty))
            terms["loss_global_before"].append(amdim_nce_loss(g[a], before[b], o.clip, o.penalty))
            terms["loss_local_local"].append(amdim_nce_loss(random_location(last[a]), last[b], o.clip, o.penalty))
        means = {name: torch.stack(values).mean() for name, values in terms.items()}
        loss = torch.stack(list(means.values())).sum()
        return StepOutput(loss, {name: value.detach() for name, value in means.items()})


def random_location(maps: Tensor) -> Tensor:
    """One location of each map, drawn uniformly (torch's global generator): (B, U, h, w) -> (B, U)."""
    b, u, h, w = maps.shape
    picked = torch.randint(h * w, (b,)).to(maps.device)
    return maps.flatten(2)[torch.arange(b, device=maps.device), :, picked]


__all__ = ["AMDIM", "AMDIMSettings", "SPEC", "random_location"]
