"""Per-epoch history: a JSON-lines file, mirrored to the run's experiment tracker (``log.tracker``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from invprop.errors import WriteError
from invprop.files import write_text_atomically
from invprop.trackers import FAILED, FINISHED, TENSORBOARD_DIR, Tracker, scalars

logger = logging.getLogger(__name__)

HISTORY_NAME = "history.jsonl"
__all__ = ["HISTORY_NAME", "TENSORBOARD_DIR", "History"]


class History:
    """One JSON object per epoch in ``run_dir/history.jsonl``, its numbers mirrored to ``tracker`` when there is one.

    Every change rewrites the file atomically, so a failed write (full disk) leaves the previous lines intact and a
    reader never sees half a line. Write failures raise :class:`~invprop.errors.WriteError` naming the file.
    """

    def __init__(self, run_dir: Path, tracker: Tracker | None = None) -> None:
        self.path = run_dir / HISTORY_NAME
        self.tracker = tracker

    def truncate_after(self, epoch: int) -> None:
        """Drop records of epochs after ``epoch`` (written by a run that stopped before its checkpoint); the file
        is left untouched when there are none."""
        records = self.read()
        kept = [r for r in records if r.get("epoch", 0) <= epoch]
        if len(kept) != len(records):
            write_text_atomically(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def append(self, record: dict[str, Any]) -> None:
        previous = self.path.read_text() if self.path.exists() else ""
        write_text_atomically(self.path, previous + json.dumps(record) + "\n")
        if self.tracker is not None:
            self._mirror(lambda tracker: tracker.log_epoch(record["epoch"], scalars(record)))

    def _mirror(self, send: Callable[[Tracker], None]) -> None:
        """Send to the tracker. A file the run cannot write (TensorBoard's events) stops the run as any other write
        does; any other failure of a tracker (a server out of reach) is a warning, and the run goes on with its own
        files only: they are the record, the tracker a copy."""
        assert self.tracker is not None
        try:
            send(self.tracker)
        except WriteError:
            raise
        except Exception as err:  # noqa: BLE001 - a tracker's failure must not stop the training
            logger.warning("the %s tracker failed (%s); the run goes on without it (its history.jsonl and "
                           "metrics.json are complete)", self.tracker.name, err)  # fmt: skip
            self.close(FAILED, quiet=True)

    def restore(self, record: Mapping[str, Any] | None) -> bool:
        """Append ``record``, the checkpoint's last finished epoch, when the file ends before it (a process stopped
        between writing the checkpoint and the epoch's line); True when it was appended."""
        if record is None:
            return False
        records = self.read()
        if records and records[-1].get("epoch", 0) >= record["epoch"]:
            return False
        self.append(dict(record))
        return True

    def finish(self, metrics: Mapping[str, Any], files: Sequence[Path]) -> None:
        """Send the run's final ``metrics`` and ``files`` to the tracker and close it."""
        try:
            if self.tracker is not None:
                self._mirror(lambda tracker: tracker.log_summary(metrics, files))
        finally:
            self.close()

    def close(self, status: str = FINISHED, quiet: bool = False) -> None:
        """End the tracker's run as ``status``; ``quiet``: while another error is on its way out, only log a
        failure to close."""
        if self.tracker is None:
            return
        tracker, self.tracker = self.tracker, None
        try:
            tracker.close(status)
        except Exception as err:  # noqa: BLE001 - the error on its way out is the one to report
            if not quiet:
                raise
            logger.warning("could not close the run's %s tracker (%s)", tracker.name, err)
