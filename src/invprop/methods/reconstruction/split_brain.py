"""Split-brain autoencoders (Zhang, Isola & Efros, CVPR 2017) as a training method: ``method: split-brain``.

The encoder is two half-networks (``model.colour_split=lab``: :class:`invprop.models.colour_split.
ColourSplitBackbone`), one seeing the CIE Lab lightness L of each image, the other its colour channels ab, each with
its own head. A decoder from the L half's embedding predicts the ab colours, quantised to the 313 in-gamut bins of
Zhang et al. (2016) and soft-encoded as colorization does; a decoder from the ab half's embedding predicts L,
quantised to ``split_brain.l_bins`` bins; each is a classification (:func:`invprop.core.pretext_losses.
split_brain_loss`, the paper's cross-channel classification loss) at ``1 / downsample`` of the image's side. The
representation is the two halves' features side by side (kNN, the linear probe and export see one vector). Colour
images only.

Differences from the paper: the halves are two of this library's backbones (the paper splits AlexNet's channels
in two) and the decoders start from each half's embedding (the paper's network is fully convolutional); the
number of L bins and the output side are not confirmed from the paper (the released code has no training files), so
no setting claims a published value.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invprop.core.colour_space import lab_to_rgb, rgb_to_lab
from invprop.core.pretext_losses import soft_cross_entropy, split_brain_loss
from invprop.data.colour import ab_bins, soft_encode
from invprop.errors import ConfigError
from invprop.methods.method import Batch, BuildContext, Method, StepOutput
from invprop.methods.pixels import PixelSpace
from invprop.methods.spec import Curve, Floor, ImageRows, MethodSpec, SmokeRun, Torchrun, register_method
from invprop.models.colour_split import COLOUR_SPLITS, ColourSplitBackbone
from invprop.models.decoders import VectorDecoder
from invprop.settings import AT_LEAST_ONE, setting

#: L's range in CIE Lab.
L_MAX = 100.0
#: The colour split whose groups are L and ab, in that order.
SPLIT = "lab"


@dataclass
class SplitBrainSettings:
    """The ``split_brain`` section."""

    l_bins: int = setting(50, "the bins L is quantised into, over [0, 100]", bounds=AT_LEAST_ONE)
    downsample: int = setting(4, "the predictions' side is the image side divided by this", bounds=AT_LEAST_ONE)
    decoder_width: int = setting(128, "channels of each decoder's first map", bounds=AT_LEAST_ONE)
    start_side: int = setting(2, "side of each decoder's first map, from the embedding", bounds=AT_LEAST_ONE)


def cross_channel_rows(method: "SplitBrain", images: Tensor) -> list[tuple[str, Tensor]]:
    """The report's rows: the images; their L with the colours the L half predicts; their ab with the lightness the
    ab half predicts (predictions at their side, upsampled)."""
    pixels, lab, ab_logits, l_logits = method.predict(images)
    side = lab.shape[-1]
    ab = F.interpolate(method.expected_ab(ab_logits), size=(side, side), mode="bilinear", align_corners=False)
    lightness = F.interpolate(method.expected_l(l_logits), size=(side, side), mode="bilinear", align_corners=False)
    grey = lab[:, :1] / L_MAX
    return [
        ("input", pixels),
        ("L (the L half's input)", grey),
        ("colours predicted from L", lab_to_rgb(torch.cat([lab[:, :1], ab], dim=1))),
        ("lightness predicted from ab", lab_to_rgb(torch.cat([lightness, lab[:, 1:]], dim=1))),
    ]


SPEC = MethodSpec(
    "Split-brain autoencoder: two halves predict each other's colour channels (Zhang et al., 2017)",
    SplitBrainSettings,
    section="split_brain",
    section_help="split-brain's quantisation and decoders",
    presets={"*": {"model": {"colour_split": SPLIT}}},
    headline=("split_brain.l_bins", "split_brain.downsample"),
    terms=("loss_l_to_ab", "loss_ab_to_l"),
    curves=(Curve("cross-channel losses", ("loss_l_to_ab", "loss_ab_to_l")),),
    image_rows=(
        ImageRows(
            "cross-channel predictions",
            "Training images (top row), their lightness L, the colours the L "
            "half predicts on that L (expected ab over the bins), and the lightness the ab half predicts under "
            "the true colours.",
            cross_channel_rows,
        ),  # fmt: skip
    ),
    compare=False,
    colour_only=True,
    colour_split=True,
    smoke=SmokeRun(
        metric="knn_backbone_top1",
        floor=Floor.FINITE,
        why="the test's colour images are digits tinted with a random colour per image: L and ab each hold the digit's "
        "shape, and two untrained half-networks side by side already give a high kNN; a short run checks the terms and "
        "finite losses",
    ),
    torchrun=Torchrun.EXACT,
)


@register_method("split-brain", SPEC)
class SplitBrain(Method):
    """Each half predicts the other's channels (Zhang et al., 2017, Sec. 3).

    Args:
        settings: the ``split_brain`` section.
        encoder: an encoder whose backbone is a ``lab`` :class:`ColourSplitBackbone`; its head gives the L half's
            and the ab half's D-wide embeddings side by side.
        context: D, the images' side and normalisation (3 channels).
    """

    bins: Tensor
    l_centres: Tensor

    def __init__(self, settings: SplitBrainSettings, encoder: nn.Module, context: BuildContext) -> None:
        backbone = getattr(encoder, "backbone", None)
        if not isinstance(backbone, ColourSplitBackbone) or backbone.split is not COLOUR_SPLITS.get(SPLIT):
            raise ConfigError("method split-brain predicts ab from L and L from ab: set model.colour_split=lab")
        if context.image_size is None:
            raise ConfigError("method split-brain builds its decoders for the images' side: give "
                              "BuildContext.image_size")  # fmt: skip
        super().__init__(encoder, context)
        self.options = settings
        self.embedding_dim = context.embedding_dim
        self.pixels = PixelSpace(context.mean, context.std, "split-brain")
        self.side = max(1, context.image_size // settings.downsample)
        bins = ab_bins()
        self.register_buffer("bins", bins, persistent=False)
        width = L_MAX / settings.l_bins
        self.register_buffer("l_centres", (torch.arange(settings.l_bins) + 0.5) * width, persistent=False)
        d, w, start = context.embedding_dim, settings.decoder_width, min(settings.start_side, self.side)
        self.l_to_ab = VectorDecoder(d, bins.shape[0], self.side, w, start)
        self.ab_to_l = VectorDecoder(d, settings.l_bins, self.side, w, start)

    def shared_modules(self) -> list[nn.Module]:
        return [self.l_to_ab, self.ab_to_l]

    def predict(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The pixels, the Lab images, and each half's scores: ab classes from L, L classes from ab."""
        pixels = self.pixels.to_pixels(images)
        lab = rgb_to_lab(pixels)
        l_half, ab_half = self.encode(images).split(self.embedding_dim, dim=1)
        return pixels, lab, self.l_to_ab(l_half), self.ab_to_l(ab_half)

    def targets(self, lab: Tensor) -> tuple[Tensor, Tensor]:
        """The soft-encoded ab targets and the one-hot L targets at the predictions' side."""
        small = F.adaptive_avg_pool2d(lab, self.side)
        ab = soft_encode(small[:, 1:], self.bins)
        bins = (small[:, 0] / L_MAX * self.options.l_bins).long().clamp(0, self.options.l_bins - 1)
        return ab, F.one_hot(bins, self.options.l_bins).permute(0, 3, 1, 2).float()

    def expected_ab(self, logits: Tensor) -> Tensor:
        """(B, 2, h, w) the ab expected under the predicted distribution."""
        return torch.einsum("bqhw,qc->bchw", logits.float().softmax(dim=1), self.bins)

    def expected_l(self, logits: Tensor) -> Tensor:
        """(B, 1, h, w) the L expected under the predicted distribution."""
        return torch.einsum("bqhw,q->bhw", logits.float().softmax(dim=1), self.l_centres).unsqueeze(1)

    def training_step(self, batch: Batch) -> StepOutput:
        _, lab, ab_logits, l_logits = self.predict(self.views_of(batch))
        with torch.no_grad():
            ab_targets, l_targets = self.targets(lab)
        loss = split_brain_loss(ab_logits, ab_targets, l_logits, l_targets)
        with torch.no_grad():
            from_l = soft_cross_entropy(ab_logits, ab_targets)
        return StepOutput(loss, {"loss_l_to_ab": from_l, "loss_ab_to_l": loss.detach() - from_l})


__all__ = ["SPEC", "SplitBrain", "SplitBrainSettings", "cross_channel_rows"]
