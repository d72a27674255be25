"""``invprop export``: a checkpoint's weights in forms other tools load.

* ``torchvision``: the backbone of a ResNet run as a plain ``state_dict`` with torchvision's parameter names, no
  ``fc``. It loads with ``strict=True`` into ``torchvision.models.resnet18()``/``resnet50()`` once ``fc`` is replaced
  by ``torch.nn.Identity()`` (and, for the CIFAR stem, ``conv1``/``maxpool`` as :func:`torchvision_model` does) --
  the form detection and segmentation toolkits consume. Checked on export.
* ``timm``: the backbone of a ``timm:NAME`` run as a plain ``state_dict`` with timm's parameter names. It loads with
  ``strict=True`` into ``timm.create_model(NAME, num_classes=0)`` -- plus the image side and patch size a ViT was
  built for (``img_size=32, patch_size=4``), which :func:`timm_create_call` spells out. Checked on export.
* ``safetensors``: the whole encoder (backbone and head) for any backbone, with the model settings (and, for timm
  backbones, the ``timm.create_model`` arguments) as metadata.
* ``onnx``: the encoder behind its run's normalisation as an ONNX graph with a free batch axis, checked under
  onnxruntime on export (:mod:`invprop.evaluation.onnx_export`; the ``onnx`` extra).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
import torchvision
from torch import Tensor, nn

from invprop import config as cfgmod
from invprop.config import Config, from_saved
from invprop.engine import RunLock, load_checkpoint
from invprop.errors import ConfigError, RunBusyError
from invprop.evaluation.loading import ENCODER_PREFIX, checkpoint_path
from invprop.evaluation.pretrained import is_pretrained, native_input, pretrained_config, pretrained_state
from invprop.files import write_atomically
from invprop.models.backbones import adapt_resnet_stem
from invprop.models.timm_backbone import creation_kwargs, import_timm, is_timm_backbone, timm_architecture
from invprop.settings import close_match

#: invprop backbone -> (torchvision architecture, CIFAR stem).
TORCHVISION_BACKBONES = {
    "resnet18": ("resnet18", False),
    "resnet18_cifar": ("resnet18", True),
    "resnet50": ("resnet50", False),
}
#: Prefix of torchvision- or timm-named parameters inside an invprop ResNet or timm backbone.
RESNET_PREFIX = "backbone.net."
#: What checkpoints written before the input shape was recorded are taken to hold.
DEFAULT_INPUT = {"in_channels": 3, "image_size": None}


def torchvision_model(backbone: str, in_channels: int = 3) -> nn.Module:
    """The torchvision model an exported ``backbone`` loads into strictly (``fc`` = Identity)."""
    if backbone not in TORCHVISION_BACKBONES:
        raise ConfigError(
            f"backbone {backbone!r} has no torchvision counterpart ({', '.join(TORCHVISION_BACKBONES)} do); "
            "use --format safetensors"
        )
    arch, cifar_stem = TORCHVISION_BACKBONES[backbone]
    model = adapt_resnet_stem(getattr(torchvision.models, arch)(weights=None), in_channels, cifar_stem)
    model.fc = nn.Identity()
    return model


def timm_creation(state: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The timm model name and ``timm.create_model`` arguments (besides ``pretrained``) of the backbone of a
    checkpoint's run (a ``timm:NAME`` backbone)."""
    cfg = from_saved(state["config"], state["model"])
    if not is_timm_backbone(cfg.model.backbone):
        raise ConfigError(f"backbone {cfg.model.backbone!r} is not a timm model; use --format safetensors (or "
                          "torchvision for ResNets)")  # fmt: skip
    shape = {**DEFAULT_INPUT, **state.get("input", {})}
    options = dataclasses.replace(cfg.model.timm_options, pretrained=False, pretrained_file=None)
    kwargs = creation_kwargs(cfg.model.backbone, int(shape["in_channels"]), shape["image_size"], options)
    return timm_architecture(cfg.model.backbone), kwargs


def timm_create_call(checkpoint: Path) -> str:
    """The ``timm.create_model(...)`` call whose model loads the ``--format timm`` export of ``checkpoint``
    strictly."""
    arch, kwargs = timm_creation(load_checkpoint(checkpoint_path(checkpoint)))
    return _create_call(arch, kwargs)


def _create_call(arch: str, kwargs: dict[str, Any]) -> str:
    shown = {k: v for k, v in kwargs.items() if not (k == "in_chans" and v == 3)}
    return f"timm.create_model({arch!r}, {', '.join(f'{k}={v!r}' for k, v in shown.items())})"


def _encoder_weights(state: dict) -> dict[str, Tensor]:
    return {k[len(ENCODER_PREFIX) :]: v for k, v in state["model"].items() if k.startswith(ENCODER_PREFIX)}


@dataclass(frozen=True)
class Exported:
    """An export: the file written, and how to load it (one line; empty where the format needs none)."""

    path: Path
    how_to_load: str = ""


@dataclass(frozen=True)
class _Source:
    """What every exporter reads: the checkpoint file, its state, its config and its encoder's weights."""

    path: Path
    state: dict[str, Any]
    cfg: Config
    weights: dict[str, Tensor]


