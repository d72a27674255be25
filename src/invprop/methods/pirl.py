"""PIRL (Misra & van der Maaten, 2020) as a training method: ``method: pirl``.

Two views per image: the first, v_I, through the encoder (backbone + ``model.head``) gives f(v_I); the second is
cut into a 3 x 3 jigsaw (:func:`invprop.data.jigsaw.jigsaw_tiles`), every tile goes through the same backbone and
a shared linear projection, and the concatenated tiles are projected to g(v_It). A memory bank holds an EMA
m_I of f(v_I) per image. The loss mixes two NCE terms (Eq. 5): ``lambda L_NCE(m_I, g(v_It)) + (1 - lambda)
L_NCE(m_I, f(v_I))`` with negatives drawn uniformly from the bank
(:func:`invprop.core.contrastive_losses.pirl_nce_loss`). NCE's normaliser Z is estimated at every step from that
step's similarities to the drawn negatives (``pirl.normaliser=per_step``, the default) or, as Wu et al. do, once on
the first step and then fixed (``first_step``, kept in a buffer so a resumed run keeps it). Fixed after the first
step -- while the bank still holds its random initial rows -- the loss exploded on digits (docs/results.md).

Differences from the paper, for small images: a tile is a whole grid cell (no random crop inside the cell) and is
resized to ``pirl.tile_size`` (default: the image side) so that any backbone accepts it. The run refuses torchrun:
the tiles go through the backbone outside the engine's data-parallel wrapper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from invprop.core.bank import MemoryBank
from invprop.core.contrastive_losses import log_nce_normaliser, pirl_nce_loss
from invprop.data.jigsaw import jigsaw_tiles
from invprop.errors import ConfigError
from invprop.methods.base import METHODS, BuildContext, Method, MethodSpec, StepOutput
from invprop.methods.field_published import FIELD_DEVIATIONS, FIELD_PRESETS, FIELD_REFERENCES
from invprop.settings import AT_LEAST_ONE, AT_LEAST_TWO, FRACTION, POSITIVE, UNIT_INTERVAL, section, setting

#: When NCE's normaliser Z is estimated.
NORMALISERS = ("per_step", "first_step")


@dataclass
class PIRLOptions:
    """The ``pirl`` section."""

    temperature: float = setting(0.07, "tau of the NCE probability", bounds=POSITIVE)
    negatives: int = setting(32000, "m, bank rows drawn as negatives per step", bounds=AT_LEAST_ONE)
    weight: float = setting(0.5, "lambda, the share of the jigsaw term in the loss (Eq. 5)", bounds=FRACTION)
    bank_momentum: float = setting(0.5, "EMA momentum of the memory bank", bounds=UNIT_INTERVAL)
    grid: int = setting(3, "jigsaw tiles per side", bounds=AT_LEAST_TWO)
    tile_size: int | None = setting(None, "side each tile is resized to (null: the image side)", bounds=AT_LEAST_ONE)
    normaliser: str = setting(
        "per_step",
        "NCE's normaliser Z: per_step (estimated at every step from that step's similarities to the drawn negatives) "
        "or first_step (Wu et al.: estimated once, then fixed)",
        choices=NORMALISERS,
    )


@dataclass
class PIRLSettings:
    pirl: PIRLOptions = section(PIRLOptions, "PIRL's memory bank, jigsaw view and NCE loss")


class PIRL(Method):
    """Pretext-invariant representation learning with a memory bank (Misra & van der Maaten, 2020, Eq. 5).

    Args:
        encoder: an :class:`invprop.models.Encoder` (its ``backbone`` encodes the tiles; ``feature_dim`` wide).
        num_samples: N, the bank's rows.
        embedding_dim: D.
        options: the ``pirl`` section.
    """

    views = 2
    log_normaliser: Tensor
    normaliser_set: Tensor

    def __init__(self, encoder: nn.Module, num_samples: int, embedding_dim: int, options: PIRLOptions) -> None:
        super().__init__(encoder)
        self.options = options
        self.num_samples = num_samples
        features = int(getattr(encoder, "feature_dim"))
        tiles = options.grid * options.grid
        self.tile_projection = nn.Linear(features, embedding_dim)
        self.jigsaw_head = nn.Linear(tiles * embedding_dim, embedding_dim)
        self.bank = MemoryBank(num_samples, embedding_dim, momentum=options.bank_momentum, num_neighbors=1)
        self.register_buffer("log_normaliser", torch.zeros(()))
        self.register_buffer("normaliser_set", torch.zeros((), dtype=torch.bool))
        self._pending: tuple[Tensor, Tensor] | None = None

    def jigsaw_representation(self, images: Tensor) -> Tensor:
        """g(v_It): (B, D) from the jigsaw of each image."""
        o = self.options
        tiles, _ = jigsaw_tiles(images, o.grid, o.tile_size)
        features = self.encoder.backbone(tiles)  # type: ignore[operator]
        per_tile = self.tile_projection(features).reshape(images.shape[0], -1)
        return self.jigsaw_head(per_tile)

    def training_step(self, indices: Tensor, images: Tensor, epoch: int) -> StepOutput:
        n = images.shape[0] // 2
        f = self.encode(images[:n])
        g = self.jigsaw_representation(images[n:])
        bank = self.bank.features
        indices = indices.to(bank.device)
        memory = bank[indices].float()
        draws = torch.randint(self.num_samples, (self.options.negatives,), device=bank.device)
        negatives = bank[draws].float()
        tau = self.options.temperature
        if self.options.normaliser == "per_step" or not bool(self.normaliser_set):
            with torch.no_grad():
                sims = nn.functional.normalize(f.float(), dim=1) @ negatives.T
                self.log_normaliser.copy_(log_nce_normaliser(sims, tau, self.num_samples))
                self.normaliser_set.fill_(True)
        jigsaw = pirl_nce_loss(memory, g, negatives, tau, self.log_normaliser, self.num_samples)
        image = pirl_nce_loss(memory, f, negatives, tau, self.log_normaliser, self.num_samples)
        weight = self.options.weight
        loss = weight * jigsaw + (1 - weight) * image
        self._pending = (indices, f.detach())
        return StepOutput(loss, {"loss_jigsaw": jigsaw.detach(), "loss_image": image.detach()})

    @torch.no_grad()
    def after_step(self) -> None:
        if self._pending is not None:
            self.bank.update(*self._pending)
            self._pending = None


def build_pirl(settings: PIRLSettings, encoder: nn.Module, context: BuildContext) -> PIRL:
    if context.distributed:
        raise ConfigError("method pirl does not run under torchrun yet (its tiles bypass the data-parallel wrapper); "
                          "run it as one process")  # fmt: skip
    return PIRL(encoder, context.num_samples, context.embedding_dim, settings.pirl)


METHODS.register("pirl")(
    MethodSpec(
        "PIRL: a memory bank and NCE between an image and its jigsaw (Misra & van der Maaten, 2020)",
        PIRLSettings,
        build_pirl,
        presets=FIELD_PRESETS["pirl"],
        headline=("pirl.temperature", "pirl.negatives", "pirl.weight"),
        references=FIELD_REFERENCES["pirl"],
        deviations=FIELD_DEVIATIONS["pirl"],
    )
)

__all__ = ["PIRL", "PIRLOptions", "PIRLSettings", "build_pirl"]
