"""Context prediction, the relative position of two patches (Doersch, Gupta & Efros, ICCV 2015), as a training
method: ``method: context-prediction``.

Each image is cut into a 3 x 3 grid of cells (:func:`invprop.data.patches.grid_cells`); each cell gives a patch of
``context_prediction.patch_share`` of its side, centred and jittered by up to ``context_prediction.jitter_share`` of
the patch's side (:func:`~invprop.data.patches.windows_within_cells`), which leaves a gap between patches -- the
paper's 96-pixel patches, 48-pixel gaps and 7-pixel jitter, in shares of the image. Every patch goes through the
same encoder (backbone + ``model.head``: the paper's shared trunk up to fc6); the centre patch's embedding is
concatenated with each of its eight neighbours' and an MLP (the paper's fc7, fc8, fc9) says where the neighbour
lies: eight classes, a cross-entropy over the 8B pairs of a batch (every neighbour paired with the centre, as the
OpenSelfSup re-implementation does; the authors' code pairs patches of sampled grids). Against shortcuts, as in the
paper: the gap and the jitter (edges do not continue from patch to patch), colour dropping (each patch keeps one
random channel, the others become noise: chromatic aberration does not say where a patch lies;
:func:`~invprop.data.patches.drop_colour`), and each patch normalised on its own. Patches are resized to
``context_prediction.tile_size`` (default: the image side, so any backbone accepts them). Not here: the paper's
random downsampling of patches to as few as 100 pixels, larger than a CIFAR patch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invprop.data.patches import drop_colour, grid_cells, normalise_tiles, resize_patches, windows_within_cells
from invprop.methods.method import Batch, BuildContext, Method, StepOutput
from invprop.methods.recipes import paper_sgd
from invprop.methods.spec import Accumulation, Curve, MethodSpec, Torchrun, register_method
from invprop.settings import AT_LEAST_ONE, FRACTION, NON_EMPTY_SHARE, Reference, setting

_PAPER = "Doersch et al. (2015)"
_CODE = "Doersch et al. (2015), the authors' cdoersch/deepcontext train.py"
_OPENSELFSUP = "OpenSelfSup's relative_loc (WXinlong/DenseCL configs/selfsup/relative_loc/r50.py)"
#: The grid: a centre cell and its eight neighbours, numbered row by row.
GRID = 3
CENTRE = GRID * GRID // 2
NEIGHBOURS = tuple(k for k in range(GRID * GRID) if k != CENTRE)
#: The paper's patch, gap and jitter in pixels (Sec. 3; the authors' train.py): 96-pixel patches in 144-pixel cells.
PATCH, GAP, JITTER = 96, 48, 7


@dataclass
class ContextPredictionSettings:
    """The ``context_prediction`` section."""

    patch_share: float = setting(PATCH / (PATCH + GAP), "a patch's side over its cell's (the rest is the gap)",
                                 bounds=NON_EMPTY_SHARE)  # fmt: skip
    jitter_share: float = setting(
        JITTER / PATCH, "how far a patch moves from its cell's centre, each way, over the patch's side (rounded to "
        "pixels)", bounds=FRACTION,
    )  # fmt: skip
    colour_dropping: bool = setting(True, "each patch keeps one random channel, the others become uniform noise")
    normalise_patches: bool = setting(True, "normalise each patch's channels to mean 0, std 1 on its own")
    tile_size: int | None = setting(None, "side each patch is resized to (null: the image side)", bounds=AT_LEAST_ONE)
    hidden_dim: int = setting(1024, "width of the pair classifier's two hidden layers (the paper's fc7, fc8: 4096)",
                              bounds=AT_LEAST_ONE)  # fmt: skip


SPEC = MethodSpec(
    "Context prediction: where a patch lies relative to the centre patch, eight classes (Doersch et al., 2015)",
    ContextPredictionSettings,
    section="context_prediction",
    section_help="the relative position of patches",
    accumulation=Accumulation.RUNS,
    accumulation_note="each batch draws its own jitter and colour dropping",
    recipes={
        "*": paper_sgd(
            f"{_OPENSELFSUP}: SGD 0.2 at 512 images, momentum 0.9, wd 1e-4, x0.1 at 30 and 50 of 70 epochs (the "
            "authors' own, lr 1e-5 on a loss summed over pairs without momentum, is for a million iterations)",
            lr=0.2,
            weight_decay=1e-4,
            reference_batch=512,
            schedule="step",
            milestone_shares=[30 / 70, 50 / 70],
        ),
    },  # fmt: skip
    presets={
        "*": {"model": {"head": "mlp_bn"}},
        # CIFAR's patches are 7 pixels: resized to 16 as the jigsaw's tiles, not to 32 (4x the pixels, no detail)
        "cifar10": {"context_prediction": {"tile_size": 16}},
        # 8 x 8 digits give 2 x 2 cells: no room for a gap or jitter, and a 1-pixel patch normalised is 0
        "digits": {"context_prediction": {"patch_share": 1.0, "jitter_share": 0.0, "normalise_patches": False}},
    },
    references={
        "*": {
            "context_prediction.patch_share": Reference(PATCH / (PATCH + GAP), f"{_CODE} (96-pixel patches, gap 48)"),
            "context_prediction.jitter_share": Reference(JITTER / PATCH, f"{_CODE} (jitter up to 7 pixels)"),
            "context_prediction.colour_dropping": Reference(True, f"{_PAPER}, Sec. 3.1; {_CODE}"),
            "context_prediction.hidden_dim": Reference(4096, f"{_CODE} (fc7, fc8)"),
        },
    },
    deviations={
        "*": {"context_prediction.hidden_dim": "1024, the jigsaw classifier's width on small images"},
        "digits": {
            "context_prediction.patch_share": "8 x 8 digits give 2 x 2 cells, no room for a gap: whole cells",
            "context_prediction.jitter_share": "whole cells cannot move",
        },
    },
    headline=("context_prediction.patch_share", "context_prediction.jitter_share"),
    terms=("loss_position", "position_accuracy"),
    curves=(Curve("position cross-entropy", ("loss_position",)),),
    compare=False,
    torchrun=Torchrun.RUNS,
    torchrun_note="each process draws its own jitter and colour dropping",
)


@register_method("context-prediction", SPEC)
class ContextPrediction(Method):
    """Relative-position classification of patch pairs (Doersch et al., 2015, Sec. 3).

    Args:
        settings: the ``context_prediction`` section.
        encoder: backbone + head, applied to every patch.
        context: D (a patch's embedding) and the process group (the classifier's gradients are averaged).
    """

    def __init__(self, settings: ContextPredictionSettings, encoder: nn.Module, context: BuildContext) -> None:
        super().__init__(encoder, context)
        self.options = settings
        width, hidden = 2 * context.embedding_dim, settings.hidden_dim
        self.classifier = nn.Sequential(
            nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, len(NEIGHBOURS)),
        )  # fmt: skip

    def shared_modules(self) -> list[nn.Module]:
        return [self.classifier]

    def patches(self, images: Tensor) -> Tensor:
        """The nine patches of each image, image-major ((B x 9, C, t, t)), with the shortcut defences applied."""
        o = self.options
        cells = grid_cells(images, GRID)
        b, k, c, h, w = cells.shape
        patch_side = max(1, round(o.patch_share * min(h, w)))
        found = windows_within_cells(cells.reshape(b * k, c, h, w), o.patch_share, round(o.jitter_share * patch_side))
        if o.colour_dropping:
            found = drop_colour(found)
        if o.normalise_patches:
            found = normalise_tiles(found)
        return resize_patches(found, o.tile_size or images.shape[-1])

    def training_step(self, batch: Batch) -> StepOutput:
        images = self.views_of(batch)
        b = images.shape[0]
        embeddings = self.encode(self.patches(images)).reshape(b, GRID * GRID, -1)
        centre = embeddings[:, CENTRE : CENTRE + 1].expand(-1, len(NEIGHBOURS), -1)
        pairs = torch.cat([centre, embeddings[:, list(NEIGHBOURS)]], dim=2).reshape(b * len(NEIGHBOURS), -1)
        labels = torch.arange(len(NEIGHBOURS), device=images.device).repeat(b)
        logits = self.classifier(pairs)
        loss = F.cross_entropy(logits.float(), labels)
        accuracy = (logits.detach().argmax(dim=1) == labels).float().mean()
        return StepOutput(loss, {"loss_position": loss.detach(), "position_accuracy": accuracy})


__all__ = ["CENTRE", "NEIGHBOURS", "SPEC", "ContextPrediction", "ContextPredictionSettings"]
