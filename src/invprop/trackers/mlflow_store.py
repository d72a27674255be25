"""``log.tracker=mlflow``: MLflow (``pip install 'invprop[mlflow]'``).

The runs go to the experiment ``log.project`` at ``log.tracker_uri``; left empty, that is ``MLFLOW_TRACKING_URI``
when it is set, else a file store ``mlruns`` beside the run folder (a compare's methods share it). MLflow 3 keeps
its file store in maintenance mode and refuses it unless asked; invprop asks (``MLFLOW_ALLOW_FILE_STORE``) for its
own calls only, when the URI is a file store. A resumed run, and ``invprop report``, continue the same MLflow run
(its id is kept in ``tracker.json``).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

from invprop.errors import InvpropError, first_line
from invprop.trackers.base import FAILED, FINISHED, STOPPED, Tracker, TrackerRecord, flat_config, require_package
from invprop.trackers.registry import register_tracker

T = TypeVar("T")

#: MLflow's status for each way a run ends.
_STATUSES = {FINISHED: "FINISHED", STOPPED: "KILLED", FAILED: "FAILED"}
#: The longest parameter value MLflow stores.
_PARAM_LENGTH = 6000
#: The environment variable with which MLflow 3 accepts a file store.
_FILE_STORE_OPT_IN = "MLFLOW_ALLOW_FILE_STORE"
#: The default store's folder, beside the run folder.
DEFAULT_STORE = "mlruns"


@contextlib.contextmanager
def _file_store_allowed(uri: str) -> Iterator[None]:
    """Within the block, MLflow accepts ``uri`` when it is a file store; the environment is restored after."""
    if not uri.startswith("file:") or os.environ.get(_FILE_STORE_OPT_IN):
        yield
        return
    os.environ[_FILE_STORE_OPT_IN] = "true"
    try:
        yield
    finally:
        os.environ.pop(_FILE_STORE_OPT_IN, None)


@register_tracker("mlflow")
class MlflowTracker(Tracker):
    """An MLflow run: the settings as parameters (first start only: parameters cannot change), one batch of metrics
    per epoch at step = epoch, ``metrics.json`` and ``config.yaml`` as artifacts, the report's figures under
    ``report/``."""

    def __init__(self, run_dir: Path, project: str, uri: str = "") -> None:
        super().__init__(run_dir, project, uri)
        given = uri or os.environ.get("MLFLOW_TRACKING_URI") or str(run_dir.resolve().parent / DEFAULT_STORE)
        #: The tracking URI; a plain path (MLflow's own shorthand for a file store) as an absolute ``file:`` URI.
        self.store = given if "://" in given or given.startswith("file:") else Path(given).resolve().as_uri()
        self._client: Any = None
        self._run_id = ""
        self._attached = False

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with _file_store_allowed(self.store):
            return fn(*args, **kwargs)

    def attach(self) -> None:
        require_package("mlflow", "mlflow", self.name)
        from mlflow.tracking import MlflowClient

        record = TrackerRecord.read(self.run_dir)
        if record is None or record.tracker != self.name:
            raise InvpropError(f"{self.run_dir} has no MLflow run to add to")
        self.store = record.uri
        self._client = self._call(MlflowClient, tracking_uri=self.store)
        self._run_id, self._attached = record.run_id, True

    def start(self, config: Mapping[str, Any], resume: bool = False) -> None:
        require_package("mlflow", "mlflow", self.name)
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        record = TrackerRecord.read(self.run_dir) if resume else None
        resumed = record is not None and record.tracker == self.name and record.uri == self.store
        try:
            self._client = self._call(MlflowClient, tracking_uri=self.store)
            if resumed:
                assert record is not None
                self._run_id = record.run_id
                self._call(self._client.update_run, self._run_id, status="RUNNING")
                return
            experiment = self._call(self._client.get_experiment_by_name, self.project)
            experiment_id = (
                experiment.experiment_id
                if experiment is not None
                else self._call(self._client.create_experiment, self.project)
            )
            tags = {"invprop.run_dir": str(self.run_dir.resolve()), "invprop.group": self.run_dir.resolve().parent.name}
            run = self._call(self._client.create_run, experiment_id, tags=tags, run_name=self.run_dir.name)
            self._run_id = run.info.run_id
            params = [Param(k, str(v)[:_PARAM_LENGTH]) for k, v in flat_config(config).items()]
            self._call(self._client.log_batch, self._run_id, params=params)
        except InvpropError:
            raise
        except Exception as err:  # noqa: BLE001 - MLflow's failures (a bad URI, no server) become one line
            first = first_line(err)
            raise InvpropError(
                f"MLflow could not start a run at {self.store} ({first}); fix log.tracker_uri or --set log.tracker=none"
            ) from None
        TrackerRecord(self.name, self._run_id, self.project, self.store).write(self.run_dir)

    def log_epoch(self, epoch: int, values: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, epoch) for key, value in values.items()]
        self._call(self._client.log_batch, self._run_id, metrics=metrics)

    def log_summary(self, metrics: Mapping[str, Any], files: Sequence[Path]) -> None:
        for path in files:
            self._call(self._client.log_artifact, self._run_id, str(path))

    def log_figures(self, figures: Sequence[Path]) -> None:
        for path in figures:
            self._call(self._client.log_artifact, self._run_id, str(path), "report")

    def close(self, status: str = FINISHED) -> None:
        if self._client is None:
            return
        client, self._client = self._client, None
        if not self._attached:  # a report adds figures; the run's status is the training's
            self._call(client.set_terminated, self._run_id, status=_STATUSES[status])
