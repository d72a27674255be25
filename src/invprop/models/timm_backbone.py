"""Any timm model as a backbone: ``model.backbone=timm:NAME`` (Wightman, *PyTorch Image Models*, 2019).

The network is built by ``timm.create_model(NAME, num_classes=0, ...)`` -- its classifier removed, its pooled
features the representation -- and kept under ``self.net`` with timm's parameter names, so its ``state_dict()`` loads
strictly into ``timm.create_model(NAME, num_classes=0, **creation_kwargs)``. timm is an optional dependency
(``pip install 'invprop[timm]'``); every failure to find it, the model or its weights is a one-line
:class:`~invprop.errors.ConfigError`.

Patch-based models (ViTs and their kin) are built for the image side of the data (``img_size``), with
``model.patch_size`` when set (CIFAR's ViTs use 4x4 patches), and accept other sides (multi-crop's small crops,
transfer) through timm's ``dynamic_img_size``, which interpolates the position embeddings.
"""

from __future__ import annotations

import contextlib
import importlib
import socket
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from invprop.errors import ConfigError, first_line
from invprop.models.feature_maps import FeatureMaps, check_stages
from invprop.models.vit_tokens import MaskedPatches, TokenFeatures, is_vision_transformer, token_features
from invprop.settings import close_match

#: The prefix that names a timm model in ``model.backbone``.
TIMM_PREFIX = "timm:"
#: The input side and normalisation assumed for a timm model without a pretrained config (timm's usual ones).
DEFAULT_SIDE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: What to install when timm is missing.
INSTALL_HINT = "pip install 'invprop[timm]'"


def is_timm_backbone(name: str) -> bool:
    """Whether the backbone ``name`` is a timm model (``timm:NAME``).

    Example:
        >>> is_timm_backbone("timm:convnext_atto"), is_timm_backbone("resnet18")
        (True, False)
    """
    return name.startswith(TIMM_PREFIX)


def import_timm() -> ModuleType:
    """The timm module, or a one-line error saying how to install it."""
    try:
        return importlib.import_module("timm")
    except ImportError:
        raise ConfigError(f"timm backbones need the timm package, which is not installed: {INSTALL_HINT}") from None


def timm_architecture(name: str) -> str:
    """The timm model name of the backbone ``timm:NAME``, checked against timm's list (with "did you mean").

    Example:
        >>> timm_architecture("timm:resnet18")  # doctest: +SKIP
        'resnet18'
    """
    arch = name[len(TIMM_PREFIX) :]
    timm = import_timm()
    if not arch or not timm.is_model(arch):
        raise ConfigError(
            f"model.backbone={name}: timm has no model {arch!r}{close_match(arch, timm.list_models())}; "
            "timm.list_models('PATTERN*') lists them"
        )
    return arch


#: The setting that gives a timm backbone's local weights file (what the errors tell a user to set).
PRETRAINED_FILE_KEY = "model.pretrained_file"
#: The setting that gives a ViT's patch side (errors about it name this, or a teacher's own).
PATCH_SIZE_KEY = "model.patch_size"


@dataclass(frozen=True)
class TimmOptions:
    """The ``model`` settings that only timm backbones take.

    Attributes:
        pretrained: load timm's pretrained weights (from ``pretrained_file``, timm's cache or the Hugging Face hub).
        pretrained_file: a local weights file for ``pretrained`` (offline use).
        global_pool: timm's ``global_pool`` (ViTs: ``token`` -- the class token -- or ``avg`` over the patch tokens;
            convnets: ``avg``, ``max``, ...); None keeps the model's own.
        patch_size: the patch side of a patch-based model; None keeps the model's own.
        freeze_patch_embed: a ViT's patch projection takes no gradient and keeps its initialisation (MoCo v3's
            random patch projection, Chen, Xie & He, 2021: the authors' ``--stop-grad-conv1``).
        class_token: False builds a ViT without a class token, its feature the mean of its patch tokens after the
            final norm (I-JEPA's ViT, Assran et al., 2023); None keeps the model's own.
    """

    pretrained: bool = False
    pretrained_file: str | None = None
    global_pool: str | None = None
    patch_size: int | None = None
    freeze_patch_embed: bool = False
    class_token: bool | None = None


