"""Layer 2: backbones and projection heads, in registries."""

from invprop.models.backbones import BACKBONES, DigitsConvNet, TorchvisionResNet
from invprop.models.encoder import Encoder, build_encoder
from invprop.models.heads import HEADS

__all__ = ["BACKBONES", "HEADS", "DigitsConvNet", "Encoder", "TorchvisionResNet", "build_encoder"]
