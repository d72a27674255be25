"""Backbone + projection head."""

from __future__ import annotations

from torch import Tensor, nn

from invprop.models.backbones import BACKBONES
from invprop.models.heads import HEADS


class Encoder(nn.Module):
    """``forward`` gives the un-normalised embedding f(x); ``features`` gives the backbone representation."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    @property
    def feature_dim(self) -> int:
        return int(self.backbone.feature_dim)

    def features(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


def build_encoder(
    backbone: str, head: str = "mlp", embedding_dim: int = 128, hidden_dim: int | None = None, in_channels: int = 3
) -> Encoder:
    """Build an :class:`Encoder` from registry names.

    Example:
        >>> enc = build_encoder("digits_convnet", "linear", 128, in_channels=1)
        >>> enc.feature_dim
        256
    """
    net = BACKBONES.get(backbone)(in_channels=in_channels)
    return Encoder(net, HEADS.get(head)(net.feature_dim, embedding_dim, hidden_dim))