@dataclass(frozen=True)
class ModelInput:
    """What a timm model's metadata says of its inputs: the native image side and the normalisation its pretrained
    weights expect."""

    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def model_input(name: str) -> ModelInput:
    """The native input side and normalisation of the timm backbone ``name`` (from its pretrained config; no model
    is built)."""
    timm = import_timm()
    cfg = timm.get_pretrained_cfg(timm_architecture(name))
    if cfg is None:
        return ModelInput(DEFAULT_SIDE, IMAGENET_MEAN, IMAGENET_STD)
    size = int(cfg.input_size[-1]) if cfg.input_size else DEFAULT_SIDE
    return ModelInput(size, tuple(float(v) for v in cfg.mean), tuple(float(v) for v in cfg.std))


def patch_side(name: str, patch_size: int | None = None) -> int | None:
    """The patch side of the timm backbone ``name`` (``patch_size`` when set), or None for a model without patches."""
    native = _native_patch(import_timm(), timm_architecture(name))
    return None if native is None else patch_size or native


def _native_patch(timm: ModuleType, arch: str) -> int | None:
    """The patch side ``arch`` is built with by default (None: no patch embedding), read from a model on the meta
    device."""
    probe = _build(timm, arch, {"num_classes": 0}, meta=True)
    patch = getattr(getattr(probe, "patch_embed", None), "patch_size", None)
    return None if patch is None else int(patch[0])


def creation_kwargs(
    name: str, in_channels: int, image_size: int | None, options: TimmOptions, patch_key: str = PATCH_SIZE_KEY
) -> dict[str, Any]:
    """The keyword arguments of ``timm.create_model`` for the backbone ``name`` (besides ``pretrained``): no
    classifier, ``in_channels`` inputs, and for patch-based models the image side and patch size (``patch_key``: the
    setting that gives it, which the errors name).

    Raises:
        ConfigError: a patch size for a model without patches, or an image side it does not divide.
    """
    timm = import_timm()
    arch = timm_architecture(name)
    kwargs: dict[str, Any] = {"num_classes": 0, "in_chans": in_channels}
    if options.global_pool is not None:
        kwargs["global_pool"] = options.global_pool
    if options.class_token is False:
        if options.global_pool not in (None, "avg"):
            raise ConfigError(f"model.class_token=false leaves {name} no class token to pool: set model.global_pool to "
                              "avg or null")  # fmt: skip
        # No class token; the final norm on every token, then their mean (timm's fc_norm off).
        kwargs.update(class_token=False, global_pool="avg", fc_norm=False)
    patch = _native_patch(timm, arch)
    if patch is None:
        if options.patch_size is not None:
            raise ConfigError(
                f"{patch_key} applies to patch-based models (ViTs); {name} has no patches: set it to null"
            )
        return kwargs
    side = options.patch_size or patch
    native = model_input(name).image_size
    if image_size is not None and image_size % side:
        raise ConfigError(
            f"{name} cuts {image_size}x{image_size} images into {side}x{side} patches, which does not divide them: "
            f"set {patch_key} to a divisor of {image_size} (e.g. {_divisor_near(image_size, side)})"
        )
    if options.patch_size is not None:
        kwargs["patch_size"] = options.patch_size
    if image_size is not None and image_size != native:
        kwargs["img_size"] = image_size
    _build(timm, arch, kwargs, meta=True)  # refuses what the model does not take, before any weights are made
    with contextlib.suppress(ConfigError):  # models without it keep a fixed input side
        _build(timm, arch, {**kwargs, "dynamic_img_size": True}, meta=True)
        kwargs["dynamic_img_size"] = True
    return kwargs


def _divisor_near(side: int, patch: int) -> int:
    return min((d for d in range(1, side + 1) if side % d == 0), key=lambda d: abs(d - patch))


