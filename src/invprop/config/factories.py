"""What a run's settings build: its method around an encoder, and its data as the encoder needs it."""

from __future__ import annotations

from typing import Any

from torch import nn

from invprop.config.schema import Config
from invprop.data import DataSplits, InputNeeds, datasets_from
from invprop.methods import BuildContext, Method
from invprop.models import ModelSettings, is_timm_backbone, model_input
from invprop.models.timm_backbone import patch_side


def build_method(cfg: Config, encoder: nn.Module, num_samples: int, **context: Any) -> Method:
    """The method ``cfg`` describes, around ``encoder``, for ``num_samples`` training images; ``context`` gives the
    other fields of :class:`~invprop.methods.BuildContext` (``distributed``, ``in_channels``, ``mean``, ``std``,
    ``total_steps``, ``labels``, ``features``, ``forward``)."""
    return cfg.spec.create(cfg.method_settings, encoder, BuildContext(num_samples, cfg.model.embedding_dim, **context))


def input_needs(model: ModelSettings) -> InputNeeds:
    """What the encoder of the ``model`` settings asks of the data: for a timm backbone, its native side for image
    folders, its pretrained weights' normalisation (when pretrained) and its patch side; nothing otherwise."""
    if not is_timm_backbone(model.backbone):
        return InputNeeds()
    native = model_input(model.backbone)
    normalization = (native.mean, native.std) if model.pretrained else None
    return InputNeeds(native.image_size, normalization, patch_side(model.backbone, model.patch_size) or 1)


def data_for(cfg: Config, name: str | None = None, foreign: bool = False, subset: bool = True) -> DataSplits:
    """The splits of ``cfg``'s data (or of dataset ``name``) as its encoder needs them (see
    :func:`invprop.data.datasets_from` for the arguments)."""
    return datasets_from(cfg.data, name, foreign, subset, input_needs(cfg.model))


__all__ = ["build_method", "data_for", "input_needs"]
