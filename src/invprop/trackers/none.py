"""``log.tracker=none``: the run's own files only."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from invprop.trackers.base import FINISHED, Tracker
from invprop.trackers.registry import register_tracker


@register_tracker("none")
class NoTracker(Tracker):
    """Sends nothing anywhere."""

    def start(self, config: Mapping[str, Any], resume: bool = False) -> None:
        pass

    def log_epoch(self, epoch: int, values: Mapping[str, float]) -> None:
        pass

    def log_summary(self, metrics: Mapping[str, Any], files: Sequence[Path]) -> None:
        pass

    def log_figures(self, figures: Sequence[Path]) -> None:
        pass

    def close(self, status: str = FINISHED) -> None:
        pass
