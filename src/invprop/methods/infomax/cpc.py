"""Contrastive predictive coding on images, CPC v2 (Henaff, Srinivas, De Fauw, Razavi, Doersch, Eslami & van den
Oord, 2019; the image variant of van den Oord, Li & Vinyals, 2018), as a training method: ``method: cpc``.

Each image is cut into a grid of overlapping patches (``cpc.patch_share`` of its side, every half patch:
:func:`invprop.data.patches.grid_patches`; the papers' 64-pixel patches every 32 pixels of a 256-pixel image give a
7 x 7 grid, and so do CIFAR's 8-pixel patches every 4 pixels). Each patch is augmented on its own (colour dropping,
:func:`~invprop.data.patches.drop_colour`, and a horizontal flip) and encoded by the backbone and head, each patch
alone. A context network (:class:`invprop.models.context_network.ContextNetwork`) runs over the grid of embeddings
so that its output at row i sees rows 0..i only; from it, one linear prediction per offset k in ``cpc.offsets``
must pick the patch k rows below among every patch of the batch
(:func:`invprop.core.predictive_coding.cpc_infonce_loss`), predictions and targets both projected to
``cpc.target_dim``. The offsets default to the published pseudo-code's, which scores the patch three rows below
only.

Differences from CPC v2, for small images: the backbone keeps its BatchNorm (the paper replaces it by layer norm,
because batch statistics over an image's patches leak between them); only the downward direction is predicted;
no published optimiser recipe was confirmed, so CPC takes the dataset preset's. The patch embeddings are what
``model.head`` gives; evaluation reads the backbone on whole images, as the paper's linear classification does on
the grid's pooled features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from invprop.core.predictive_coding import cpc_infonce_loss
from invprop.data.patches import drop_colour, grid_patches, resize_patches
from invprop.errors import ConfigError
from invprop.methods.method import Batch, BuildContext, Method, StepOutput
from invprop.methods.spec import Accumulation, Curve, MethodSpec, Torchrun, register_method
from invprop.models.context_network import ContextNetwork
from invprop.settings import AT_LEAST_ONE, NON_EMPTY_SHARE, Reference, setting

_V1 = "van den Oord et al. (2018), CPC"
_V2 = "Henaff et al. (2019), CPC v2"
_PSEUDO = f"{_V2}, App. A.2's pseudo-code"
#: The published pseudo-code scores the patch three rows below only.
PAPER_OFFSETS = (3,)


@dataclass
class CPCSettings:
    """The ``cpc`` section."""

    patch_share: float = setting(0.25, "a patch's side over the image's (patches overlap by half)",
                                 bounds=NON_EMPTY_SHARE)  # fmt: skip
    offsets: list[int] = setting(None, "rows below the context that are predicted, one linear prediction each",
                                 bounds=AT_LEAST_ONE, factory=lambda: list(PAPER_OFFSETS))  # fmt: skip
    target_dim: int = setting(64, "width predictions and targets are projected to", bounds=AT_LEAST_ONE)
    context_blocks: int = setting(5, "residual blocks of the context network", bounds=AT_LEAST_ONE)
    context_hidden: int = setting(256, "hidden width of the context network's blocks", bounds=AT_LEAST_ONE)
    colour_dropping: bool = setting(True, "each patch keeps one random channel, the others become uniform noise")
    flip: bool = setting(True, "each patch flipped left-right with probability 1/2")
    tile_size: int | None = setting(None, "side each patch is resized to (null: its own)", bounds=AT_LEAST_ONE)


SPEC = MethodSpec(
    "CPC v2: a context network over a grid of patch embeddings predicts the patches below (Henaff et al., 2019)",
    CPCSettings,
    section="cpc",
    section_help="contrastive predictive coding's grid, context network and predictions",
    accumulation=Accumulation.REFUSED,
    accumulation_note="every patch of the batch is a negative",
    presets={
        "*": {"model": {"head": "linear", "embedding_dim": 256}},
        # 8 x 8 digits: 4-pixel patches every 2 pixels give a 3 x 3 grid, too short for a target three rows below
        "digits": {"cpc": {"patch_share": 0.5, "offsets": [1, 2]}},
    },
    references={
        "*": {
            "cpc.patch_share": Reference(0.25, f"{_V1}, Sec. 3.2 (64-pixel patches of 256, every 32 pixels)"),
            "cpc.offsets": Reference([3], f"{_PSEUDO} (steps_to_ignore 2, steps_to_predict 3)"),
            "cpc.target_dim": Reference(64, f"{_PSEUDO} (target_dim)"),
            "cpc.context_blocks": Reference(5, f"{_PSEUDO} (the context network's residual blocks)"),
            "cpc.context_hidden": Reference(256, f"{_PSEUDO}"),
            "cpc.colour_dropping": Reference(True, f"{_V2}, Sec. 4.1 (patch-wise augmentation)"),
        },
    },
    deviations={
        "digits": {
            "cpc.patch_share": "8 x 8 digits: 4-pixel patches give a 3 x 3 grid (2-pixel ones say little)",
            "cpc.offsets": "a 3 x 3 grid has no row three below another",
        },
    },
    headline=("cpc.patch_share", "cpc.offsets", "cpc.target_dim"),
    terms=("loss_cpc",),
    curves=(Curve("CPC's InfoNCE", ("loss_cpc",)),),
    compare=False,
    torchrun=Torchrun.RUNS,
    torchrun_note="each process draws its own patch augmentations and contrasts its own patches",
)


@register_method("cpc", SPEC)
class CPC(Method):
    """Predictions of the patches below from the context above (Henaff et al., 2019, Sec. 3 and App. A.2).

    Args:
        settings: the ``cpc`` section.
        encoder: backbone + head, applied to every patch alone.
        context: D (a patch's embedding) and the process group (the context network's and the projections'
            gradients are averaged).
    """

    def __init__(self, settings: CPCSettings, encoder: nn.Module, context: BuildContext) -> None:
        super().__init__(encoder, context)
        self.options = settings
        d, t = context.embedding_dim, settings.target_dim
        self.context_network = ContextNetwork(d, settings.context_hidden, settings.context_blocks)
        self.target_projection = nn.Conv2d(d, t, 1)
        self.predictions = nn.ModuleList([nn.Conv2d(d, t, 1) for _ in settings.offsets])

    def shared_modules(self) -> list[nn.Module]:
        return [self.context_network, self.target_projection, self.predictions]

    def patch_grid(self, images: Tensor) -> Tensor:
        """The overlapping patches of each image, augmented each on its own: (B, R, C, ch, p, p)."""
        o = self.options
        side = max(2, round(o.patch_share * min(images.shape[-2:])))
        stride = max(1, side // 2)
        grid = grid_patches(images, (side, side), (stride, stride))
        b, rows, cols = grid.shape[:3]
        flat = grid.reshape(b * rows * cols, *grid.shape[3:])
        if o.colour_dropping:
            flat = drop_colour(flat)
        if o.flip:
            flipped = torch.rand(flat.shape[0]).to(flat.device) < 0.5
            flat = torch.where(flipped.view(-1, 1, 1, 1), flat.flip(-1), flat)
        flat = resize_patches(flat, o.tile_size)
        return flat.reshape(b, rows, cols, *flat.shape[1:])

    def training_step(self, batch: Batch) -> StepOutput:
        grid = self.patch_grid(self.views_of(batch))
        b, rows, cols = grid.shape[:3]
        if max(self.options.offsets) >= rows:
            raise ConfigError(f"cpc.offsets={self.options.offsets} reach beyond the {rows} rows of patches: lower "
                             "them or cpc.patch_share")  # fmt: skip
        z = self.encode(grid.flatten(0, 2)).reshape(b, rows, cols, -1).permute(0, 3, 1, 2)  # (B, D, R, C)
        context, targets = self.context_network(z), self.target_projection(z)
        losses = [cpc_infonce_loss(predict(context), targets, k)
                  for predict, k in zip(self.predictions, self.options.offsets, strict=True)]  # fmt: skip
        loss = torch.stack(losses).mean()
        return StepOutput(loss, {"loss_cpc": loss.detach()})


__all__ = ["CPC", "CPCSettings", "PAPER_OFFSETS", "SPEC"]
