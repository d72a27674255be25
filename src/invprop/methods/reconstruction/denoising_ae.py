"""Denoising autoencoders (Vincent, Larochelle, Bengio & Manzagol, ICML 2008) as a training method:
``method: denoising-ae``.

Each training image, in pixels in [0, 1], is corrupted -- masking noise, the paper's: a fixed share nu of its
components set to 0 (:func:`invprop.data.masks.masking_noise`); or additive Gaussian noise -- then normalised and
encoded (backbone + ``model.head``: the head's output is the code y); a decoder (:class:`invprop.models.decoders.
VectorDecoder`: a linear layer to a small map, then upsampling blocks) maps the code back to an image, trained to
give the clean one: the reconstruction cross-entropy on pixels in [0, 1], the paper's loss for such inputs
(:func:`invprop.core.reconstruction_losses.reconstruction_cross_entropy`), or the squared error. The backbone and
head are what kNN, the linear probe and export use; the decoder is only for training.

Differences from the paper: the encoder is a convolutional backbone, not one sigmoid layer with tied decoder
weights, and it is trained end to end, not stacked greedily layer by layer; the paper's nu was picked per dataset
among 10, 25 and 40% on validation data (Table 1; not confirmed from the text), here 25% by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from invprop.core.reconstruction_losses import reconstruction_cross_entropy
from invprop.data.masks import masking_noise
from invprop.errors import ConfigError
from invprop.methods.method import Batch, BuildContext, Method, StepOutput
from invprop.methods.pixels import PixelSpace
from invprop.methods.spec import Accumulation, Curve, ImageRows, MethodSpec, SmokeRun, Torchrun, register_method
from invprop.models.decoders import VectorDecoder
from invprop.settings import AT_LEAST_ONE, NON_NEGATIVE, Reference, setting

_PAPER = "Vincent et al. (2008)"


def _masking(pixels: Tensor, level: float) -> Tensor:
    return pixels.masked_fill(masking_noise(tuple(pixels.shape), level, pixels.device), 0.0)


def _gaussian(pixels: Tensor, level: float) -> Tensor:
    return pixels + level * torch.randn_like(pixels)


#: The corruptions q_D: pixels in [0, 1] and the noise level -> the corrupted pixels.
CORRUPTIONS: dict[str, Callable[[Tensor, float], Tensor]] = {"masking": _masking, "gaussian": _gaussian}


@dataclass(frozen=True)
class ReconstructionLoss:
    """A reconstruction loss: ``loss(outputs, clean pixels)`` and the image the decoder's outputs stand for."""

    loss: Callable[[Tensor, Tensor], Tensor]
    image: Callable[[Tensor], Tensor]


LOSSES: dict[str, ReconstructionLoss] = {
    "cross_entropy": ReconstructionLoss(reconstruction_cross_entropy, torch.sigmoid),
    "squared": ReconstructionLoss(
        lambda out, clean: (out.float() - clean).square().mean(), lambda out: out.clamp(0, 1)
    ),
}


@dataclass
class DenoisingSettings:
    """The ``denoising_ae`` section."""

    corruption: str = setting("masking", "masking (a share of each image's components set to 0, the paper's) or "
                              "gaussian (additive noise)", choices=CORRUPTIONS)  # fmt: skip
    noise: float = setting(0.25, "masking: the share nu of each image's components destroyed (below 1); gaussian: the "
                           "noise's std in pixel units", bounds=NON_NEGATIVE)  # fmt: skip
    loss: str = setting("cross_entropy", "cross_entropy (pixels in [0, 1] as probabilities, the paper's) or squared",
                        choices=LOSSES)  # fmt: skip
    decoder_width: int = setting(128, "channels of the decoder's first map", bounds=AT_LEAST_ONE)
    start_side: int = setting(4, "side of the decoder's first map, from the code", bounds=AT_LEAST_ONE)


def reconstruction_rows(method: "DenoisingAutoencoder", images: Tensor) -> list[tuple[str, Tensor]]:
    """The report's rows: the images, their corrupted copies and the reconstructions, in pixels."""
    clean, corrupted, outputs = method.reconstruct(images)
    return [("input", clean), ("corrupted", corrupted.clamp(0, 1)), ("reconstruction", method.output_image(outputs))]


SPEC = MethodSpec(
    "Denoising autoencoder: reconstruct the clean image from a corrupted copy (Vincent et al., 2008)",
    DenoisingSettings,
    section="denoising_ae",
    section_help="the denoising autoencoder's corruption, loss and decoder",
    references={
        "*": {
            "denoising_ae.corruption": Reference("masking", f"{_PAPER}, Sec. 2.3 (masking noise)"),
            "denoising_ae.loss": Reference("cross_entropy", f"{_PAPER}, Sec. 2.2 (L_H for inputs in [0, 1])"),
        },
    },
    headline=("denoising_ae.corruption", "denoising_ae.noise", "denoising_ae.loss"),
    terms=("loss_reconstruction",),
    curves=(Curve("reconstruction loss", ("loss_reconstruction",)),),
    image_rows=(
        ImageRows(
            "reconstructions",
            "Training images (top), their corrupted copies (middle) and the trained "
            "autoencoder's reconstructions (bottom).",
            reconstruction_rows,
        ),  # fmt: skip
    ),
    compare=False,
    smoke=SmokeRun(metric="knn_backbone_top1"),
    accumulation=Accumulation.RUNS,
    accumulation_note="each chunk draws its own noise",
    torchrun=Torchrun.RUNS,
    torchrun_note="each process draws its own noise",
)


@register_method("denoising-ae", SPEC)
class DenoisingAutoencoder(Method):
    """Reconstruct each image from a corrupted copy (Vincent et al., 2008, Sec. 2.3).

    Args:
        settings: the ``denoising_ae`` section.
        encoder: backbone + head (the head's output is the code).
        context: D, the images' channels, side and normalisation.
    """

    def __init__(self, settings: DenoisingSettings, encoder: nn.Module, context: BuildContext) -> None:
        if context.image_size is None:
            raise ConfigError(
                "method denoising-ae builds its decoder for the images' side: give BuildContext.image_size"
            )
        if settings.corruption == "masking" and settings.noise >= 1:
            raise ConfigError(f"denoising_ae.noise={settings.noise} destroys every component: give a share below 1")
        super().__init__(encoder, context)
        self.options = settings
        self.pixels = PixelSpace(context.mean, context.std, "denoising-ae")
        self.decoder = VectorDecoder(context.embedding_dim, context.in_channels, context.image_size,
                                     settings.decoder_width, settings.start_side)  # fmt: skip

    def shared_modules(self) -> list[nn.Module]:
        return [self.decoder]

    def reconstruct(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The clean pixels, the corrupted pixels and the decoder's outputs for a normalised batch."""
        clean = self.pixels.to_pixels(images)
        corrupted = CORRUPTIONS[self.options.corruption](clean, self.options.noise)
        outputs = self.decoder(self.encode(self.pixels.normalise(corrupted).to(images.dtype)))
        return clean, corrupted, outputs

    def output_image(self, outputs: Tensor) -> Tensor:
        """The decoder's outputs as pixels in [0, 1]."""
        return LOSSES[self.options.loss].image(outputs.float())

    def training_step(self, batch: Batch) -> StepOutput:
        clean, _, outputs = self.reconstruct(self.views_of(batch))
        loss = LOSSES[self.options.loss].loss(outputs, clean)
        return StepOutput(loss, {"loss_reconstruction": loss.detach()})


__all__ = ["CORRUPTIONS", "LOSSES", "SPEC", "DenoisingAutoencoder", "DenoisingSettings", "reconstruction_rows"]
