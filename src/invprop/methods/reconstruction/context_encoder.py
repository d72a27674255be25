"""Context encoders (Pathak, Krähenbühl, Donahue, Darrell & Efros, CVPR 2016) as a training method:
``method: context-encoder``.

A region of each training image is hidden -- random blob-shaped regions (the paper's choice for feature learning,
Sec. 3.3: :func:`invprop.data.masks.random_region_masks`) or the centre square (:func:`invprop.data.masks.
centre_region_weights`, whose edge band stays visible and weighs ``overlap_weight`` times more) -- and filled with
the dataset's mean colour (0 in normalised units); the encoder (backbone + ``model.head``: the head's output is the
code) and a decoder (:class:`invprop.models.decoders.VectorDecoder`) inpaint the image. The loss is
``reconstruction_weight x`` the squared error over the predicted region
(:func:`invprop.core.reconstruction_losses.weighted_squared_error`) ``+ adversarial_weight x`` the non-saturating
adversarial loss against a DCGAN discriminator (:class:`invprop.models.discriminators.PatchDiscriminator`) that
sees the real and the inpainted region (the centre square, or the whole image around random regions). The
discriminator is a part with its own optimiser (the ``context_encoder_discriminator`` section), stepped before the
encoder and decoder on every batch. ``adversarial_weight`` 0 gives the reconstruction loss alone (the paper's
feature-learning runs, Sec. 5.2); the discriminator then still trains, alone.

Differences from the paper: the encoder is any backbone of this library, its code the head's output (the authors'
4,000-unit bottleneck); the decoder's blocks upsample by nearest neighbour and a convolution, not by transposed
convolutions; the hidden pixels take the dataset's mean colour (the authors' a fixed colour, ImageNet's mean); the
random regions hide exactly ``share`` of each image (the authors' threshold gives 20-30%, one mask per batch); the
discriminator's step draws its own hidden regions and runs the encoder once more, without gradients (the authors
reuse the generator's images: one forward fewer), so the encoder's BatchNorm statistics move twice per batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from invprop.core.reconstruction_losses import discriminator_loss, generator_adversarial_loss, weighted_squared_error
from invprop.data.masks import centre_region_weights, centre_square, random_region_masks
from invprop.errors import ConfigError
from invprop.methods.method import Batch, BuildContext, Method, StepOutput
from invprop.methods.parts import Part
from invprop.methods.pixels import PixelSpace
from invprop.methods.spec import Accumulation, Curve, ImageRows, MethodSpec, Recipe, Torchrun, register_method
from invprop.models.decoders import VectorDecoder
from invprop.models.discriminators import PatchDiscriminator
from invprop.optim_settings import OptimizerSettings
from invprop.settings import AT_LEAST_ONE, NON_EMPTY_SHARE, NON_NEGATIVE, UNIT_INTERVAL, Reference, section, setting

_PAPER = "Pathak et al. (2016)"
_CODE = "Pathak et al. (2016), the authors' pathak22/context-encoder"
#: The authors' Adam: lr 2e-4 and beta1 0.5 for the discriminator, ten times the lr for the encoder-decoder when
#: both losses are on (train.lua), batch 64.
AUTHORS_LR, AUTHORS_BETAS, AUTHORS_BATCH, GENERATOR_LR_FACTOR = 2e-4, [0.5, 0.999], 64, 10
#: The overlap band of the authors' centre region: 4 pixels of 128.
AUTHORS_OVERLAP = 4 / 128


@dataclass(frozen=True)
class Region:
    """How a batch is hidden: ``hide(method, B, device) -> (hidden (B or 1, 1, H, W) bool, loss weights)``, and the box
    the discriminator sees (None: the whole image)."""

    hide: Callable[["ContextEncoder", int, torch.device], tuple[Tensor, Tensor]]
    box: Callable[["ContextEncoder"], tuple[int, int] | None]


def _random_regions(method: "ContextEncoder", batch: int, device: torch.device) -> tuple[Tensor, Tensor]:
    o, side = method.options, method.side
    hidden = random_region_masks(batch, side, o.share, o.cells, device)
    return hidden, hidden.float()


def _centre(method: "ContextEncoder", batch: int, device: torch.device) -> tuple[Tensor, Tensor]:
    o, side = method.options, method.side
    overlap = round(o.overlap_share * side)
    hidden, weights = centre_region_weights(side, o.centre_share, overlap, o.overlap_weight)
    return hidden.to(device), weights.to(device)


#: The hidden regions ``context_encoder.region`` may name.
REGIONS: dict[str, Region] = {
    "random": Region(_random_regions, lambda method: None),
    "centre": Region(_centre, lambda method: centre_square(method.side, method.options.centre_share)),
}


@dataclass
class ContextEncoderOptions:
    """The ``context_encoder`` section."""

    region: str = setting("random", "the hidden region: random (blob-shaped regions, the paper's for feature "
                          "learning) or centre (the centre square)", choices=REGIONS)  # fmt: skip
    share: float = setting(0.25, "random: the share of each image's pixels hidden", bounds=NON_EMPTY_SHARE)
    centre_share: float = setting(0.5, "centre: the square's side over the image's (its area: this squared)",
                                  bounds=NON_EMPTY_SHARE)  # fmt: skip
    cells: int = setting(8, "random: the noise grid's cells per side (fewer give larger blobs)", bounds=AT_LEAST_ONE)
    overlap_share: float = setting(AUTHORS_OVERLAP, "centre: the visible band along the square's edges that is "
                                   "predicted too, over the image side", bounds=UNIT_INTERVAL)  # fmt: skip
    overlap_weight: float = setting(10.0, "centre: the band's loss weight relative to the hidden pixels'",
                                    bounds=NON_NEGATIVE)  # fmt: skip
    reconstruction_weight: float = setting(0.999, "lambda_rec, the squared error's weight", bounds=NON_NEGATIVE)
    adversarial_weight: float = setting(0.001, "lambda_adv, the adversarial loss's weight (0: reconstruction alone)",
                                        bounds=NON_NEGATIVE)  # fmt: skip
    decoder_width: int = setting(128, "channels of the decoder's first map", bounds=AT_LEAST_ONE)
    start_side: int = setting(4, "side of the decoder's first map, from the code", bounds=AT_LEAST_ONE)
    discriminator_width: int = setting(64, "channels of the discriminator's first convolution", bounds=AT_LEAST_ONE)


@dataclass
class ContextEncoderSettings:
    """The context encoder's sections: its own, and its discriminator's optimiser."""

    context_encoder: ContextEncoderOptions = section(ContextEncoderOptions, "the context encoder's region, losses "
                                                     "and networks")  # fmt: skip
    context_encoder_discriminator: OptimizerSettings = section(
        OptimizerSettings, "the discriminator's optimiser (the authors' Adam, 2e-4, beta1 0.5)",
    )  # fmt: skip


def inpainting_rows(method: "ContextEncoder", images: Tensor) -> list[tuple[str, Tensor]]:
    """The report's rows: the images, the images with their hidden region, and the inpainted images."""
    pixels, hidden, inpainted = method.inpaint(images)
    shown = pixels.masked_fill(hidden, 1.0)
    return [("input", pixels), ("hidden region (white)", shown), ("inpainted", inpainted)]


