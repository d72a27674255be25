"""The jigsaw puzzle (Noroozi & Favaro, 2016) as a training method: ``method: jigsaw``.

Each image is cut into a ``jigsaw.grid`` x ``jigsaw.grid`` grid; its tiles are shuffled by one permutation of a
fixed set of ``jigsaw.permutations`` chosen far apart in Hamming distance (:func:`invprop.data.pretext.permutation_set`),
and the network predicts which. Every tile goes through the same encoder (backbone + ``model.head``: the paper's
shared tile network up to fc6); the tiles' embeddings are concatenated in their shuffled order and classified by
an MLP (the paper's fc7 and fc8). Against shortcuts, as in the paper, each tile is a window of ``jigsaw.tile_share``
of its cell's side at a random place in the cell (a gap between tiles, and jitter), and each tile is normalised on
its own (``jigsaw.normalise_tiles``). Tiles are resized to ``jigsaw.tile_size`` (default the image side, so any
backbone accepts them); on 8x8 digits a 3 x 3 grid gives 2-pixel cells, too small for a gap, blown up
(docs/results.md reports what that gives).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invprop.data.jigsaw import jigsaw_tiles
from invprop.data.pretext import permutation_set
from invprop.methods.method import Batch, BuildContext, Method, StepOutput
from invprop.methods.recipes import paper_sgd
from invprop.methods.spec import Accumulation, Curve, MethodSpec, Torchrun, register_method
from invprop.settings import AT_LEAST_ONE, AT_LEAST_TWO, NON_EMPTY_SHARE, Reference, setting

#: Noroozi & Favaro (2016), Sec. 3: a 64x64 tile at a random place in each 75x75 cell of a 225x225 crop.
TILE_SHARE = 64 / 75


@dataclass
class JigsawSettings:
    """The ``jigsaw`` section."""

    grid: int = setting(3, "tiles per side", bounds=AT_LEAST_TWO)
    permutations: int = setting(100, "classes: permutations in the fixed set", bounds=AT_LEAST_TWO)
    permutation_seed: int = setting(0, "seed of the permutation set's first permutation")
    tile_size: int | None = setting(None, "side each tile is resized to (null: the image side)", bounds=AT_LEAST_ONE)
    tile_share: float = setting(
        TILE_SHARE, "a tile's side over its cell's, placed at random in the cell (1: whole, adjacent cells)",
        bounds=NON_EMPTY_SHARE,
    )  # fmt: skip
    normalise_tiles: bool = setting(True, "normalise each tile's channels to mean 0, std 1 on its own")
    hidden_dim: int = setting(
        1024, "width of the classifier's hidden layer (the paper's fc7: 4096)", bounds=AT_LEAST_ONE
    )


_NOROOZI = "Noroozi & Favaro (2016)"
SPEC = MethodSpec(
    "Jigsaw: predict the permutation of shuffled tiles (Noroozi & Favaro, 2016)",
    JigsawSettings,
    section="jigsaw",
    section_help="the jigsaw puzzle",
    accumulation=Accumulation.RUNS,
    accumulation_note="each batch draws its own puzzles",
    recipes={  # no CIFAR recipe is published
        "*": paper_sgd(
            f"{_NOROOZI}, the authors' solver_cfn_jps.prototxt (0.01 at batch 256, x0.1 every 100,000 of 350,000 "
            "iterations; biases at twice the lr, without decay)",
            lr=0.01,
            weight_decay=5e-4,
            lr_scaling="none",
            exclude_norm_and_bias=True,
            norm_bias_lr_scale=2.0,
            schedule="step",
            milestone_shares=[100 / 350, 200 / 350, 300 / 350],
            gamma=0.1,
        ),
    },
    presets={"cifar10": {"jigsaw": {"tile_size": 16}}},
    references={
        "*": {
            "jigsaw.grid": Reference(3, f"{_NOROOZI}, Sec. 3 (3 x 3 tiles)"),
            "jigsaw.permutations": Reference(1000, f"{_NOROOZI}, Sec. 3.2 (the set of the main results)"),
            "jigsaw.hidden_dim": Reference(4096, f"{_NOROOZI}, Fig. 3 (fc7)"),
            "jigsaw.tile_share": Reference(64 / 75, f"{_NOROOZI}, Sec. 3 (64x64 tiles in 75x75 cells)"),
            "jigsaw.normalise_tiles": Reference(True, f"{_NOROOZI}, Sec. 3 (against shortcuts)"),
        },
    },
    deviations={
        "*": {
            "jigsaw.permutations": "fewer classes for datasets of thousands of images, and a set chosen in seconds "
            "(about 50 ms per permutation of 9 tiles on a CPU); the paper compares several set sizes",
            "jigsaw.hidden_dim": "scaled down with the small backbones (256 to 512 features per tile)",
        },
    },
    headline=("jigsaw.grid", "jigsaw.permutations"),
    terms=("loss_jigsaw", "jigsaw_accuracy"),
    curves=(
        Curve("permutation classification", ("loss_jigsaw",)),
        Curve("puzzles solved", ("jigsaw_accuracy",), "accuracy"),
    ),
    compare=False,
    torchrun=Torchrun.RUNS,
    torchrun_note="each process draws its own puzzles",
)


@register_method("jigsaw", SPEC)
class Jigsaw(Method):
    """Permutation classification of shuffled tiles (Noroozi & Favaro, 2016, Sec. 3).

    Args:
        settings: the ``jigsaw`` section.
        encoder: backbone + head, applied to every tile.
        context: D (a tile's embedding) and the process group (the classifier's gradients are averaged; each process
            draws its own puzzles).
    """

    permutation_table: Tensor

    def __init__(self, settings: JigsawSettings, encoder: nn.Module, context: BuildContext) -> None:
        super().__init__(encoder, context)
        options, embedding_dim = settings, context.embedding_dim
        self.options = options
        tiles = options.grid * options.grid
        self.register_buffer(
            "permutation_table", permutation_set(options.permutations, tiles, options.permutation_seed)
        )
        self.classifier = nn.Sequential(
            nn.Linear(tiles * embedding_dim, options.hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(options.hidden_dim, options.permutations),
        )  # fmt: skip

    def shared_modules(self) -> list[nn.Module]:
        return [self.classifier]

    def training_step(self, batch: Batch) -> StepOutput:
        o = self.options
        images = self.views_of(batch)
        labels = torch.randint(o.permutations, (images.shape[0],)).to(images.device)
        tiles, _ = jigsaw_tiles(
            images, o.grid, o.tile_size, self.permutation_table[labels], o.tile_share, o.normalise_tiles
        )
        embeddings = self.encode(tiles).reshape(images.shape[0], -1)
        logits = self.classifier(embeddings)
        loss = F.cross_entropy(logits.float(), labels)
        accuracy = (logits.detach().argmax(dim=1) == labels).float().mean()
        return StepOutput(loss, {"loss_jigsaw": loss.detach(), "jigsaw_accuracy": accuracy})


__all__ = ["SPEC", "TILE_SHARE", "Jigsaw", "JigsawSettings"]
