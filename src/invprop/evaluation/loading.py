"""What every evaluation protocol starts from: a checkpoint's (or a fresh) encoder and a labelled dataset."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from invprop import config as cfgmod
from invprop.config import Config, data_for, from_dict, from_saved
from invprop.data import DataSplits
from invprop.engine import CHECKPOINT_NAME, METRICS_NAME, RunLock, load_checkpoint, resolve_device
from invprop.errors import ConfigError, DataError, RunBusyError, WriteError
from invprop.evaluation.pretrained import is_pretrained, pretrained_config, pretrained_state
from invprop.evaluation.s4l import S4L_TASKS
from invprop.files import write_text_atomically
from invprop.models import Encoder, encoder_from, from_head_layer
from invprop.settings import close_match

logger = logging.getLogger(__name__)

#: Why a run directory may be readable and not writable (a teammate's run on read-only shared storage): its
#: evaluations are printed, not recorded.
UNWRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})

#: Prefix of the encoder's parameters inside a method's state dict.
ENCODER_PREFIX = "encoder."


@dataclass
class EvalContext:
    """A ready encoder (eval mode, on ``device``) and the labelled splits to evaluate it on.

    Attributes:
        checkpoint: the checkpoint file, or None for a randomly initialised encoder (the untrained baseline).
        epoch: training epochs behind the encoder (0 when untrained).
        image_size: the image side the encoder was built for (timm's patch-based models need it to rebuild it).
        pretrained: ``pretrained:timm:NAME`` for an off-the-shelf encoder (:mod:`invprop.evaluation.pretrained`).
    """

    cfg: Config
    dataset: str
    splits: DataSplits
    encoder: Encoder
    device: torch.device
    checkpoint: Path | None
    epoch: int
    image_size: int | None = None
    pretrained: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "checkpoint": str(self.checkpoint) if self.checkpoint else self.pretrained or "untrained",
            "dataset": self.dataset,
            "epoch": self.epoch,
            **({"from_head_layer": self.cfg.eval.from_head_layer} if self.cfg.eval.from_head_layer else {}),
        }


def checkpoint_path(checkpoint: Path) -> Path:
    return checkpoint / CHECKPOINT_NAME if checkpoint.is_dir() else checkpoint


def load_eval_context(
    checkpoint: Path | None,
    dataset: str | None = None,
    overrides: dict[str, Any] | None = None,
    require_labels: bool = True,
) -> EvalContext:
    """The encoder of ``checkpoint`` (or, with None, a fresh one from the dataset's preset) and ``dataset``'s splits.

    Args:
        checkpoint: a run's ``last.pt`` or its run directory; None builds an untrained encoder (seeded by ``seed``).
        dataset: evaluate on this dataset instead of the one trained on (transfer).
        overrides: nested config overrides (e.g. ``{"eval": {"knn_k": 20}}``).
        require_labels: raise a one-line error when the dataset has no labelled held-out split.
    """
    overrides = overrides or {}
    pretrained = str(checkpoint) if checkpoint is not None and is_pretrained(str(checkpoint)) else None
    if pretrained is not None:  # an off-the-shelf encoder, on the dataset asked for (its preset's by default)
        base = dataset if dataset in cfgmod.PRESETS else cfgmod.DEFAULT_PRESET
        given = from_dict(overrides, base=cfgmod.preset(base))
        if dataset is not None:
            given = from_dict({"data": {"name": dataset}}, base=given)
        cfg = pretrained_config(pretrained, given)
        path, state, epoch, checkpoint, dataset = None, pretrained_state(cfg), 0, None, cfg.data.name
    elif checkpoint is not None:
        path = checkpoint_path(checkpoint)
        state = load_checkpoint(path)
        cfg = from_dict(overrides, base=from_saved(state["config"], state["model"]))
        epoch = int(state["epoch"])
    else:
        path, state, epoch = None, None, 0
        base = dataset if dataset in cfgmod.PRESETS else cfgmod.DEFAULT_PRESET
        cfg = from_dict(overrides, base=cfgmod.preset(base))
        if dataset is not None:
            cfg = from_dict({"data": {"name": dataset}}, base=cfg)
    cfgmod.validate(cfg)
    task = cfg.eval.s4l
    if task is not None and task not in S4L_TASKS:
        raise ConfigError(f"eval.s4l={task}{close_match(task, S4L_TASKS)}: give one of {', '.join(S4L_TASKS)}")
    name = dataset or cfg.data.name
    foreign = dataset is not None and checkpoint is not None
    splits = data_for(cfg, name, foreign=foreign, subset=False)
    if require_labels and not splits.labelled:
        raise DataError(f"dataset {name!r} has no labelled held-out split; this evaluation needs one")
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    # the side the encoder was built for (a ViT's position embeddings), which transfer data may not share
    image_size = int(state.get("input", {}).get("image_size", splits.image_size)) if state else splits.image_size
    encoder = encoder_from(cfg.model, splits.in_channels, image_size, (splits.mean, splits.std))
    if state is not None:
        weights = {k[len(ENCODER_PREFIX) :]: v for k, v in state["model"].items() if k.startswith(ENCODER_PREFIX)}
        try:
            encoder.load_state_dict(weights)
        except RuntimeError:
            raise DataError(
                f"the encoder in {path} does not fit dataset {name!r} (different image channels?)"
            ) from None
    encoder = from_head_layer(encoder, cfg.eval.from_head_layer)
    encoder.to(device).eval()
    return EvalContext(cfg, name, splits, encoder, device, path, epoch, image_size, pretrained)


@contextlib.contextmanager
def recording_into(run_dir: Path, what: str) -> Iterator[bool]:
    """Hold ``run_dir``'s lock while an evaluation writes into it. Yields False, after one warning, when another
    process (a training run, which rewrites its metrics.json) holds it, or when the folder cannot be written
    (read-only storage, no permission): the result is then printed, not recorded."""
    lock = RunLock(run_dir, f"invprop eval ({what})")
    try:
        lock.acquire()
    except RunBusyError as busy:
        logger.warning("%s is being written by %s: the %s result is printed, not recorded in it", run_dir,
                       busy.holder, what)  # fmt: skip
        yield False
        return
    except WriteError as err:
        if err.errno not in UNWRITABLE:
            raise
        logger.warning("%s cannot be written here (%s): the %s result is printed, not recorded in it", run_dir,
                       errno.errorcode[err.errno], what)  # fmt: skip
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def record_result(ctx: EvalContext, protocol: str, results: dict[str, Any]) -> None:
    """Append ``results`` to ``metrics.json`` under ``eval`` when the checkpoint sits in a run directory that no
    other process is writing."""
    if ctx.checkpoint is None:
        return
    metrics_path = ctx.checkpoint.parent / METRICS_NAME
    if not metrics_path.is_file():
        return
    with recording_into(ctx.checkpoint.parent, protocol) as free:
        if free:
            metrics = json.loads(metrics_path.read_text())
            metrics.setdefault("eval", []).append({"protocol": protocol, **results})
            write_text_atomically(metrics_path, json.dumps(metrics, indent=2) + "\n")


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)
