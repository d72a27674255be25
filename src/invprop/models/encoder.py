"""Backbone + projection head, and the model settings that build one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from invprop.errors import ConfigError
from invprop.models.backbones import BackboneNames, build_backbone
from invprop.models.colour_split import COLOUR_SPLITS, ColourSplitBackbone, GroupHeads
from invprop.models.feature_maps import FeatureMaps, feature_maps
from invprop.models.heads import HEADS, head_layers, layer_width
from invprop.models.timm_backbone import TimmOptions, is_timm_backbone, timm_architecture
from invprop.models.vit_tokens import MaskedPatches
from invprop.settings import AT_LEAST_ONE, setting


@dataclass(frozen=True)
class EncodedMaps:
    """One pass of an :class:`Encoder` asked for maps: the embedding (B, D) and the backbone's :class:`FeatureMaps`
    (its pooled features and stage maps)."""

    embedding: Tensor
    maps: FeatureMaps


@dataclass(frozen=True)
class EncodedTokens:
    """One pass of an :class:`Encoder` over a ViT's tokens: ``embedding`` (B, D), the head on the pooled feature,
    ``patches`` (B, N, D), the head on each patch token (one head pass over both, as iBOT's head), and ``features``
    (B, F), the pooled feature itself; asked without the head, the backbone's pooled feature and patch tokens, and
    without the patch head, ``patches`` are the backbone's patch tokens."""

    embedding: Tensor
    patches: Tensor
    features: Tensor


class Encoder(nn.Module):
    """``forward`` gives the un-normalised embedding f(x) -- with ``maps=N``, also the backbone's last N feature maps
    (:class:`EncodedMaps`); with ``tokens``, the head on every patch token of a ViT too (:class:`EncodedTokens`) --
    through the same call so that a data-parallel wrapper sees it; ``features`` gives the backbone
    representation."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    @property
    def feature_dim(self) -> int:
        return int(getattr(self.backbone, "feature_dim"))

    def features(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def forward(self, x: Tensor, maps: int = 0, tokens: MaskedPatches | None = None) -> Any:
        """The embedding (B, D); with ``maps`` > 0, an :class:`EncodedMaps` holding it and the last ``maps`` stage
        maps of the backbone's one pass; with ``tokens`` (what to hide), an :class:`EncodedTokens`."""
        if tokens is not None:
            forward_tokens = getattr(self.backbone, "forward_tokens", None)
            if forward_tokens is None:
                raise ConfigError(f"the backbone {type(self.backbone).__name__} has no patch tokens; a method that "
                                  "reads them needs a timm Vision Transformer (model.backbone=timm:vit_*)")  # fmt: skip
            found = forward_tokens(x, tokens)
            if not tokens.head:
                return EncodedTokens(found.pooled, found.patches, found.pooled)
            if not tokens.patch_head:
                return EncodedTokens(self.head(found.pooled), found.patches, found.pooled)
            b, n, width = found.patches.shape
            out = self.head(torch.cat([found.pooled, found.patches.reshape(b * n, width)]))
            return EncodedTokens(out[:b], out[b:].reshape(b, n, -1), found.pooled)
        if maps == 0:
            return self.head(self.backbone(x))
        found = feature_maps(self.backbone, x, maps)
        return EncodedMaps(self.head(found.pooled), found)


class HeadPrefix(nn.Module):
    """A backbone followed by the first layers of a head, as one backbone (``feature_dim``: the last layer's width):
    what SimCLRv2 fine-tunes (Chen et al., 2020b, Sec. 2.2: "from a middle layer of the projection head")."""

    def __init__(self, backbone: nn.Module, layers: list[nn.Sequential]) -> None:
        super().__init__()
        self.backbone = backbone
        self.layers = nn.Sequential(*layers)
        self.feature_dim = layer_width(layers[-1])

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(self.backbone(x))

    def forward_maps(self, x: Tensor, stages: int = 1) -> FeatureMaps:
        """The backbone's maps, and the head layers' output as the pooled features."""
        found = feature_maps(self.backbone, x, stages)
        return FeatureMaps(self.layers(found.pooled), found.stages)

    @property
    def stage_channels(self) -> tuple[int, ...]:
        return tuple(getattr(self.backbone, "stage_channels"))


def from_head_layer(encoder: Encoder, layers: int) -> Encoder:
    """``encoder`` whose features are the output of its head's first ``layers`` layers (0: the backbone's; the
    same encoder), sharing its modules; the rest of the head stays its head. A one-line error when the head has
    fewer layers.

    Example:
        >>> enc = build_encoder("digits_convnet", "mlp3_bn_out", 16, in_channels=1)
        >>> from_head_layer(enc, 1).feature_dim
        256
    """
    if layers == 0:
        return encoder
    if isinstance(encoder.head, GroupHeads):
        raise ConfigError(f"eval.from_head_layer={layers} reads one head's layers, and this encoder has one head per "
                          "channel group (model.colour_split); give 0, the backbones' features")  # fmt: skip
    parts = head_layers(encoder.head)
    if layers > len(parts):
        raise ConfigError(f"eval.from_head_layer={layers}, but the head has {len(parts)} layer(s): give 0 (the "
                          f"backbone) to {len(parts)}")  # fmt: skip
    return Encoder(HeadPrefix(encoder.backbone, parts[:layers]), nn.Sequential(*parts[layers:]))


@dataclass
class ModelSettings:
    """The ``model`` section: which backbone and head, and the embedding width."""

    backbone: str = setting(
        "digits_convnet",
        "backbone network: a registered one or timm:NAME, any timm model (pip install 'invprop[timm]'), without its "
        "classifier, randomly initialised unless model.pretrained",
        choices=BackboneNames(),
    )
    head: str = setting(
        "mlp_bn",
        "projection head after the backbone (models/heads.py): mlp_bn (Linear-BatchNorm-ReLU-Linear), mlp "
        "(Linear-ReLU-Linear), linear, or the deeper projectors of the field's methods; each method's presets pick "
        "its own (invprop presets --keys --method NAME says where each comes from)",
        choices=HEADS,
    )
    embedding_dim: int = setting(128, "embedding dimension D, the head's output", bounds=AT_LEAST_ONE)
    hidden_dim: int | None = setting(
        None, "MLP head hidden width; null = the backbone's feature width", bounds=AT_LEAST_ONE
    )
    pretrained: bool = setting(
        False, "timm backbones: start from timm's pretrained weights (its normalisation then applies to the data)"
    )
    pretrained_file: str | None = setting(
        None, "timm backbones: a local weights file for model.pretrained (offline); null = timm's cache or download"
    )
    global_pool: str | None = setting(
        None, "timm backbones: the pooled feature -- ViTs: token (the class token) or avg (mean of the patch tokens); "
        "convnets: avg, max, ...; null = the model's own",
    )  # fmt: skip
    patch_size: int | None = setting(
        None, "timm patch-based backbones (ViTs): the patch side, e.g. 4 for 32x32 images; null = the model's own",
        bounds=AT_LEAST_ONE,
    )  # fmt: skip
    freeze_patch_embed: bool = setting(
        False, "timm ViTs: the patch projection keeps its random initialisation, no gradient (MoCo v3's remedy for "
        "unstable ViT training)",
    )  # fmt: skip
    class_token: bool | None = setting(
        None, "timm ViTs: false builds the ViT without a class token, its feature the mean of its patch tokens after "
        "the final norm (I-JEPA's ViT); null: the model's own",
    )  # fmt: skip
    init_from: str | None = setting(
        None, "continued pretraining: start from an earlier invprop run's weights (its folder or last.pt) -- the "
        "encoder's where names and shapes match, and the method's own state (teacher, prototypes, centres) when that "
        "run trained the same method on the same dataset; the optimiser and schedule start anew, and the log says what "
        "was loaded and what is new (timm's pretrained weights: model.pretrained)",
    )  # fmt: skip
    colour_split: str | None = setting(
        None, "colour images: convert to a colour space and give each channel group its own backbone and head, "
        "features and embeddings side by side (CMC's L and ab: lab); null = one backbone on the image",
        choices=COLOUR_SPLITS,
    )  # fmt: skip

    @property
    def timm_options(self) -> TimmOptions:
        return TimmOptions(
            self.pretrained,
            self.pretrained_file,
            self.global_pool,
            self.patch_size,
            self.freeze_patch_embed,
            self.class_token,
        )


#: The ``model`` keys that only timm backbones take, with their defaults.
TIMM_ONLY_KEYS = {
    "pretrained": False, "pretrained_file": None, "global_pool": None, "patch_size": None, "freeze_patch_embed": False,
    "class_token": None,
}  # fmt: skip


def check_model_settings(settings: ModelSettings) -> None:
    """Check what the field checks cannot: a timm backbone's name (timm installed, the model known), and timm-only
    keys left at their defaults for other backbones. Raises :class:`ConfigError` with one line."""
    if is_timm_backbone(settings.backbone):
        timm_architecture(settings.backbone)
        return
    for key, default in TIMM_ONLY_KEYS.items():
        if getattr(settings, key) != default:
            raise ConfigError(
                f"model.{key} applies to timm backbones (model.backbone=timm:NAME), not {settings.backbone}; remove it"
            )


def build_encoder(
    backbone: str,
    head: str = "mlp_bn",
    embedding_dim: int = 128,
    hidden_dim: int | None = None,
    in_channels: int = 3,
    image_size: int | None = None,
    timm_options: TimmOptions = TimmOptions(),
    colour_split: str | None = None,
    normalisation: tuple[Sequence[float], Sequence[float]] = ((), ()),
) -> Encoder:
    """Build an :class:`Encoder` from registry names (or ``timm:NAME``); with ``colour_split``, one backbone and
    head per channel group of that colour space (:mod:`invprop.models.colour_split`), for batches normalised by
    ``normalisation`` (mean, std).

    Example:
        >>> enc = build_encoder("digits_convnet", "linear", 128, in_channels=1)
        >>> enc.feature_dim
        256
    """

    def make_head(width: int) -> nn.Module:
        return HEADS.get(head)(width, embedding_dim, hidden_dim)

    if colour_split is None:
        net = build_backbone(backbone, in_channels, image_size, timm_options)
        return Encoder(net, make_head(int(getattr(net, "feature_dim"))))
    if in_channels != 3:
        raise ConfigError(f"model.colour_split={colour_split} needs colour images, and these have {in_channels} "
                          "channel(s); choose a colour dataset or leave model.colour_split null")  # fmt: skip
    mean, std = normalisation
    split = ColourSplitBackbone(
        colour_split, lambda channels: build_backbone(backbone, channels, image_size, timm_options), mean, std
    )
    return Encoder(split, GroupHeads(split.group_dims, make_head))


def encoder_from(
    settings: ModelSettings,
    in_channels: int,
    image_size: int | None = None,
    normalisation: tuple[Sequence[float], Sequence[float]] = ((), ()),
) -> Encoder:
    """The encoder the ``model`` settings describe, for images of ``in_channels`` channels and side ``image_size``
    (which timm's patch-based models are built for; None = the model's own), normalised by ``normalisation``
    (mean, std: what a colour split undoes).

    Example:
        >>> encoder_from(ModelSettings(head="linear"), in_channels=1).head.out_features
        128
    """
    return build_encoder(
        settings.backbone, settings.head, settings.embedding_dim, settings.hidden_dim, in_channels, image_size,
        settings.timm_options, settings.colour_split, normalisation,
    )  # fmt: skip
