"""A run's settings file, ``config.yaml``: the values in force, and the story of every change made on resume.

The top-level keys are the run's settings as they are now, readable by :func:`invprop.config.from_saved`. A run
resumed with other values (``--resume --allow-changes``, or a key that may change, such as a longer ``epochs``)
keeps the full story under :data:`CHANGES_KEY`, one entry per change, oldest first::

    changes:
    - epoch: 3            # the first epoch trained with the new values
      settings:
        optim.batch_size: {from: 128, to: 64}

The same entry goes into that epoch's line of ``history.jsonl`` (``settings_changed``). What the settings gave for
the run -- its peak learning rate after scaling with the batch, the warm-up it got -- is written under
:data:`DERIVED_KEY`, for the reader; it is not a setting and is ignored when the file is read back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from invprop.config import Config, SettingChange, to_dict
from invprop.errors import CheckpointError
from invprop.files import write_text_atomically

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.yaml"
#: config.yaml's key for the story of changes (not a setting).
CHANGES_KEY = "changes"
#: config.yaml's key for what the settings gave for the run (not settings).
DERIVED_KEY = "derived"
#: history.jsonl's key for the changes that took effect at an epoch.
HISTORY_CHANGES_KEY = "settings_changed"

#: One change as stored: ``{"epoch": E, "settings": {key: {"from": a, "to": b}}}``.
Change = dict[str, Any]


@dataclass
class RunSettings:
    """What a run's ``config.yaml`` holds: the values in force and the changes made on resume (oldest first)."""

    values: dict[str, Any]
    changes: list[Change] = field(default_factory=list)


def split_changes(values: dict[str, Any]) -> RunSettings:
    """Separate the story of changes from the settings of a loaded ``config.yaml`` (or a ``--config`` file that
    is one)."""
    values = dict(values)
    values.pop(DERIVED_KEY, None)
    changes = values.pop(CHANGES_KEY, None) or []
    if not isinstance(changes, list) or not all(isinstance(c, dict) and "epoch" in c for c in changes):
        raise CheckpointError(f"{CHANGES_KEY} in a run's {CONFIG_NAME} must be a list of {{epoch, settings}} entries")
    return RunSettings(values, changes)


def read_run_settings(run_dir: Path) -> RunSettings | None:
    """The settings file of ``run_dir`` (None when it has none)."""
    path = run_dir / CONFIG_NAME
    if not path.is_file():
        return None
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise CheckpointError(f"{path} cannot be read ({str(err).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise CheckpointError(f"{path} does not hold a mapping of settings")
    return split_changes(values)


def write_run_settings(
    cfg: Config, changes: Sequence[Change], path: Path, derived: dict[str, Any] | None = None
) -> None:
    """Write ``config.yaml``: ``cfg``'s values, then the story of ``changes`` when there is one, then ``derived``."""
    values = to_dict(cfg)
    if changes:
        values[CHANGES_KEY] = list(changes)
    if derived:
        values[DERIVED_KEY] = dict(derived)
    write_text_atomically(path, yaml.safe_dump(values, sort_keys=False))


def record_changes(changes: Sequence[Change], epoch: int, made: Sequence[SettingChange]) -> list[Change]:
    """``changes`` with the changes ``made`` taking effect at ``epoch``.

    An entry already at ``epoch`` (its values were never trained through a whole epoch) is merged with the new
    one: each key keeps its first ``from`` and takes the latest ``to``, and a key back at its ``from`` is dropped.

    Example:
        >>> first = record_changes([], 3, [SettingChange("optim.lr", 0.1, 0.2, False)])
        >>> first
        [{'epoch': 3, 'settings': {'optim.lr': {'from': 0.1, 'to': 0.2}}}]
        >>> record_changes(first, 3, [SettingChange("optim.lr", 0.2, 0.1, False)])
        []
    """
    story = [dict(entry) for entry in changes]
    if not made:
        return story
    settings: dict[str, dict[str, Any]] = {}
    if story and story[-1]["epoch"] == epoch:
        settings = {key: dict(value) for key, value in story.pop()["settings"].items()}
    for change in made:
        before = settings.get(change.key, {"from": change.saved})["from"]
        settings[change.key] = {"from": before, "to": change.new}
    settings = {key: value for key, value in settings.items() if value["from"] != value["to"]}
    if settings:
        story.append({"epoch": epoch, "settings": settings})
    return story


def changes_at(changes: Sequence[Change], epoch: int) -> dict[str, Any] | None:
    """The settings changed at ``epoch`` (None when none were)."""
    for entry in changes:
        if entry["epoch"] == epoch:
            return dict(entry["settings"])
    return None


__all__ = [
    "CHANGES_KEY",
    "CONFIG_NAME",
    "DERIVED_KEY",
    "HISTORY_CHANGES_KEY",
    "RunSettings",
    "changes_at",
    "read_run_settings",
    "record_changes",
    "split_changes",
    "write_run_settings",
]
