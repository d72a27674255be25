"""``log.tracker=tensorboard`` (the default): scalars and figures as TensorBoard events in the run's ``tensorboard``
folder, when tensorboard is installed (``pip install 'invprop[tensorboard]'``); without it, the run's own files only."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from invprop.files import writing
from invprop.trackers.base import FINISHED, Tracker, TrackerRecord
from invprop.trackers.registry import register_tracker

logger = logging.getLogger(__name__)

#: Sub-folder of a run holding TensorBoard events.
TENSORBOARD_DIR = "tensorboard"


@register_tracker("tensorboard")
class TensorBoardTracker(Tracker):
    """Events written at each epoch, the report's figures as images; a failed write stops the run like any other (a
    ``WriteError`` naming the folder)."""

    def __init__(self, run_dir: Path, project: str, uri: str = "") -> None:
        super().__init__(run_dir, project, uri)
        self.folder = run_dir / TENSORBOARD_DIR
        self._writer: Any = None
        self._available = True

    def start(self, config: Mapping[str, Any], resume: bool = False) -> None:
        pass  # the writer opens at the first event, so a run that records nothing leaves no folder

    def _open(self) -> Any:
        """TensorBoard's writer (None when tensorboard is not installed)."""
        if self._writer is None and self._available:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                logger.debug("tensorboard is not installed; writing the JSONL history only")
                self._available = False
                return None
            with writing(self.folder):
                self._writer = SummaryWriter(log_dir=str(self.folder))
            TrackerRecord(self.name, TENSORBOARD_DIR, self.project).write(self.run_dir)  # the report's figures
        return self._writer

    def log_epoch(self, epoch: int, values: Mapping[str, float]) -> None:
        writer = self._open()
        if writer is None:
            return
        with writing(self.folder):
            for key, value in values.items():
                writer.add_scalar(key, value, epoch)
            writer.flush()

    def log_summary(self, metrics: Mapping[str, Any], files: Sequence[Path]) -> None:
        pass  # the scalars are all in the events already; the files sit beside them in the run folder

    def log_figures(self, figures: Sequence[Path]) -> None:
        writer = self._open()
        if writer is None:
            return
        with writing(self.folder):
            for path in figures:
                with Image.open(path) as image:
                    pixels = np.asarray(image.convert("RGB"))
                writer.add_image(f"report/{path.stem}", pixels, dataformats="HWC")
            writer.flush()

    def close(self, status: str = FINISHED) -> None:
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        with writing(self.folder):
            writer.close()
