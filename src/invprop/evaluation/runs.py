"""What ``ablate`` and ``compare`` share: each row of their table is an ordinary run directory, trained once and
reused, or resumed where it stopped, under the run directory's lock."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

from invprop.config import Config, from_saved, to_dict
from invprop.engine import CHECKPOINT_NAME, METRICS_NAME, RunLock, Trainer
from invprop.engine.run_settings import read_run_settings
from invprop.engine.signals import TrainingInterrupted
from invprop.errors import ConfigError

logger = logging.getLogger(__name__)


class RowInterrupted(TrainingInterrupted):
    """A row of a ``compare`` or ``ablate`` table stopped by a signal after saving: the way on is the table's own
    command (finished rows are reused), not ``train --resume``."""


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            out += _differences(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def check_same_config(run_dir: Path, cfg: Config) -> None:
    """A one-line error when ``run_dir`` holds a run of other settings (its rows cannot be reused)."""
    settings = read_run_settings(run_dir)
    if settings is None:
        return
    saved = to_dict(from_saved(settings.values))
    changed = _differences(saved, to_dict(cfg))
    if changed:
        raise ConfigError(
            f"{run_dir} was trained with a different configuration ({', '.join(changed[:4])} differ); "
            "use another --out to start a new table"
        )


def train_or_reuse(
    cfg: Config,
    run_dir: Path,
    label: str,
    progress: bool | None = None,
    while_locked: Callable[[dict[str, Any], bool], None] | None = None,
) -> dict[str, Any]:
    """The metrics of ``cfg``'s run in ``run_dir``: reused when finished, resumed when interrupted, else trained.

    ``while_locked(metrics, trained)`` runs before the run directory's lock is released (e.g. to measure what the
    training just did).
    """
    with RunLock(run_dir, f"invprop {label}"):
        check_same_config(run_dir, cfg)
        metrics_path = run_dir / METRICS_NAME
        if metrics_path.is_file():
            metrics: dict[str, Any] = json.loads(metrics_path.read_text())
            if metrics.get("epochs") == cfg.epochs:
                logger.info("%s: already finished in %s, reused", label, run_dir)
                if while_locked is not None:
                    while_locked(metrics, False)
                return metrics
        resume = (run_dir / CHECKPOINT_NAME).is_file()
        logger.info("%s: %s %s", label, "resuming" if resume else "training", run_dir)
        try:
            metrics = Trainer(cfg, run_dir, progress=progress, resuming=resume).fit(resume=resume).metrics
        except TrainingInterrupted as stop:  # the way on is the table's command, not train --resume
            raise RowInterrupted(stop.signum, stop.run_dir, stop.checkpoint, stop.where) from None
        if while_locked is not None:
            while_locked(metrics, True)
    return metrics


def fmt(value: Any, pattern: str = "{:.4f}") -> str:
    """A table cell: ``-`` for a missing value."""
    return "-" if value is None else pattern.format(value)


__all__ = ["RowInterrupted", "check_same_config", "fmt", "train_or_reuse"]
