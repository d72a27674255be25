"""Continued pretraining (``model.init_from``): a new run that starts from an earlier invprop run's weights.

The encoder takes every tensor of the source's encoder whose name and shape match, before the method is built (so
that a momentum teacher or target starts as a copy of the loaded encoder); the method's own state (teacher,
prototypes, centres, banks) is taken too when the source trained the same method on the same dataset. The optimiser,
its schedule and the epoch count start anew. What was loaded and what is new is logged, by module.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from invprop.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint
from invprop.errors import ConfigError

logger = logging.getLogger(__name__)

#: The prefix of the encoder's entries in a run's saved model state.
ENCODER = "encoder."


@dataclass(frozen=True)
class InitialWeights:
    """An earlier run's saved model state, and what it trained."""

    path: Path
    state: Mapping[str, Tensor]
    method: str
    dataset: str


@dataclass(frozen=True)
class Loaded:
    """Which entries of a module's state were taken from the source, and which keep their new initialisation."""

    loaded: list[str]
    new: list[str]


def initial_weights(source: str) -> InitialWeights:
    """The saved model state of the run ``source`` (its folder or its checkpoint file); a one-line error naming what
    to give when there is none."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise ConfigError(f"model.init_from={source}: no {CHECKPOINT_NAME} there; give an invprop run's folder or "
                          "its last.pt (for timm's pretrained weights, set model.pretrained=true)")  # fmt: skip
    state = load_checkpoint(path, "cpu")
    config: dict[str, Any] = state["config"]
    return InitialWeights(path, state["model"], str(config.get("method")), str(config.get("data", {}).get("name")))


def load_matching(
    module: nn.Module, weights: Mapping[str, Tensor], prefix: str = "", skip: str | None = None
) -> Loaded:
    """Copy into ``module`` each entry of ``weights`` named ``prefix + name`` whose shape matches the module's
    ``name`` (entries whose name starts with ``skip`` left out of both lists); the rest keeps its values."""
    loaded, new = [], []
    with torch.no_grad():
        for name, value in module.state_dict(keep_vars=True).items():
            if skip is not None and name.startswith(skip):
                continue
            saved = weights.get(prefix + name)
            if saved is not None and saved.shape == value.shape:
                value.copy_(saved.to(value.dtype))
                loaded.append(name)
            else:
                new.append(name)
    return Loaded(loaded, new)


def modules_of(names: list[str]) -> str:
    """The top-level module names of state entries, e.g. ``backbone, head`` (``none`` when there are none)."""
    tops = sorted({name.split(".")[0] for name in names})
    return ", ".join(tops) if tops else "none"


def own_state(source: InitialWeights, method: str, dataset: str) -> dict[str, Tensor]:
    """The source's method state beside its encoder, when it trained ``method`` on ``dataset`` (else nothing: a
    teacher, prototypes or a bank of another method or other images would not fit)."""
    if (source.method, source.dataset) != (method, dataset):
        return {}
    return {name: value for name, value in source.state.items() if not name.startswith(ENCODER)}


def log_loaded(source: InitialWeights, encoder: Loaded, method: Loaded) -> None:
    """Say what the run starts from: the entries taken and those left new (a momentum copy of the encoder among them
    starts from the loaded encoder), by module."""
    taken = f"encoder ({modules_of(encoder.loaded)}: {len(encoder.loaded)} tensors)"
    if method.loaded:
        taken += f" and {source.method}'s own state ({modules_of(method.loaded)}: {len(method.loaded)} tensors)"
    fresh = [f"encoder {modules_of(encoder.new)}"] if encoder.new else []
    if method.new:
        fresh.append(f"method {modules_of(method.new)}")
    logger.info(
        "model.init_from: loaded the %s from %s (a %s run on %s); new: %s", taken, source.path, source.method,
        source.dataset, "; ".join(fresh) or "nothing",
    )  # fmt: skip


__all__ = ["ENCODER", "InitialWeights", "Loaded", "initial_weights", "load_matching", "log_loaded", "own_state"]