_OPTIMISER = {"optimizer": "adam", "lr": AUTHORS_LR, "betas": AUTHORS_BETAS, "weight_decay": 0.0,
              "schedule": "constant", "reference_batch": AUTHORS_BATCH, "lr_scaling": "none"}  # fmt: skip

SPEC = MethodSpec(
    "Context encoder: inpaint hidden regions, against a discriminator (Pathak et al., 2016)",
    ContextEncoderSettings,
    presets={"*": {"context_encoder_discriminator": _OPTIMISER}, "digits": {"context_encoder": {"cells": 4}}},
    recipes={
        "*": Recipe(
            f"{_CODE}, train.lua (Adam, beta1 0.5, the discriminator's lr x {GENERATOR_LR_FACTOR} when both "
            f"losses are on, batch {AUTHORS_BATCH})",
            {**_OPTIMISER, "lr": GENERATOR_LR_FACTOR * AUTHORS_LR},
        ),
    },  # fmt: skip
    references={
        "*": {
            "context_encoder.region": Reference(
                "random", f"{_PAPER}, Sec. 3.3 (random regions for every feature experiment)"
            ),  # fmt: skip
            "context_encoder.share": Reference(0.25, f"{_CODE}, train_random.lua (density 0.25)"),
            "context_encoder.centre_share": Reference(0.5, f"{_CODE}, train.lua (the central 64 x 64 of 128)"),
            "context_encoder.overlap_share": Reference(AUTHORS_OVERLAP, f"{_CODE}, README (overlapPred=4 at 128)"),
            "context_encoder.overlap_weight": Reference(10.0, f"{_CODE}, train.lua (overlapL2Weight)"),
            "context_encoder.reconstruction_weight": Reference(0.999, f"{_CODE}, README (wtl2=0.999)"),
            "context_encoder.adversarial_weight": Reference(0.001, f"{_PAPER}, Sec. 3.2 (lambda_adv)"),
            "context_encoder_discriminator.lr": Reference(AUTHORS_LR, f"{_CODE}, train.lua (lr)"),
            "context_encoder_discriminator.betas": Reference(AUTHORS_BETAS, f"{_CODE}, train.lua (beta1 0.5)"),
        },
    },
    headline=("context_encoder.region", "context_encoder.share", "context_encoder.adversarial_weight"),
    terms=("loss_reconstruction", "loss_adversarial", "loss_discriminator", "discriminator_accuracy"),
    curves=(
        Curve("inpainting loss", ("loss_reconstruction",)),
        Curve("the adversarial game", ("loss_adversarial", "loss_discriminator")),
    ),
    image_rows=(
        ImageRows(
            "inpaintings",
            "Training images (top), the region hidden from the encoder (middle, white) and "
            "the trained context encoder's inpainting of it (bottom).",
            inpainting_rows,
        ),  # fmt: skip
    ),
    parts=(Part("discriminator", "context_encoder_discriminator"),),
    compare=False,
    accumulation=Accumulation.REFUSED,
    accumulation_note="its discriminator steps on every batch, between the encoder's steps",
    torchrun=Torchrun.RUNS,
    torchrun_note="each process draws its own hidden regions",
)


