"""Learning to spot artifacts (Jenni & Favaro, CVPR 2018) as a training method: ``method: spot-artifacts``.

Two stages. First an autoencoder (:class:`invprop.models.autoencoder.ConvAutoencoder`) learns to reconstruct the
training images (its own optimiser, ``spot_artifacts_autoencoder``; ``spot_artifacts.autoencoder_epochs``). Then it
is frozen, and on every batch its code is damaged -- each position kept with probability ``keep``, the others
replaced by their 3x3 neighbourhood's mean (:func:`invprop.models.autoencoder.drop_positions`) -- and a repair
network (a :class:`~invprop.models.autoencoder.RepairLayer` before each decoder block: ``spot_artifacts_repair``)
restores what the frozen decoder makes of it. The discriminator -- the encoder (backbone + head) with a linear
real-or-made score on its embedding and a 1x1 convolution predicting, from its last feature map, which code
positions were damaged -- is trained (the main optimiser) to tell the autoencoder's reconstructions (so that both
classes carry its blur) from the repaired images, and where the damage was (weight ``mask_weight``); the repair
network to fool it, its pixels held to the image's where the code was kept (weight ``repair_weight``,
:func:`invprop.core.reconstruction_losses.weighted_squared_error` over the kept positions upsampled). The
discriminator's features are the representation: kNN, the linear probe and export use the encoder.

The real and the repaired images go through the discriminator as one batch (one forward), so its BatchNorm
statistics are those of both; they are never those of clean images, which kNN and the probe give it -- in eval mode
it uses running statistics gathered on reconstructions and repairs.

Differences from the paper: the discriminator is any backbone of this library (the paper: an AlexNet-like network
with BatchNorm); the decoder's blocks upsample by nearest neighbour and a convolution, with BatchNorm and ReLU (the
authors: LeakyReLU 0.1); the authors double the biases' gradients, here they are not; the autoencoder's stage is
``autoencoder_epochs`` of the run (the authors: 500 epochs, then 500 of the second stage).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invprop.core.reconstruction_losses import (
    damage_location_loss,
    discriminator_loss,
    generator_adversarial_loss,
    weighted_squared_error,
)
from invprop.errors import ConfigError
from invprop.methods.method import Batch, BuildContext, Method, StepOutput
from invprop.methods.parts import MAIN, Part, Stage
from invprop.methods.pixels import PixelSpace
from invprop.methods.spec import (
    Accumulation,
    Curve,
    Floor,
    ImageRows,
    MethodSpec,
    Recipe,
    SmokeRun,
    Torchrun,
    register_method,
)
from invprop.models.autoencoder import ConvAutoencoder, RepairLayer, drop_positions
from invprop.models.feature_maps import map_channels
from invprop.optim_settings import OptimizerSettings
from invprop.settings import AT_LEAST_ONE, NON_EMPTY_SHARE, NON_NEGATIVE, Reference, section, setting

_CODE = "Jenni & Favaro (2018), the authors' sjenni/LearningToSpotArtifacts"
#: The authors' Adam for every network: lr 3e-4, beta1 0.5, weight decay 5e-5, linear decay, batch 128.
_ADAM = {"optimizer": "adam", "lr": 3e-4, "betas": [0.5, 0.999], "weight_decay": 5e-5, "schedule": "linear",
         "lr_scaling": "none", "reference_batch": 128, "warmup_epochs": 0}  # fmt: skip
#: Why the autoencoder's stage is shorter than the authors'.
_SHORT_STAGE = (
    "the autoencoder's stage is part of the run's epochs: 10 by default (a tenth of the digits preset's 100); the "
    "authors' 500 precede 500 epochs of the second stage, which no CPU run here has"
)
_ADAM_SOURCE = f"{_CODE}, train_stl10.py and train/SDNetTrainer.py (Adam 3e-4, beta1 0.5, linear decay, batch 128)"


@dataclass
class SpotOptions:
    """The ``spot_artifacts`` section."""

    autoencoder_epochs: int = setting(10, "epochs of the first stage, the autoencoder alone", bounds=AT_LEAST_ONE)
    levels: int = setting(4, "the autoencoder's halvings of the side", bounds=AT_LEAST_ONE)
    width: int = setting(64, "the autoencoder's first width (doubling at each level)", bounds=AT_LEAST_ONE)
    keep: float = setting(0.4, "the probability that a code position is kept", bounds=NON_EMPTY_SHARE)
    mask_weight: float = setting(0.1, "the weight of the discriminator's damage-location loss", bounds=NON_NEGATIVE)
    repair_weight: float = setting(30.0, "the weight of the repaired pixels' error where the code was kept",
                                   bounds=NON_NEGATIVE)  # fmt: skip


@dataclass
class SpotSettings:
    """Spotting artifacts' sections: its own, and the autoencoder's and the repair network's optimisers."""

    spot_artifacts: SpotOptions = section(SpotOptions, "spotting artifacts' stages, damage and loss weights")
    spot_artifacts_autoencoder: OptimizerSettings = section(OptimizerSettings, "the autoencoder's optimiser")
    spot_artifacts_repair: OptimizerSettings = section(OptimizerSettings, "the repair network's optimiser")


