"""Per-epoch history: a JSON-lines file, plus TensorBoard events when tensorboard is installed."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from invprop.files import write_text_atomically

logger = logging.getLogger(__name__)

HISTORY_NAME = "history.jsonl"


class History:
    """Appends one JSON object per epoch to ``run_dir/history.jsonl``; mirrors scalars to TensorBoard."""

    def __init__(self, run_dir: Path, tensorboard: bool = True) -> None:
        self.path = run_dir / HISTORY_NAME
        self._writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
            except ImportError:
                logger.debug("tensorboard is not installed; writing the JSONL history only")

    def truncate_after(self, epoch: int) -> None:
        """Drop records of epochs after ``epoch`` (written by a run that stopped before its checkpoint)."""
        records = [r for r in self.read() if r.get("epoch", 0) <= epoch]
        write_text_atomically(self.path, "".join(json.dumps(r) + "\n" for r in records))

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self._writer.add_scalar(key, value, record["epoch"])
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
