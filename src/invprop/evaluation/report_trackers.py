"""The report's figures, sent to the tracker each of its runs reported to while it trained (``log.tracker``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from invprop.trackers import reopen_tracker

logger = logging.getLogger(__name__)


def send_figures(run_dirs: Sequence[Path], figures: Sequence[Path]) -> list[Path]:
    """Send ``figures`` to the tracker run of each of ``run_dirs`` that keeps a tracker record; returns the runs
    reached. The report is written first: a tracker that cannot be reached is a warning, not an error."""
    reached: list[Path] = []
    for run_dir in run_dirs:
        try:
            tracker = reopen_tracker(run_dir)
            if tracker is None:
                continue
            tracker.log_figures(figures)
            tracker.close()
        except Exception as err:  # noqa: BLE001 - the report is written; a tracker's failure must not undo that
            logger.warning("the report is written, but its figures could not reach %s's tracker (%s)", run_dir, err)
            continue
        reached.append(run_dir)
        logger.info("sent the report's %d figure(s) to %s's tracker", len(figures), run_dir)
    return reached