def _build(timm: ModuleType, arch: str, kwargs: dict[str, Any], meta: bool = False, **extra: Any) -> nn.Module:
    """``timm.create_model``; ``meta`` builds it without memory (to read its structure). A model that refuses the
    arguments is a :class:`ConfigError` with timm's reason."""
    try:
        with torch.device("meta") if meta else contextlib.nullcontext():
            return timm.create_model(arch, **kwargs, **extra)
    except (TypeError, AssertionError, ValueError) as err:  # timm refuses arguments with any of these
        first = first_line(err)
        raise ConfigError(f"timm model {arch} does not take {kwargs}: {first}") from None


class TimmBackbone(nn.Module):
    """A timm model without its classifier: ``(B, C, H, W)`` images -> ``(B, feature_dim)`` pooled features.

    Args:
        name: ``timm:NAME``.
        in_channels: image channels.
        image_size: the side of the training images (patch-based models are built for it); None = the model's own.
        options: pretrained weights, pooling and patch size.
        file_key: the setting a one-line error about missing weights tells the user to set (a teacher's own).
        patch_key: the setting errors about the patch side name (a teacher's own).
    """

    def __init__(
        self, name: str, in_channels: int = 3, image_size: int | None = None, options: TimmOptions = TimmOptions(),
        file_key: str = PRETRAINED_FILE_KEY, patch_key: str = PATCH_SIZE_KEY,
    ) -> None:  # fmt: skip
        super().__init__()
        timm = import_timm()
        self.architecture = timm_architecture(name)
        #: ``timm.create_model``'s keyword arguments besides the name: what a strict reload needs.
        self.creation_kwargs = creation_kwargs(name, in_channels, image_size, options, patch_key)
        self.net = _create_weights(timm, self.architecture, self.creation_kwargs, options, file_key)
        if options.freeze_patch_embed:
            patches = getattr(self.net, "patch_embed", None)
            if not isinstance(patches, nn.Module):
                raise ConfigError(f"model.freeze_patch_embed=true needs a ViT with a patch projection (patch_embed); "
                                  f"{name} has none: set it to false")  # fmt: skip
            patches.requires_grad_(False)  # (before any data-parallel wrapper is built around the model)
        width: Any = getattr(self.net, "head_hidden_size", None) or getattr(self.net, "num_features")
        self.feature_dim = int(width)
        #: Each stage's (a ViT: each block's) width, early to late, from timm's ``feature_info``.
        self.stage_channels = tuple(int(info["num_chs"]) for info in getattr(self.net, "feature_info", []))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def forward_maps(self, x: Tensor, stages: int = 1) -> FeatureMaps:
        """The pooled features and the last ``stages`` stage (a ViT: block) outputs as (B, C, h, w) maps -- a ViT's
        patch tokens laid out on their grid, its class token left out -- through timm's ``forward_intermediates``;
        the pooled vector is ``forward_head`` of the same pass, the numbers ``forward`` gives."""
        if not hasattr(self.net, "forward_intermediates") or not self.stage_channels:
            raise ConfigError(f"timm model {self.architecture} gives no feature maps (no forward_intermediates in "
                              f"this timm); the dense methods need another model or a newer timm")  # fmt: skip
        check_stages(stages, len(self.stage_channels), f"timm:{self.architecture}")
        net: Any = self.net  # a timm model: its own methods
        final, maps = net.forward_intermediates(x, indices=stages, output_fmt="NCHW")
        return FeatureMaps(net.forward_head(final, pre_logits=True), tuple(maps))

    def forward_tokens(self, x: Tensor, masked: MaskedPatches = MaskedPatches()) -> TokenFeatures:
        """A ViT's pooled features and patch tokens of one pass, the patches ``masked`` says replaced by its mask
        token (:func:`invprop.models.vit_tokens.token_features`); a one-line error for a model without patch
        tokens."""
        if not is_vision_transformer(self.net):
            raise ConfigError(f"timm model {self.architecture} is not a Vision Transformer with patch tokens; a method "
                              "that reads them needs one (model.backbone=timm:vit_*)")  # fmt: skip
        return token_features(self.net, x, masked)

    def parameter_groups(self, weight_decay: float, layer_decay: float) -> list[dict[str, Any]]:
        """Optimiser groups of the trainable parameters, as the ViT recipes make them: no weight decay on biases,
        norm layers and the model's own exemptions (position embeddings, class token), and each layer's learning
        rate scaled by ``layer_decay ** (depth from the top)`` (``lr_scale``; 1 = no decay), through timm's
        grouping of the model's layers."""
        from timm.optim import param_groups_layer_decay, param_groups_weight_decay

        exempt = tuple(getattr(self.net, "no_weight_decay", set)())
        if layer_decay == 1.0 or not hasattr(self.net, "group_matcher"):
            groups = param_groups_weight_decay(self.net, weight_decay, no_weight_decay_list=exempt)
        else:
            groups = param_groups_layer_decay(
                self.net, weight_decay, no_weight_decay_list=exempt, layer_decay=layer_decay
            )
        return [dict(group) for group in groups if group["params"]]


