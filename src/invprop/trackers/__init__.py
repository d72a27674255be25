"""Experiment trackers (``log.tracker``): TensorBoard, Weights & Biases, MLflow or none.

Each is a :class:`Tracker` registered by name in :data:`TRACKERS`; :func:`open_tracker` builds the one a run asks
for, and :func:`reopen_tracker` the one a finished run reported to (``invprop report`` sends its figures there).
"""

from __future__ import annotations

from pathlib import Path

from invprop.trackers import mlflow_store, none, tensorboard, weights_and_biases  # noqa: F401 - they register
from invprop.trackers.base import FAILED, FINISHED, STOPPED, TRACKER_RECORD, Tracker, TrackerRecord, scalars
from invprop.trackers.registry import TRACKERS, register_tracker
from invprop.trackers.tensorboard import TENSORBOARD_DIR

__all__ = [
    "FAILED",
    "FINISHED",
    "STOPPED",
    "TENSORBOARD_DIR",
    "TRACKERS",
    "TRACKER_RECORD",
    "Tracker",
    "TrackerRecord",
    "open_tracker",
    "register_tracker",
    "reopen_tracker",
    "scalars",
]


def open_tracker(name: str, run_dir: Path, project: str, uri: str = "") -> Tracker:
    """The tracker ``name`` for the run in ``run_dir`` (not yet started)."""
    return TRACKERS.get(name)(run_dir, project, uri)


def reopen_tracker(run_dir: Path) -> Tracker | None:
    """The tracker that ``run_dir``'s record names, attached to that tracker run (:meth:`Tracker.attach`); None when
    the folder has no record (``none`` keeps none, nor does TensorBoard before its first event)."""
    record = TrackerRecord.read(run_dir)
    if record is None or record.tracker not in TRACKERS:
        return None
    tracker = open_tracker(record.tracker, run_dir, record.project, record.uri)
    tracker.attach()
    return tracker
