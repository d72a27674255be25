"""Backbone + projection head, and the model settings that build one."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from invprop.models.backbones import BACKBONES
from invprop.models.heads import HEADS
from invprop.settings import AT_LEAST_ONE, setting


class Encoder(nn.Module):
    """``forward`` gives the un-normalised embedding f(x); ``features`` gives the backbone representation."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    @property
    def feature_dim(self) -> int:
        return int(getattr(self.backbone, "feature_dim"))

    def features(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


@dataclass
class ModelSettings:
    """The ``model`` section: which backbone and head, and the embedding width."""

    backbone: str = setting("digits_convnet", "backbone network", choices=BACKBONES)
    head: str = setting(
        "mlp_bn",
        "projection head: mlp_bn (Linear-BatchNorm-ReLU-Linear), mlp (the authors': Linear-ReLU-Linear) -- both with "
        "loss.temperature 0.2 -- or linear (the paper's ablations; 0.07). mlp_bn is the default because it measured "
        "better than the authors' head here (docs/results.md)",
        choices=HEADS,
    )
    embedding_dim: int = setting(128, "embedding (bank) dimension D", bounds=AT_LEAST_ONE)
    hidden_dim: int | None = setting(
        None, "MLP head hidden width; null = the backbone's feature width", bounds=AT_LEAST_ONE
    )


def build_encoder(
    backbone: str, head: str = "mlp_bn", embedding_dim: int = 128, hidden_dim: int | None = None, in_channels: int = 3
) -> Encoder:
    """Build an :class:`Encoder` from registry names.

    Example:
        >>> enc = build_encoder("digits_convnet", "linear", 128, in_channels=1)
        >>> enc.feature_dim
        256
    """
    net = BACKBONES.get(backbone)(in_channels=in_channels)
    return Encoder(net, HEADS.get(head)(net.feature_dim, embedding_dim, hidden_dim))


def encoder_from(settings: ModelSettings, in_channels: int) -> Encoder:
    """The encoder the ``model`` settings describe, for images of ``in_channels`` channels.

    Example:
        >>> encoder_from(ModelSettings(head="linear"), in_channels=1).head.out_features
        128
    """
    return build_encoder(settings.backbone, settings.head, settings.embedding_dim, settings.hidden_dim, in_channels)