def _backbone_weights(source: _Source) -> dict[str, Tensor]:
    return {k[len(RESNET_PREFIX) :]: v.clone() for k, v in source.weights.items() if k.startswith(RESNET_PREFIX)}


def _torchvision(source: _Source, out: Path | None) -> Exported:
    backbone = _backbone_weights(source)
    in_channels = int(backbone["conv1.weight"].shape[1]) if "conv1.weight" in backbone else 3
    model = torchvision_model(source.cfg.model.backbone, in_channels)
    model.load_state_dict(backbone, strict=True)  # the promise of this format, checked before writing
    target = out or source.path.parent / f"{source.cfg.model.backbone}-torchvision.pth"
    return Exported(write_atomically(target, lambda handle: torch.save(backbone, handle)))


def _timm(source: _Source, out: Path | None) -> Exported:
    arch, kwargs = timm_creation(source.state)
    backbone = _backbone_weights(source)
    import_timm().create_model(arch, **kwargs).load_state_dict(backbone, strict=True)  # checked before writing
    target = out or source.path.parent / f"{arch}-timm.pth"
    path = write_atomically(target, lambda handle: torch.save(backbone, handle))
    return Exported(path, f"model = {_create_call(arch, kwargs)}; model.load_state_dict(torch.load({str(path)!r}))")


def _safetensors(source: _Source, out: Path | None) -> Exported:
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().cpu() for k, v in source.weights.items()}
    metadata = {
        "format": "invprop-encoder",
        "model": json.dumps(dataclasses.asdict(source.cfg.model)),
        "input": json.dumps({**DEFAULT_INPUT, **source.state.get("input", {})}),
        "epoch": str(source.state["epoch"]),
    }
    if is_timm_backbone(source.cfg.model.backbone) and source.cfg.model.colour_split is None:
        arch, kwargs = timm_creation(source.state)
        metadata["timm_create_model"] = json.dumps({"model_name": arch, **kwargs})
    target = out or source.path.parent / "encoder.safetensors"
    return Exported(write_atomically(target, lambda handle: handle.write(save(tensors, metadata=metadata))))


def _onnx(source: _Source, out: Path | None) -> Exported:
    from invprop.evaluation.onnx_export import export_onnx

    done = export_onnx(source.state, out or source.path.parent / "encoder.onnx")
    return Exported(done.path, done.instructions())


#: ``--format`` -> its exporter, ``(source, out) -> Exported``.
EXPORTERS: dict[str, Callable[[_Source, Path | None], Exported]] = {
    "torchvision": _torchvision, "timm": _timm, "safetensors": _safetensors, "onnx": _onnx,
}  # fmt: skip
#: The formats ``invprop export`` writes.
FORMATS = tuple(EXPORTERS)
#: The formats one model of another tool holds: an encoder of one backbone per channel group fits none of them.
SINGLE_MODEL_FORMATS = ("torchvision", "timm", "onnx")


def export_weights(
    checkpoint: Path, fmt: str, out: Path | None = None, overrides: Mapping[str, Any] | None = None
) -> Exported:
    """Write the weights of ``checkpoint`` in ``fmt`` (see the module docstring); returns what was written.
    ``checkpoint`` may be ``pretrained:timm:NAME`` (then ``out`` is needed, and ``overrides`` may give
    ``model.pretrained_file``): the encoder for the input its model was made for."""
    if fmt not in EXPORTERS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}{close_match(fmt, FORMATS)}")
    if is_pretrained(str(checkpoint)):  # an off-the-shelf encoder, for the input it was made for
        if out is None:
            raise ConfigError(f"{checkpoint} has no run folder to export into: give --out FILE")
        cfg = pretrained_config(
            str(checkpoint), cfgmod.from_dict(dict(overrides or {}), base=cfgmod.preset(cfgmod.DEFAULT_PRESET))
        )
        path, state = out, pretrained_state(cfg, native_input(cfg))
    else:
        path = checkpoint_path(checkpoint)
        state = load_checkpoint(path)
        cfg = from_saved(state["config"], state["model"])
    if fmt in SINGLE_MODEL_FORMATS and cfg.model.colour_split is not None:
        raise ConfigError(f"this encoder has one backbone per channel group (model.colour_split="
                          f"{cfg.model.colour_split}), which no single {fmt} model holds; use --format safetensors")  # fmt: skip
    with _writing_beside(path, out):
        return EXPORTERS[fmt](_Source(path, state, cfg, _encoder_weights(state)), out)


class ExportBusy(RunBusyError):
    """The run directory an export would be written into is in use: export elsewhere (``out``)."""


@contextlib.contextmanager
def _writing_beside(checkpoint: Path, out: Path | None) -> Iterator[None]:
    """Hold the run directory's lock while the export is written into it (not needed with ``--out``)."""
    if out is not None:
        yield
        return
    try:
        lock = RunLock(checkpoint.parent, "invprop export").acquire()
    except RunBusyError as busy:
        raise ExportBusy(busy.folder, busy.holder) from None
    try:
        yield
    finally:
        lock.release()
