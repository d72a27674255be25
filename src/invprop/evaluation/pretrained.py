"""Off-the-shelf encoders as rows and sources: a timm model with its pretrained weights, measured as it is (no
training) by the protocols a trained run goes through -- the first thing a practitioner compares an SSL run with.

``pretrained:timm:NAME`` names one (its weights from timm's local cache, or ``model.pretrained_file=PATH``; a
machine without them gets one line saying where to put the file). It is measured through a *pretrained run*: a
folder holding its encoder -- the backbone behind the ``identity`` head, so that its embedding is its features --
in a checkpoint of epoch 0, with ``config.yaml``, an empty ``history.jsonl`` and ``metrics.json`` (kNN on the run's
held-out split), which every
protocol that reads a run (linear probe, label-free criteria, embed, neighbors, export) reads unchanged. The data
are normalised with the model's own statistics, as ``model.pretrained`` does for training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from invprop.config import Config, data_for, from_dict, to_dict, validate
from invprop.data import DataSplits
from invprop.engine import CHECKPOINT_NAME, HISTORY_NAME, METRICS_NAME, RunLock, save_checkpoint
from invprop.engine.device import resolve_device
from invprop.engine.monitor import knn_monitor, raw_pixel_baseline
from invprop.engine.run_settings import CONFIG_NAME, write_run_settings
from invprop.errors import ConfigError
from invprop.files import write_text_atomically
from invprop.models import Encoder, encoder_from
from invprop.models.timm_backbone import is_timm_backbone, model_input

#: What names an off-the-shelf encoder where a method or a checkpoint is expected.
PREFIX = "pretrained:"
#: The head of a pretrained encoder: none, its embedding is its backbone's features.
HEAD = "identity"


def is_pretrained(name: str) -> bool:
    """True for ``pretrained:timm:NAME``."""
    return name.startswith(PREFIX)


def pretrained_backbone(name: str) -> str:
    """``timm:NAME`` of ``pretrained:timm:NAME``; a one-line error for anything else."""
    backbone = name.removeprefix(PREFIX)
    if not is_timm_backbone(backbone):
        raise ConfigError(f"{name!r}: an off-the-shelf encoder is named pretrained:timm:NAME, a timm model with its "
                          "pretrained weights (e.g. pretrained:timm:resnet50)")  # fmt: skip
    return backbone


def pretrained_config(name: str, base: Config) -> Config:
    """``base`` (the dataset's preset, with the user's settings) with the encoder ``name`` names: its backbone, its
    pretrained weights (``model.pretrained_file`` as ``base`` gives it), no head and nothing else of a training run's
    model."""
    values = to_dict(base)
    values["model"].update(backbone=pretrained_backbone(name), pretrained=True, head=HEAD, init_from=None,
                           colour_split=None, freeze_patch_embed=False)  # fmt: skip
    return validate(from_dict(values))


def native_input(cfg: Config) -> dict[str, Any]:
    """The input ``cfg``'s pretrained model was made for: three channels, its native side and normalisation."""
    wanted = model_input(cfg.model.backbone)
    return {"in_channels": 3, "image_size": wanted.image_size, "mean": list(wanted.mean), "std": list(wanted.std)}


def _shape_of(data: DataSplits) -> dict[str, Any]:
    """The input a run's data gives an encoder: channels, side, normalisation."""
    return {"in_channels": data.in_channels, "image_size": data.image_size,
            "mean": [float(v) for v in data.mean], "std": [float(v) for v in data.std]}  # fmt: skip


def _encoder_and_state(cfg: Config, shape: dict[str, Any]) -> tuple[Encoder, dict[str, Any]]:
    """``cfg``'s pretrained encoder built for ``shape``, and its checkpoint state at epoch 0."""
    torch.manual_seed(cfg.seed)
    norm = (shape["mean"], shape["std"])
    encoder = encoder_from(cfg.model, int(shape["in_channels"]), int(shape["image_size"]), norm)
    state = {
        "model": {f"encoder.{k}": v for k, v in encoder.state_dict().items()},
        "config": to_dict(cfg),
        "epoch": 0,
        "seconds": 0.0,
        "input": dict(shape),
    }
    return encoder, state


def pretrained_state(cfg: Config, shape: dict[str, Any] | None = None) -> dict[str, Any]:
    """A checkpoint's state of ``cfg``'s pretrained encoder at epoch 0 (what :func:`invprop.engine.load_checkpoint`
    would return): its weights, its config and the input it takes -- ``shape`` (``in_channels``, ``image_size``,
    ``mean``, ``std``), by default that of ``cfg``'s data."""
    return _encoder_and_state(cfg, shape if shape is not None else _shape_of(data_for(cfg, subset=False)))[1]


@torch.no_grad()
def pretrained_run(cfg: Config, run_dir: Path) -> dict[str, Any]:
    """The metrics of ``cfg``'s pretrained encoder, written as a run into ``run_dir`` (reused when it is there with
    the same settings): epochs 0, no training time, kNN on the held-out split where it is labelled."""
    from invprop.evaluation.runs import check_same_config

    with RunLock(run_dir, "invprop pretrained encoder"):
        check_same_config(run_dir, cfg)
        metrics_path = run_dir / METRICS_NAME
        if metrics_path.is_file() and (run_dir / CHECKPOINT_NAME).is_file():
            saved: dict[str, Any] = json.loads(metrics_path.read_text())
            return saved
        data = data_for(cfg)  # (a subset keeps the dataset's channels, side and normalisation)
        encoder, state = _encoder_and_state(cfg, _shape_of(data))
        save_checkpoint(state, run_dir / CHECKPOINT_NAME)
        write_run_settings(cfg, [], run_dir / CONFIG_NAME)
        write_text_atomically(run_dir / HISTORY_NAME, "")  # a run of no epochs: no curves, a report still reads it
        metrics: dict[str, Any] = {"epochs": 0, "seconds": 0.0}
        if data.labelled and data.memory is not None and data.test is not None:
            device = resolve_device(cfg.device)
            encoder.to(device).eval()
            k, sigma, workers = cfg.eval.knn_k, cfg.eval.knn_sigma, cfg.data.num_workers
            metrics.update(knn_monitor(encoder, data.memory, data.test, data.num_classes, device, k, sigma, workers))
            raw = raw_pixel_baseline(data.memory, data.test, data.num_classes, k, sigma, workers, device)
            metrics.update(raw or {})
        write_text_atomically(metrics_path, json.dumps(metrics, indent=2) + "\n")
        return metrics


__all__ = ["HEAD", "PREFIX", "is_pretrained", "pretrained_backbone", "pretrained_config", "pretrained_run",
           "pretrained_state", "native_input"]  # fmt: skip
