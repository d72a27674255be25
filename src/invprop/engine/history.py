"""Per-epoch history: a JSON-lines file, plus TensorBoard events when tensorboard is installed."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

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
        previous = self.path.read_text() if self.path.exists() else ""
        write_text_atomically(self.path, previous + json.dumps(record) + "\n")
        writer = self._tensorboard_writer()
        if writer is not None:
            with writing(self._tensorboard_dir):
                for key, value in record.items():
                    if isinstance(value, (int, float)) and key != "epoch":
                        writer.add_scalar(key, value, record["epoch"])
                writer.flush()

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
