"""Layer 2: backbones and projection heads, in registries, and the model settings that build an encoder."""

from invprop.models.backbones import BACKBONES, DigitsConvNet, TorchvisionResNet
from invprop.models.encoder import Encoder, ModelSettings, build_encoder, encoder_from
from invprop.models.heads import HEADS

__all__ = [
    "BACKBONES",
    "HEADS",
    "DigitsConvNet",
    "Encoder",
    "ModelSettings",
    "TorchvisionResNet",
    "build_encoder",
    "encoder_from",
]
