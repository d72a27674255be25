"""DrLIM, dimensionality reduction by learning an invariant mapping (Hadsell, Chopra & LeCun, CVPR 2006), as a
training method: ``method: drlim``.

The contrastive margin loss on Euclidean distances between unnormalised embeddings
(:func:`invprop.core.margin_losses.drlim_loss`): neighbours are pulled together, every other pair is pushed apart
until it is ``margin`` away. The paper's neighbours come from prior knowledge -- on MNIST each digit's nearest
neighbours in pixel space. Here the neighbours of an image are its two augmented views, and every other image of the
batch is a non-neighbour: pixel-space neighbours are poor beyond centred digits (CIFAR-10's nearest pixels share a
colour and a background more often than a class), and the augmentations are this library's prior knowledge of what
must not change an embedding. The paper maps MNIST to two dimensions, to draw the map; the head here is linear to
32 (``model.embedding_dim``), room for a representation, and evaluation reads the backbone before it. The paper
trains by plain stochastic gradient and publishes no rates: DrLIM takes the
dataset preset's shared optimiser. With views as neighbours DrLIM is a margin-loss relative of SimCLR: hinge distances
in place of a softmax over cosine similarities. In a distributed run the embeddings are gathered, so the pairs are
those of the global batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from invprop.core.crop_pairs import mean_over_pairs, view_pairs
from invprop.core.margin_losses import drlim_loss
from invprop.methods.method import Batch, BuildContext, StepOutput
from invprop.methods.spec import Accumulation, Curve, MethodSpec, register_method
from invprop.methods.two_views import TwoViewMethod
from invprop.settings import POSITIVE, setting


@dataclass
class DrLIMSettings:
    """The ``drlim`` section."""

    margin: float = setting(
        1.0,
        "m, the distance beyond which two non-neighbours cost nothing (the paper's value for its MNIST map was not "
        "found; 1 is not a published default)",
        bounds=POSITIVE,
    )


SPEC = MethodSpec(
    "DrLIM: a contrastive margin loss on distances, the two views as neighbours (Hadsell et al., 2006)",
    DrLIMSettings,
    section="drlim",
    section_help="the contrastive margin loss of Hadsell et al. (2006)",
    multi_crop=True,
    accumulation=Accumulation.REFUSED,
    accumulation_note="every embedding of the batch is paired with every other",
    presets={"*": {"model": {"head": "linear", "embedding_dim": 32}}},
    headline=("drlim.margin", "model.embedding_dim"),
    terms=("loss_margin",),
    curves=(Curve("contrastive margin loss", ("loss_margin",)),),
    compare=False,
)


@register_method("drlim", SPEC)
class DrLIM(TwoViewMethod):
    """The loss of Hadsell et al. (2006, Eq. 4) over every pair of the batch's two views' embeddings.

    Args:
        settings: the ``drlim`` section (the margin).
        encoder: backbone + head.
        context: in a distributed run the embeddings of every process are gathered (the global batch's pairs).
    """

    def __init__(self, settings: DrLIMSettings, encoder: nn.Module, context: BuildContext) -> None:
        super().__init__(encoder, context)
        self.margin = settings.margin

    def training_step(self, batch: Batch) -> StepOutput:
        z = [self.gather(view) for view in self.encode_views(batch)]
        loss = mean_over_pairs(lambda i, j: drlim_loss(z[i], z[j], self.margin), view_pairs(len(z)))
        return StepOutput(loss, {"loss_margin": loss.detach()})


__all__ = ["SPEC", "DrLIM", "DrLIMSettings"]
