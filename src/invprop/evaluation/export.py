"""``invprop export``: a checkpoint's weights in forms other tools load.

* ``torchvision``: the backbone of a ResNet run as a plain ``state_dict`` with torchvision's parameter names, no
  ``fc``. It loads with ``strict=True`` into ``torchvision.models.resnet18()``/``resnet50()`` once ``fc`` is replaced
  by ``torch.nn.Identity()`` (and, for the CIFAR stem, ``conv1``/``maxpool`` as :func:`torchvision_model` does) --
  the form detection and segmentation toolkits consume. Checked on export.
* ``safetensors``: the whole encoder (backbone and head) for any backbone, with the model settings as metadata.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path
from typing import Iterator

import torch
import torchvision
from torch import Tensor, nn

from invprop.config import from_saved
from invprop.engine import RunLock, load_checkpoint
from invprop.errors import ConfigError, RunBusyError
from invprop.evaluation.loading import ENCODER_PREFIX, checkpoint_path
from invprop.files import write_atomically
from invprop.models.backbones import adapt_resnet_stem

FORMATS = ("torchvision", "safetensors")
#: invprop backbone -> (torchvision architecture, CIFAR stem).
TORCHVISION_BACKBONES = {
    "resnet18": ("resnet18", False),
    "resnet18_cifar": ("resnet18", True),
    "resnet50": ("resnet50", False),
}
#: Prefix of torchvision-named parameters inside an invprop ResNet backbone.
RESNET_PREFIX = "backbone.net."


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


def _encoder_weights(state: dict) -> dict[str, Tensor]:
    return {k[len(ENCODER_PREFIX) :]: v for k, v in state["model"].items() if k.startswith(ENCODER_PREFIX)}


def export_weights(checkpoint: Path, fmt: str, out: Path | None = None) -> Path:
    """Write the weights of ``checkpoint`` in ``fmt`` (see the module docstring); returns the file written."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    path = checkpoint_path(checkpoint)
    state = load_checkpoint(path)
    cfg = from_saved(state["config"], state["model"])
    weights = _encoder_weights(state)
    if fmt == "torchvision":
        backbone = {k[len(RESNET_PREFIX) :]: v.clone() for k, v in weights.items() if k.startswith(RESNET_PREFIX)}
        in_channels = int(backbone["conv1.weight"].shape[1]) if "conv1.weight" in backbone else 3
        model = torchvision_model(cfg.model.backbone, in_channels)
        model.load_state_dict(backbone, strict=True)  # the promise of this format, checked before writing
        target = out or path.parent / f"{cfg.model.backbone}-torchvision.pth"
        with _writing_beside(path, out):
            return write_atomically(target, lambda handle: torch.save(backbone, handle))
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
    metadata = {
        "format": "invprop-encoder",
        "model": json.dumps(dataclasses.asdict(cfg.model)),
        "epoch": str(state["epoch"]),
    }
    target = out or path.parent / "encoder.safetensors"
    with _writing_beside(path, out):
        return write_atomically(target, lambda handle: handle.write(save(tensors, metadata=metadata)))


@contextlib.contextmanager
def _writing_beside(checkpoint: Path, out: Path | None) -> Iterator[None]:
    """Hold the run directory's lock while the export is written into it (not needed with ``--out``)."""
    if out is not None:
        yield
        return
    try:
        lock = RunLock(checkpoint.parent, "invprop export").acquire()
    except RunBusyError as busy:
        raise RunBusyError(
            f"{checkpoint.parent} is in use by {busy.holder}; export elsewhere with --out FILE"
        ) from None
    try:
        yield
    finally:
        lock.release()
