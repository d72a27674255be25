"""What a run sends to an experiment tracker, and the record that lets a resumed run, or its report, reach the same
tracker run again.

The run's own files (``history.jsonl``, ``metrics.json``, ``config.yaml``) stay the record of a run; a tracker gets
copies. A tracker that needs a package names its extra in a one-line error when the package is missing.
"""

from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping, Sequence

from invprop.errors import ConfigError
from invprop.files import write_text_atomically

#: The file in a run folder naming the tracker run it reports to.
TRACKER_RECORD = "tracker.json"
#: How a tracker run ended (``close``'s ``status``).
FINISHED, STOPPED, FAILED = "finished", "stopped", "failed"


@dataclass(frozen=True)
class TrackerRecord:
    """Which tracker run a run folder reports to: the tracker's name, its id for the run, and where it lives."""

    tracker: str
    run_id: str
    project: str
    uri: str = ""

    def write(self, run_dir: Path) -> None:
        write_text_atomically(run_dir / TRACKER_RECORD, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, run_dir: Path) -> TrackerRecord | None:
        """The folder's record; None when it has none or it cannot be read."""
        path = run_dir / TRACKER_RECORD
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


def scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a history line, its epoch aside (a tracker's step)."""
    return {
        key: float(value)
        for key, value in record.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch"
    }


def flat_config(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys (``optim.lr``), the form trackers list parameters in."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(flat_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def require_package(module: str, extra: str, tracker: str) -> ModuleType:
    """Import ``module``, or a one-line error naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"log.tracker={tracker} needs the {module} package: pip install 'invprop[{extra}]' "
            "(or --set log.tracker=none)"
        ) from None


class Tracker(ABC):
    """One run's mirror in an experiment tracker.

    Args:
        run_dir: the run's folder (its name names the tracker run; its parent, e.g. a compare folder, groups runs).
        project: the W&B project or MLflow experiment.
        uri: where the tracker keeps its runs, for trackers that take one (empty: the tracker's own default).
    """

    #: The name of the tracker in ``log.tracker`` (set by :func:`invprop.trackers.register_tracker`).
    name = ""

    def __init__(self, run_dir: Path, project: str, uri: str = "") -> None:
        self.run_dir = run_dir
        self.project = project
        self.uri = uri

    @abstractmethod
    def start(self, config: Mapping[str, Any], resume: bool = False) -> None:
        """Open a tracker run and send the run's settings; with ``resume``, the run the folder's record names (a new
        one when it has none). A new run's record replaces any left by an earlier start in the folder."""

    def attach(self) -> None:
        """Open the tracker run the folder's record names to add to it (the report's figures), leaving its status
        as it is; by default, :meth:`start` resuming it."""
        self.start({}, resume=True)

    @abstractmethod
    def log_epoch(self, epoch: int, values: Mapping[str, float]) -> None:
        """One history line's numbers, at step ``epoch``."""

    @abstractmethod
    def log_summary(self, metrics: Mapping[str, Any], files: Sequence[Path]) -> None:
        """The run's final metrics, and its files (``metrics.json``, ``config.yaml``) as artifacts."""

    @abstractmethod
    def log_figures(self, figures: Sequence[Path]) -> None:
        """PNG figures (the report's) under the names of their files."""

    @abstractmethod
    def close(self, status: str = FINISHED) -> None:
        """End the tracker run: ``FINISHED``, ``STOPPED`` (to be resumed) or ``FAILED``."""
