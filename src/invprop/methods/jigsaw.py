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
from invprop.methods.base import METHODS, BuildContext, Method, MethodSpec, StepOutput
from invprop.methods.field_published import FIELD_DEVIATIONS, FIELD_PRESETS, FIELD_REFERENCES
from invprop.settings import AT_LEAST_ONE, AT_LEAST_TWO, NON_EMPTY_SHARE, section, setting

#: Noroozi & Favaro (2016), Sec. 3: a 64x64 tile at a random place in each 75x75 cell of a 225x225 crop.
TILE_SHARE = 64 / 75


@dataclass
class JigsawOptions:
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


@dataclass
class JigsawSettings:
    jigsaw: JigsawOptions = section(JigsawOptions, "the jigsaw puzzle")


class Jigsaw(Method):
    """Permutation classification of shuffled tiles (Noroozi & Favaro, 2016, Sec. 3).

    Args:
        encoder: backbone + head, applied to every tile.
        embedding_dim: D, a tile's embedding.
        options: the ``jigsaw`` section.
        distributed: average the classifier's gradients over processes.
    """

    permutation_table: Tensor

    def __init__(
        self, encoder: nn.Module, embedding_dim: int, options: JigsawOptions, distributed: bool = False
    ) -> None:
        super().__init__(encoder, distributed)
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

    def training_step(self, indices: Tensor, images: Tensor, epoch: int) -> StepOutput:
        o = self.options
        labels = torch.randint(o.permutations, (images.shape[0],)).to(images.device)
        tiles, _ = jigsaw_tiles(
            images, o.grid, o.tile_size, self.permutation_table[labels], o.tile_share, o.normalise_tiles
        )
        embeddings = self.encode(tiles).reshape(images.shape[0], -1)
        logits = self.classifier(embeddings)
        loss = F.cross_entropy(logits.float(), labels)
        accuracy = (logits.detach().argmax(dim=1) == labels).float().mean()
        return StepOutput(loss, {"loss_jigsaw": loss.detach(), "jigsaw_accuracy": accuracy})


def build_jigsaw(settings: JigsawSettings, encoder: nn.Module, context: BuildContext) -> Jigsaw:
    return Jigsaw(encoder, context.embedding_dim, settings.jigsaw, context.distributed)


METHODS.register("jigsaw")(
    MethodSpec(
        "Jigsaw: predict the permutation of shuffled tiles (Noroozi & Favaro, 2016)",
        JigsawSettings,
        build_jigsaw,
        presets=FIELD_PRESETS["jigsaw"],
        headline=("jigsaw.grid", "jigsaw.permutations"),
        references=FIELD_REFERENCES["jigsaw"],
        deviations=FIELD_DEVIATIONS["jigsaw"],
    )
)

__all__ = ["Jigsaw", "JigsawOptions", "JigsawSettings", "build_jigsaw"]
