"""``log.tracker=wandb``: Weights & Biases (``pip install 'invprop[wandb]'``).

The W&B run is named after the run folder and grouped by its parent (a compare's methods share a group). Online or
offline is W&B's own choice: ``wandb login``, or ``WANDB_MODE=offline`` to write the run under ``RUN/wandb`` for a
later ``wandb sync``. A resumed run, and ``invprop report``, continue the same W&B run (its id is kept in
``tracker.json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from invprop.errors import InvpropError, first_line
from invprop.trackers.base import FAILED, FINISHED, Tracker, TrackerRecord, require_package
from invprop.trackers.registry import register_tracker

#: W&B's exit code for a run that ended in an error; a stopped run ends as finished and resumes by id.
_EXIT_CODES = {FINISHED: 0, FAILED: 1}


@register_tracker("wandb")
class WandbTracker(Tracker):
    """A W&B run: the settings as its config, one ``log`` per epoch at step = epoch, the final metrics as its
    summary, ``metrics.json`` and ``config.yaml`` saved with it, the report's figures as images."""

    def __init__(self, run_dir: Path, project: str, uri: str = "") -> None:
        super().__init__(run_dir, project, uri)
        self._run: Any = None

    def start(self, config: Mapping[str, Any], resume: bool = False) -> None:
        wandb = require_package("wandb", "wandb", self.name)
        record = TrackerRecord.read(self.run_dir) if resume else None
        run_id = record.run_id if record is not None and record.tracker == self.name else None
        settings = wandb.Settings(silent=True, console="off", disable_git=True, save_code=False, x_disable_stats=True)
        try:
            self._run = wandb.init(
                project=self.project,
                name=self.run_dir.name,
                group=self.run_dir.resolve().parent.name,
                dir=str(self.run_dir),
                config=dict(config),
                id=run_id,
                resume="allow" if run_id else None,
                settings=settings,
            )
        except Exception as err:  # noqa: BLE001 - W&B's many failures (no login, no network) become one line
            first = first_line(err)
            raise InvpropError(
                f"W&B could not start a run ({first}); log in with `wandb login`, set WANDB_MODE=offline, "
                "or --set log.tracker=none"
            ) from None
        TrackerRecord(self.name, self._run.id, self.project).write(self.run_dir)

    def log_epoch(self, epoch: int, values: Mapping[str, float]) -> None:
        self._run.log(dict(values), step=epoch)

    def log_summary(self, metrics: Mapping[str, Any], files: Sequence[Path]) -> None:
        self._run.summary.update({k: v for k, v in metrics.items() if v is not None})
        for path in files:
            self._run.save(str(path), base_path=str(path.parent), policy="now")

    def log_figures(self, figures: Sequence[Path]) -> None:
        import wandb

        self._run.log({f"report/{path.stem}": wandb.Image(str(path)) for path in figures})

    def close(self, status: str = FINISHED) -> None:
        if self._run is None:
            return
        run, self._run = self._run, None
        run.finish(exit_code=_EXIT_CODES.get(status, 0))