def _create_weights(
    timm: ModuleType, arch: str, kwargs: dict[str, Any], options: TimmOptions, file_key: str = PRETRAINED_FILE_KEY
) -> nn.Module:
    """The model with random weights, or timm's pretrained ones; a one-line error when they cannot be had, naming
    ``file_key``, the setting that gives a local weights file."""
    if not options.pretrained:
        if options.pretrained_file is not None:
            raise ConfigError("model.pretrained_file is set but model.pretrained is false: set model.pretrained=true")
        return _build(timm, arch, kwargs)
    how = (
        f"where there is internet, download them with python -c \"import timm; timm.create_model('{arch}', "
        f'pretrained=True)" and copy ~/.cache/huggingface here, or set {file_key}=PATH to the weights file'
    )
    extra: dict[str, Any] = {}
    if options.pretrained_file is not None:
        path = Path(options.pretrained_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"{file_key} {path} does not exist; point it at the weights file of {arch}")
        extra["pretrained_cfg_overlay"] = {"file": str(path)}
    elif not _reachable(HUB_HOST):
        cached = _cached_weights(timm, arch)
        if cached is None:
            raise ConfigError(f"timm's pretrained weights of {arch} are not on this machine and {HUB_HOST} cannot be "
                              f"reached; {how}")  # fmt: skip
        extra["pretrained_cfg_overlay"] = {"file": cached}
    try:
        return _build(timm, arch, kwargs, pretrained=True, **extra)
    except (OSError, RuntimeError, ValueError) as err:
        first = first_line(err)
        raise ConfigError(f"cannot load timm's pretrained weights of {arch} ({first}); {how}") from None


#: Where timm's pretrained weights are downloaded from, and the file names a timm repository there holds.
HUB_HOST = "huggingface.co"
HUB_WEIGHT_FILES = ("open_clip_model.safetensors", "model.safetensors", "open_clip_pytorch_model.bin",
                    "pytorch_model.bin")  # fmt: skip
#: Seconds to wait for the hub before treating the machine as offline.
HUB_TIMEOUT_S = 3.0


def _reachable(host: str) -> bool:
    """Whether ``host`` answers on HTTPS (offline machines fail at once, without the hub client's minute of
    retries)."""
    try:
        socket.create_connection((host, 443), timeout=HUB_TIMEOUT_S).close()
    except OSError:
        return False
    return True


def _cached_weights(timm: ModuleType, arch: str) -> str | None:
    """The path of ``arch``'s pretrained weights in the local Hugging Face cache, or None."""
    cfg = timm.get_pretrained_cfg(arch)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        return None
    from huggingface_hub import try_to_load_from_cache

    names = [cfg.hf_hub_filename] if getattr(cfg, "hf_hub_filename", None) else list(HUB_WEIGHT_FILES)
    for name in names:
        found = try_to_load_from_cache(repo, name)
        if isinstance(found, str):
            return found
    return None


__all__ = [
    "INSTALL_HINT",
    "TIMM_PREFIX",
    "ModelInput",
    "TimmBackbone",
    "TimmOptions",
    "creation_kwargs",
    "import_timm",
    "is_timm_backbone",
    "model_input",
    "patch_side",
    "timm_architecture",
]
