"""Per-epoch history: a JSON-lines file, plus TensorBoard events when tensorboard is installed."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from invprop.files import write_text_atomically, writing

logger = logging.getLogger(__name__)

HISTORY_NAME = "history.jsonl"
#: Sub-folder of a run holding TensorBoard events.
TENSORBOARD_DIR = "tensorboard"


class History:
    """One JSON object per epoch in ``run_dir/history.jsonl``, scalars mirrored to TensorBoard.

    Every change rewrites the file atomically, so a failed write (full disk) leaves the previous lines intact and a
    reader never sees half a line. Write failures raise :class:`~invprop.errors.WriteError` naming the file.
    """

    def __init__(self, run_dir: Path, tensorboard: bool = True) -> None:
        self.path = run_dir / HISTORY_NAME
        self._writer: Any = None
        #: Bytes of the file before the last append (-1: it did not exist; None: nothing to take back).
        self._length_before_last: int | None = None
        self._tensorboard = tensorboard
        self._tensorboard_dir = run_dir / TENSORBOARD_DIR

    def _tensorboard_writer(self) -> Any:
        """TensorBoard's writer, opened at the first record (None when tensorboard is off or not installed)."""
        if self._writer is None and self._tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                logger.debug("tensorboard is not installed; writing the JSONL history only")
                self._tensorboard = False
                return None
            with writing(self._tensorboard_dir):
                self._writer = SummaryWriter(log_dir=str(self._tensorboard_dir))
        return self._writer

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
        self._length_before_last = None
        existed = self.path.exists()
        previous = self.path.read_text() if existed else ""
        write_text_atomically(self.path, previous + json.dumps(record) + "\n")
        self._length_before_last = len(previous.encode()) if existed else -1
        writer = self._tensorboard_writer()
        if writer is not None:
            with writing(self._tensorboard_dir):
                for key, value in record.items():
                    if isinstance(value, (int, float)) and key != "epoch":
                        writer.add_scalar(key, value, record["epoch"])
                writer.flush()

    def drop_last(self) -> None:
        """Take back the last :meth:`append` (its epoch's checkpoint could not be written), cutting the file in place:
        this needs no free space. A failure is only logged: a resumed run drops the line anyway."""
        if self._length_before_last is None:
            return
        try:
            if self._length_before_last < 0:  # the file was new
                self.path.unlink()
            else:
                os.truncate(self.path, self._length_before_last)
        except OSError as err:
            logger.warning("could not take back the last line of %s (%s); resuming the run drops it", self.path, err)
        self._length_before_last = None

    def close(self, quiet: bool = False) -> None:
        """Close the TensorBoard writer; ``quiet``: while another error is on its way out, only log a failure."""
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        try:
            with writing(self._tensorboard_dir):
                writer.close()
        except Exception as err:  # noqa: BLE001 - the error on its way out is the one to report
            if not quiet:
                raise
            logger.warning("could not close the TensorBoard events in %s (%s)", self._tensorboard_dir, err)
