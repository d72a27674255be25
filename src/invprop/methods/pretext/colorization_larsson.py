"""Colorization as a proxy task (Larsson, Maire & Shakhnarovich, CVPR 2017) as a training method:
``method: colorization-larsson``.

Each training image is made grey -- the mean of R, G and B in every channel, as the authors' code does, normalised
as the colour images are -- and encoded; at ``locations`` pixels per image, drawn at random away from a border of
``edge`` pixels, a hypercolumn (:mod:`invprop.models.hypercolumn`: the backbone's stage maps sampled bilinearly at
the pixel, beside the head's embedding, as the authors include fc7) goes through a fully connected layer, ReLU and
dropout to two 32-way classifiers: the pixel's hue and its chroma (:func:`invprop.core.colour_space.hue_chroma`).
The loss is the chroma's cross-entropy plus 5 x the pixel's chroma x the hue's
(:func:`invprop.core.pretext_losses.hue_chroma_loss`): a grey pixel has no hue. The backbone and head are what kNN,
the linear probe and export use. Colour images only.

Differences from the paper: the backbone is any of this library's (the paper: AlexNet, VGG-16, ResNet-152); the
authors' head weight decay of 1e-6 is left to the run's optimiser; no optimiser recipe of theirs was found (the
repository has no solver file), so the method takes the dataset preset's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from invprop.core.colour_space import hue_chroma, hue_chroma_to_rgb
from invprop.core.pretext_losses import hue_chroma_loss
from invprop.errors import ConfigError
from invprop.methods.method import Batch, BuildContext, Method, StepOutput
from invprop.methods.pixels import PixelSpace
from invprop.methods.spec import Accumulation, Curve, ImageRows, MethodSpec, Torchrun, register_method
from invprop.models.feature_maps import map_backbone
from invprop.models.hypercolumn import HypercolumnClassifier, sample_maps
from invprop.settings import AT_LEAST_ONE, NON_NEGATIVE, UNIT_INTERVAL, Reference, setting

_CODE = "Larsson et al. (2017), the authors' gustavla/self-supervision, selfsup/multi/methods/colorize_hypercolumn.py"


@dataclass
class LarssonSettings:
    """The ``colorization_larsson`` section."""

    locations: int = setting(256, "pixels per image whose colour is predicted", bounds=AT_LEAST_ONE)
    edge: int = setting(32, "pixels along each border where no location is drawn", bounds=NON_NEGATIVE)
    bins: int = setting(32, "the bins of hue and of chroma", bounds=AT_LEAST_ONE)
    hue_weight: float = setting(5.0, "the hue term's weight (times each pixel's chroma)", bounds=NON_NEGATIVE)
    hidden: int = setting(1024, "units of the hypercolumn's fully connected layer", bounds=AT_LEAST_ONE)
    dropout: float = setting(0.5, "dropout after it", bounds=UNIT_INTERVAL)
    stages: int | None = setting(None, "the backbone's last stages in the hypercolumn (null: all)", bounds=AT_LEAST_ONE)


def colourisation_rows(method: "ColorizationLarsson", images: Tensor) -> list[tuple[str, Tensor]]:
    """The report's rows: the images, their grey input, and the colours predicted at every pixel (the expected
    chroma and the circular mean of the hue over their bins, on the grey value)."""
    pixels = method.pixels.to_pixels(images)
    side = images.shape[-1]
    grey = pixels.mean(dim=1)
    centres = (torch.arange(side, device=images.device) * 2 + 1) / side - 1
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    points = torch.stack([x, y], dim=-1).view(1, -1, 2).expand(images.shape[0], -1, -1)
    chroma_logits, hue_logits = method.scores(images, points)
    centres_q = (torch.arange(method.options.bins, device=images.device) + 0.5) / method.options.bins
    chroma = (chroma_logits.float().softmax(-1) * centres_q).sum(-1).view(-1, side, side)
    angle = 2 * torch.pi * centres_q
    p = hue_logits.float().softmax(-1)
    hue = (torch.atan2((p * angle.sin()).sum(-1), (p * angle.cos()).sum(-1)) / (2 * torch.pi)) % 1.0
    made = hue_chroma_to_rgb(hue.view(-1, side, side), chroma, grey)
    return [("input", pixels), ("grey input", grey.unsqueeze(1)), ("colours predicted", made)]


SPEC = MethodSpec(
    "Colorization as a proxy task: hue and chroma of sampled pixels from hypercolumns of a grey image "
    "(Larsson et al., 2017)",
    LarssonSettings,
    section="colorization_larsson",
    section_help="Larsson et al.'s hypercolumn, locations and colour bins",
    presets={
        "digits": {"colorization_larsson": {"locations": 16, "edge": 1}},
        "cifar10": {"colorization_larsson": {"locations": 64, "edge": 4}},
    },
    references={
        "*": {
            "colorization_larsson.locations": Reference(256, f"{_CODE} (256 locations per image)"),
            "colorization_larsson.edge": Reference(32, f"{_CODE} (edge_buffer 32)"),
            "colorization_larsson.bins": Reference(32, f"{_CODE} (bins = 32)"),
            "colorization_larsson.hue_weight": Reference(5.0, f"{_CODE} (5 x chroma x the hue's cross-entropy)"),
            "colorization_larsson.hidden": Reference(1024, f"{_CODE} (fc 1024)"),
            "colorization_larsson.dropout": Reference(0.5, f"{_CODE} (dropout 0.5)"),
        },
    },
    deviations={
        "digits": {
            "colorization_larsson.locations": "an 8 x 8 image has 64 pixels: 16 of its centre 6 x 6",
            "colorization_larsson.edge": "a 32-pixel border leaves no pixel of an 8 x 8 image: 1 pixel",
        },
        "cifar10": {
            "colorization_larsson.locations": "a 32 x 32 image has 1,024 pixels: 64 of its centre 24 x 24",
            "colorization_larsson.edge": "a 32-pixel border leaves no pixel of a 32 x 32 image: 4 pixels",
        },
    },
    headline=("colorization_larsson.locations", "colorization_larsson.bins"),
    terms=("loss_hue_chroma",),
    curves=(Curve("hue and chroma loss", ("loss_hue_chroma",)),),
    image_rows=(
        ImageRows(
            "colourisations",
            "Training images (top), the grey images the encoder sees (middle) and the colours "
            "predicted at every pixel (bottom: the expected chroma and hue over the bins, on the grey value).",
            colourisation_rows,
        ),  # fmt: skip
    ),
    compare=False,
    colour_only=True,
    accumulation=Accumulation.RUNS,
    accumulation_note="each chunk draws its own locations",
    torchrun=Torchrun.RUNS,
    torchrun_note="each process draws its own locations",
)


@register_method("colorization-larsson", SPEC)
class ColorizationLarsson(Method):
    """Predict the hue and chroma of sampled pixels of a grey image from hypercolumns (Larsson et al., 2017).

    Args:
        settings: the ``colorization_larsson`` section.
        encoder: backbone (any that gives feature maps) + head.
        context: D, the images' side and normalisation (3 channels).
    """

    def __init__(self, settings: LarssonSettings, encoder: nn.Module, context: BuildContext) -> None:
        if len(context.mean) != 3:
            raise ConfigError("method colorization-larsson needs the three channels' normalisation (BuildContext.mean "
                              "and std)")  # fmt: skip
        side = context.image_size
        if side is not None and 2 * settings.edge >= side:
            raise ConfigError(f"colorization_larsson.edge={settings.edge} leaves no pixel of {side} x {side} images: "
                              f"give an edge below {(side + 1) // 2}")  # fmt: skip
        channels = map_backbone(getattr(encoder, "backbone", encoder)).stage_channels
        self.stages = settings.stages or len(channels)
        if self.stages > len(channels):
            raise ConfigError(f"colorization_larsson.stages={self.stages}, but the backbone has {len(channels)} stages: "
                              f"give 1 to {len(channels)} (or null: all)")  # fmt: skip
        super().__init__(encoder, context)
        self.options = settings
        self.pixels = PixelSpace(context.mean, context.std, "colorization-larsson")
        self.classifier = HypercolumnClassifier(sum(channels[-self.stages :]), context.embedding_dim, settings.hidden,
                                                settings.dropout, (settings.bins, settings.bins))  # fmt: skip

    def shared_modules(self) -> list[nn.Module]:
        return [self.classifier]

    def grey(self, images: Tensor) -> Tensor:
        """The grey input: the mean of R, G and B in every channel, normalised."""
        pixels = self.pixels.to_pixels(images)
        return self.pixels.normalise(pixels.mean(dim=1, keepdim=True).expand_as(pixels)).to(images.dtype)

    def draw_points(self, batch: int, side: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """``locations`` pixels per image away from the border (torch's global generator): their (row, column)
        (B, P, 2) int64 and their centres (B, P, 2) as (x, y) in [-1, 1]."""
        o = self.options
        if 2 * o.edge >= side:
            raise ConfigError(f"colorization_larsson.edge={o.edge} leaves no pixel of {side} x {side} images")
        pixels = torch.randint(o.edge, side - o.edge, (batch, o.locations, 2), device=device)
        centres = (pixels.flip(-1).float() * 2 + 1) / side - 1
        return pixels, centres

    def scores(self, images: Tensor, points: Tensor) -> list[Tensor]:
        """The chroma and hue scores (B, P, bins) at ``points`` ((B, P, 2), x and y in [-1, 1]) of the grey images."""
        out = self.encode_maps(self.grey(images), self.stages)
        return self.classifier(sample_maps(out.maps.stages, points), out.embedding)

    def training_step(self, batch: Batch) -> StepOutput:
        images = self.views_of(batch)
        b, side = images.shape[0], images.shape[-1]
        at, points = self.draw_points(b, side, images.device)
        chroma_logits, hue_logits = self.scores(images, points)
        with torch.no_grad():
            rows = torch.arange(b, device=images.device).unsqueeze(1)
            colours = self.pixels.to_pixels(images)[rows, :, at[..., 0], at[..., 1]]  # (B, P, 3)
            hue, chroma = hue_chroma(colours.reshape(-1, 3))
            q = self.options.bins
            hue_bins, chroma_bins = (hue * q).long().clamp(0, q - 1), (chroma * q).long().clamp(0, q - 1)
        loss = hue_chroma_loss(chroma_logits.reshape(-1, q), chroma_bins, hue_logits.reshape(-1, q), hue_bins, chroma,
                               self.options.hue_weight)  # fmt: skip
        return StepOutput(loss, {"loss_hue_chroma": loss.detach()})


__all__ = ["SPEC", "ColorizationLarsson", "LarssonSettings", "colourisation_rows"]