def repair_rows(method: "SpotArtifacts", images: Tensor) -> list[tuple[str, Tensor]]:
    """The report's rows: the images, the autoencoder's reconstructions (the discriminator's "real"), what the
    frozen decoder makes of the damaged code, and the repaired images (its "made")."""
    pixels = method.pixels.to_pixels(images)
    code = method.autoencoder.encode(images)
    damaged, kept = drop_positions(code, method.options.keep)
    return [
        ("input", pixels),
        ("autoencoder (real)", method.pixels.to_pixels(method.autoencoder.decode(code))),
        ("damaged code, decoded", method.pixels.to_pixels(method.autoencoder.decode(damaged))),
        ("repaired (made)", method.pixels.to_pixels(method.repair(damaged, kept))),
    ]


SPEC = MethodSpec(
    "Spotting artifacts: a discriminator finds where a repaired autoencoder code was damaged (Jenni & Favaro, 2018)",
    SpotSettings,
    presets={
        "*": {"spot_artifacts_autoencoder": _ADAM, "spot_artifacts_repair": _ADAM},
        "digits": {"spot_artifacts": {"levels": 2, "width": 32}},
        "cifar10": {"spot_artifacts": {"levels": 3}},
    },
    recipes={"*": Recipe(_ADAM_SOURCE, _ADAM)},
    references={
        "*": {
            "spot_artifacts.levels": Reference(4, f"{_CODE}, train_autoencoder_stl10.py (4 down and 4 up layers)"),
            "spot_artifacts.autoencoder_epochs": Reference(500, f"{_CODE}, train_autoencoder_stl10.py (500 epochs)"),
            "spot_artifacts.keep": Reference(0.4, f"{_CODE}, models/SpotNet.py (pixel_dropout_avg(enc_im, 0.4))"),
            "spot_artifacts.mask_weight": Reference(0.1, f"{_CODE}, models/SpotNet.py (the mask loss's weight)"),
            "spot_artifacts.repair_weight": Reference(30.0, f"{_CODE}, models/SpotNet.py (the weighted MSE's 30)"),
            "spot_artifacts_autoencoder.lr": Reference(3e-4, _ADAM_SOURCE),
            "spot_artifacts_repair.lr": Reference(3e-4, _ADAM_SOURCE),
        },
    },
    deviations={
        "*": {"spot_artifacts.autoencoder_epochs": _SHORT_STAGE},
        "digits": {"spot_artifacts.levels": "8 x 8 digits: two halvings leave a 2 x 2 code"},
        "cifar10": {"spot_artifacts.levels": "32 x 32 images: three halvings leave a 4 x 4 code (the paper's 96: 6)"},
    },
    headline=("spot_artifacts.autoencoder_epochs", "spot_artifacts.keep", "spot_artifacts.levels"),
    terms=("loss_real_made", "loss_damage_location", "discriminator_accuracy", "loss_fool", "loss_kept_pixels"),
    curves=(
        Curve("the discriminator's losses", ("loss_real_made", "loss_damage_location")),
        Curve("the repair network's losses", ("loss_fool", "loss_kept_pixels")),
    ),
    image_rows=(
        ImageRows(
            "repairs",
            "Training images; the frozen autoencoder's reconstructions (what the discriminator "
            "calls real); the decoding of their damaged codes; the repair network's restorations (what it must "
            "call made).",
            repair_rows,
        ),  # fmt: skip
    ),
    parts=(Part("autoencoder", "spot_artifacts_autoencoder"), Part("repair", "spot_artifacts_repair")),
    stages=(
        Stage("autoencoder", ("autoencoder",), "spot_artifacts.autoencoder_epochs"),
        Stage("adversarial", (MAIN, "repair")),
    ),
    compare=False,
    smoke=SmokeRun(
        epochs=4,
        settings={"spot_artifacts": {"autoencoder_epochs": 1}},
        floor=Floor.FINITE,
        why="measured on digits (100 epochs, 10 of them the autoencoder's): the discriminator's head kNN swings "
        "around the untrained encoder's in the adversarial stage's first epochs (0.8844, then 0.8200, against 0.8267) "
        "and falls below it as the discriminator wins (0.6333 at epoch 40, 96% accuracy); a short run checks both "
        "stages' terms and finite losses",
    ),
    accumulation=Accumulation.REFUSED,
    accumulation_note="its networks step one after another on every batch",
    torchrun=Torchrun.RUNS,
    torchrun_note="each process draws its own damage",
)