@register_method("context-encoder", SPEC)
class ContextEncoder(Method):
    """Inpaint hidden regions against a discriminator (Pathak et al., 2016, Sec. 3).

    Args:
        settings: the context encoder's sections.
        encoder: backbone + head (the head's output is the code).
        context: D, the images' channels, side and normalisation.
    """

    options: ContextEncoderOptions
    side: int

    def __init__(self, settings: ContextEncoderSettings, encoder: nn.Module, context: BuildContext) -> None:
        if context.image_size is None:
            raise ConfigError("method context-encoder builds its decoder for the images' side: give "
                              "BuildContext.image_size")  # fmt: skip
        super().__init__(encoder, context)
        o = self.options = settings.context_encoder
        self.side = context.image_size
        self.pixels = PixelSpace(context.mean, context.std, "context-encoder")
        self.decoder = VectorDecoder(context.embedding_dim, context.in_channels, self.side, o.decoder_width,
                                     o.start_side)  # fmt: skip
        box = REGIONS[o.region].box(self)
        seen = self.side if box is None else box[1] - box[0]
        self.discriminator = PatchDiscriminator(context.in_channels, seen, o.discriminator_width)

    def shared_modules(self) -> list[nn.Module]:
        return [self.decoder, self.discriminator]

    def part_modules(self, name: str) -> list[nn.Module]:
        return [self.discriminator]

    def _inpaint(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The hidden mask, loss weights and the decoder's image (normalised units) of a normalised batch."""
        hidden, weights = REGIONS[self.options.region].hide(self, images.shape[0], images.device)
        outputs = self.decoder(self.encode(images.masked_fill(hidden, 0.0)))  # 0: the mean colour, normalised
        return hidden, weights, outputs

    def _seen(self, images: Tensor, outputs: Tensor, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """What the discriminator sees of the real images and of the inpainted ones: the centre square of each, or
        the whole images with the hidden regions inpainted."""
        box = REGIONS[self.options.region].box(self)
        if box is None:
            return images.float(), torch.where(hidden, outputs.float(), images.float())
        a, b = box
        return images[..., a:b, a:b].float(), outputs[..., a:b, a:b].float()

    def inpaint(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """For the report: the pixels, the hidden mask, and the images with the hidden region inpainted (pixels)."""
        hidden, _, outputs = self._inpaint(images)
        pixels = self.pixels.to_pixels(images)
        made = self.pixels.to_pixels(outputs)
        return pixels, hidden.expand_as(pixels[:, :1]), torch.where(hidden, made, pixels)

    def part_step(self, name: str, batch: Batch) -> StepOutput:
        images = self.views_of(batch)
        with torch.no_grad():
            hidden, _, outputs = self._inpaint(images)
        real, made = self._seen(images, outputs, hidden)
        real_logits, made_logits = self.discriminator(real), self.discriminator(made)
        loss = discriminator_loss(real_logits, made_logits)
        accuracy = ((real_logits > 0).float().mean() + (made_logits < 0).float().mean()) / 2
        return StepOutput(loss, {"discriminator_accuracy": accuracy.detach()})

    def training_step(self, batch: Batch) -> StepOutput:
        images = self.views_of(batch)
        hidden, weights, outputs = self._inpaint(images)
        o = self.options
        reconstruction = weighted_squared_error(outputs, images, weights)
        _, made = self._seen(images, outputs, hidden)
        adversarial = generator_adversarial_loss(self.discriminator(made))
        loss = o.reconstruction_weight * reconstruction + o.adversarial_weight * adversarial
        return StepOutput(
            loss, {"loss_reconstruction": reconstruction.detach(), "loss_adversarial": adversarial.detach()}
        )


__all__ = ["REGIONS", "SPEC", "ContextEncoder", "ContextEncoderOptions", "ContextEncoderSettings", "inpainting_rows"]
