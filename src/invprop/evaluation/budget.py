"""Equal wall-clock comparison: ``invprop compare --budget 20m`` gives every method the same training time instead of
the same epochs.

A short timed probe of a method on this machine -- a throwaway trainer runs the first ``k`` and then ``2 k``
batches of an epoch, so that the difference is the batches' time and the rest the epoch's start (a clustering
method's k-means), plus one kNN evaluation -- gives its seconds per epoch; the budget divided by them is the epochs
it gets, so that its schedule and warm-up are planned for the run it will have. The probe is kept in the method's
``compare.json``: a resumed comparison gives every method the epochs it had.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from invprop.config import Config
from invprop.engine import Trainer
from invprop.errors import ConfigError

#: Batches of the probe's first stretch (the second is twice as long); fewer on a small dataset.
PROBE_BATCHES = 8
#: The key of the budget entry in a method's ``compare.json``.
BUDGET_KEY = "budget"
#: Units of ``--budget``.
_UNITS = {"h": 3600, "m": 60, "s": 1}


def parse_budget(text: str) -> float:
    """Seconds of a budget written like ``90s``, ``20m``, ``1h`` or ``1h30m``; a one-line error otherwise.

    Example:
        >>> parse_budget("20m"), parse_budget("1h30m"), parse_budget("45")
        (1200.0, 5400.0, 45.0)
    """
    compact = text.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", compact):
        seconds = float(compact)
    elif re.fullmatch(r"(\d+(\.\d+)?[hms])+", compact):
        seconds = sum(float(n) * _UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([hms])", compact))
    else:
        raise ConfigError(f"--budget {text!r} is not a duration; write it like 90s, 20m, 1h or 1h30m")
    if seconds <= 0:
        raise ConfigError(f"--budget must be positive, got {text!r}")
    return seconds


@dataclass(frozen=True)
class Probe:
    """What a method's epoch costs on this machine.

    Attributes:
        step_seconds: one batch (forward, backward, optimiser, upkeep).
        start_seconds: the epoch's start (e.g. clustering the training set).
        eval_seconds: one kNN evaluation (it runs every ``eval.every`` epochs).
        batches: the batches of an epoch.
        every: ``eval.every``.
    """

    step_seconds: float
    start_seconds: float
    eval_seconds: float
    batches: int
    every: int

    @property
    def epoch_seconds(self) -> float:
        """An epoch's training, its start and its share of the evaluations."""
        return self.start_seconds + self.batches * self.step_seconds + self.eval_seconds / self.every

    def epochs_for(self, budget_seconds: float) -> int:
        """The epochs that fit in ``budget_seconds`` (at least one)."""
        return max(1, math.floor(budget_seconds / self.epoch_seconds))


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def probe(cfg: Config) -> Probe:
    """Time ``cfg``'s method on this machine with a throwaway trainer (nothing is written)."""
    with tempfile.TemporaryDirectory(prefix="invprop-probe-") as folder:
        trainer = Trainer(cfg, Path(folder) / "probe", progress=False)
        k = max(1, min(PROBE_BATCHES, trainer.batches_per_epoch // 3))
        short = _timed(lambda: trainer.train_epoch(1, max_steps=k))
        long = _timed(lambda: trainer.train_epoch(1, max_steps=2 * k))
        step = max(long - short, 0.0) / k
        start = max(short - k * step, 0.0)
        evaluation = _timed(trainer.evaluate)
    return Probe(step, start, evaluation, trainer.batches_per_epoch, cfg.eval.every)


def planned_epochs(cfg: Config, measures_path: Path, budget_seconds: float) -> tuple[int, dict[str, Any]]:
    """The epochs ``cfg``'s method gets within ``budget_seconds``, and the budget entry for its ``compare.json``:
    the one saved there for the same budget, else a new probe's."""
    if measures_path.is_file():
        saved = json.loads(measures_path.read_text()).get(BUDGET_KEY)
        if isinstance(saved, dict) and saved.get("seconds") == budget_seconds:
            return int(saved["epochs"]), saved
    measured = probe(cfg)
    epochs = measured.epochs_for(budget_seconds)
    entry = {"seconds": budget_seconds, "epochs": epochs, "epoch_seconds": measured.epoch_seconds,
             "probe": asdict(measured)}  # fmt: skip
    return epochs, entry


__all__ = ["BUDGET_KEY", "PROBE_BATCHES", "Probe", "parse_budget", "planned_epochs", "probe"]
