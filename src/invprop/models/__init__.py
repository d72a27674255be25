"""Layer 2: backbones and projection heads, in registries, and the model settings that build an encoder."""

from invprop.models.backbones import BACKBONES, BackboneNames, DigitsConvNet, TorchvisionResNet, build_backbone
from invprop.models.encoder import (
    EncodedMaps,
    EncodedTokens,
    Encoder,
    ModelSettings,
    build_encoder,
    check_model_settings,
    encoder_from,
    from_head_layer,
)
from invprop.models.feature_maps import FeatureMaps
from invprop.models.heads import HEADS
from invprop.models.timm_backbone import ModelInput, TimmBackbone, TimmOptions, is_timm_backbone, model_input

__all__ = [
    "BACKBONES",
    "HEADS",
    "BackboneNames",
    "ModelInput",
    "TimmBackbone",
    "TimmOptions",
    "build_backbone",
    "check_model_settings",
    "is_timm_backbone",
    "model_input",
    "DigitsConvNet",
    "EncodedMaps",
    "EncodedTokens",
    "Encoder",
    "FeatureMaps",
    "ModelSettings",
    "TorchvisionResNet",
    "build_encoder",
    "encoder_from",
    "from_head_layer",
]