@register_method("spot-artifacts", SPEC)
class SpotArtifacts(Method):
    """An autoencoder, then a discriminator against a repair network (Jenni & Favaro, 2018, Sec. 3).

    Args:
        settings: spotting artifacts' sections.
        encoder: backbone (any that gives feature maps) + head: the discriminator's trunk.
        context: D, the images' channels, side and normalisation.
    """

    options: SpotOptions

    def __init__(self, settings: SpotSettings, encoder: nn.Module, context: BuildContext) -> None:
        o = settings.spot_artifacts
        if context.image_size is None or context.image_size % 2**o.levels:
            raise ConfigError(f"spot_artifacts.levels={o.levels} halves the images' side {context.image_size} that "
                              f"many times: give levels whose 2^levels divides the side")  # fmt: skip
        channels = map_channels(getattr(encoder, "backbone", encoder))
        super().__init__(encoder, context)
        self.options = o
        self.pixels = PixelSpace(context.mean, context.std, "spot-artifacts")
        self.autoencoder = ConvAutoencoder(context.in_channels, o.levels, o.width)
        self.repairs = nn.ModuleList(RepairLayer(c) for c in self.autoencoder.block_channels)
        self.realness = nn.Linear(context.embedding_dim, 1)
        self.damage_map = nn.Conv2d(channels, 1, 1)

    def shared_modules(self) -> list[nn.Module]:
        return [self.autoencoder, self.repairs, self.realness, self.damage_map]

    def part_modules(self, name: str) -> list[nn.Module]:
        parts: dict[str, list[nn.Module]] = {"autoencoder": [self.autoencoder], "repair": [self.repairs]}
        return parts[name]

    def on_stage(self, stage: str) -> None:
        training = stage == "autoencoder"
        self.autoencoder.requires_grad_(training)
        if not training:  # frozen: its BatchNorm statistics too, and no stale gradient left to average
            self.autoencoder.eval()
            for p in self.autoencoder.parameters():
                p.grad = None

    def repair(self, damaged: Tensor, kept: Tensor) -> Tensor:
        """The frozen decoder's image of a damaged code, each of its blocks entered through a repair layer."""
        x = damaged
        for block, layer in zip(self.autoencoder.blocks, self.repairs, strict=True):
            x = block(layer(x, F.interpolate(kept, size=x.shape[-2:], mode="nearest")))
        return self.autoencoder.out(x)

    def judge(self, images: Tensor, side: int) -> tuple[Tensor, Tensor]:
        """The discriminator's real-or-made logits (B,) and its damage-location logits (B, 1, side, side)."""
        out = self.encode_maps(images)
        location = F.interpolate(self.damage_map(out.maps.last), size=(side, side), mode="bilinear",
                                 align_corners=False)  # fmt: skip
        return self.realness(out.embedding).squeeze(1), location

    def _real_and_damaged(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The autoencoder's reconstructions, the damaged codes and their kept-masks (no gradients: it is frozen)."""
        with torch.no_grad():
            code = self.autoencoder.encode(images)
            damaged, kept = drop_positions(code, self.options.keep)
            return self.autoencoder.decode(code), damaged, kept

    def part_step(self, name: str, batch: Batch) -> StepOutput:
        images = self.views_of(batch)
        if name == "autoencoder":
            loss = weighted_squared_error(self.autoencoder(images), images, torch.ones_like(images[:, :1]))
            return StepOutput(loss, {})
        _, damaged, kept = self._real_and_damaged(images)
        made = self.repair(damaged, kept)
        made_logits, _ = self.judge(made, kept.shape[-1])
        fool = generator_adversarial_loss(made_logits)
        weights = F.interpolate(kept, size=images.shape[-2:], mode="nearest")
        pixels = weighted_squared_error(made, images, weights)
        loss = fool + self.options.repair_weight * pixels
        return StepOutput(loss, {"loss_fool": fool.detach(), "loss_kept_pixels": pixels.detach()})

    def training_step(self, batch: Batch) -> StepOutput:
        images = self.views_of(batch)
        real, damaged, kept = self._real_and_damaged(images)
        with torch.no_grad():
            made = self.repair(damaged, kept)
        b, side = images.shape[0], kept.shape[-1]
        logits, locations = self.judge(torch.cat([real, made]), side)  # one forward: one BatchNorm pass, one DDP pass
        (real_logits, made_logits), (real_location, made_location) = logits.split(b), locations.split(b)
        real_made = discriminator_loss(real_logits, made_logits)
        location = (
            damage_location_loss(real_location, torch.ones_like(kept)) + damage_location_loss(made_location, kept)
        ) / 2
        loss = real_made + self.options.mask_weight * location
        accuracy = ((real_logits > 0).float().mean() + (made_logits < 0).float().mean()) / 2
        return StepOutput(loss, {"loss_real_made": real_made.detach(), "loss_damage_location": location.detach(),
                                 "discriminator_accuracy": accuracy.detach()})  # fmt: skip


__all__ = ["SPEC", "SpotArtifacts", "SpotOptions", "SpotSettings", "repair_rows"]
