"""The trackers by name: the one list that ``log.tracker`` takes its choices from."""

from __future__ import annotations

from typing import Callable

from invprop.registry import Registry
from invprop.trackers.base import Tracker

TRACKERS: Registry[type[Tracker]] = Registry("tracker")


def register_tracker(name: str) -> Callable[[type[Tracker]], type[Tracker]]:
    """Class decorator: add a :class:`Tracker` to :data:`TRACKERS` under ``name``."""

    def add(cls: type[Tracker]) -> type[Tracker]:
        cls.name = name
        return TRACKERS.register(name)(cls)

    return add
