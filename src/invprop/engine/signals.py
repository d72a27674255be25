"""Stopping a run cleanly on SIGINT/SIGTERM/SIGHUP: the first signal asks the loop to save and stop after the current
step, a second one acts at once (the previous handler is back). SIGHUP is what a closed terminal or ssh session
sends: it is treated as SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from invprop.errors import InvpropError

logger = logging.getLogger(__name__)

#: The signals that ask a run to stop (SIGHUP where the platform has it: a closed terminal).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM) + ((signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ())


class TrainingInterrupted(InvpropError):
    """Training stopped on signal ``signum`` (one of :data:`STOP_SIGNALS`) after saving a resumable checkpoint, ``checkpoint``, of
    the run in ``run_dir`` at ``where`` (e.g. "epoch 2, step 5/10"); ``exit_code`` is 128 + signal."""

    def __init__(
        self, signum: int, run_dir: str | os.PathLike[str], checkpoint: str | os.PathLike[str], where: str
    ) -> None:
        super().__init__(
            f"stopped by {signal.Signals(signum).name}: checkpoint saved at {where} in {os.fspath(checkpoint)}"
        )
        self.signum = signum
        self.run_dir = Path(run_dir)
        self.checkpoint = Path(checkpoint)
        self.where = where
        self.exit_code = 128 + signum


class StopRequested(Exception):
    """Raised inside an epoch when a stop was asked for; carries the epoch's progress to save."""

    def __init__(self, progress: dict[str, Any]) -> None:
        super().__init__("stop requested")
        self.progress = progress


class StopSignals:
    """While active (``with``), the :data:`STOP_SIGNALS` set :attr:`received` instead of killing the process.

    Handlers are installed only in the main thread (Python's rule); elsewhere the block runs without them.
    :meth:`request` records a stop that arrived another way (another process of a distributed run).
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def request(self, signum: int = signal.SIGTERM) -> None:
        """Record a stop request unless one is already recorded."""
        if self.received is None:
            self.received = signum

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        logger.warning("%s received: saving a checkpoint after this step (send it again to stop at once)",
                       signal.Signals(signum).name)  # fmt: skip
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


__all__ = ["STOP_SIGNALS", "StopRequested", "StopSignals", "TrainingInterrupted"]
