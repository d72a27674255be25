"""One writer per run directory: a lock held for the life of whatever writes there.

``invprop train`` (and every run of ``ablate``, and the results folder of ``ablate`` itself) holds
:class:`RunLock` on its folder while it works. A second writer is refused before it writes anything, with one line
naming the process that holds the lock. The lock is an advisory ``flock`` on ``.invprop.lock``: the kernel drops it
when its process ends in any way (SIGKILL, a crash), so a lock left behind by a killed run is simply free, and the
next run takes it over and says whose it was. Forked children (DataLoader workers) close their copy of the lock's
file at once, so a killed run's workers cannot keep its folder locked, and opening the lock file elsewhere in the
holding process (a copy of the folder) does not release it.

Readers (``eval``, ``report``, ``embed``) take no lock to read: every file is replaced atomically
(:mod:`invprop.files`), so they see the previous or the next version, never half of one. ``eval`` takes it only to
record its result in ``metrics.json``; when another process holds it, or the folder cannot be written, the result
is printed and not recorded.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from invprop.errors import RunBusyError, RunDirectoryLost
from invprop.files import make_folder, writing

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

#: The locks this process holds, file descriptor -> the lock file's absolute path: a forked child closes its copies
#: (see :func:`_close_in_child`), and :func:`check_still_held` finds a folder's.
_HELD: dict[int, str] = {}


def _close_in_child() -> None:
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)

#: The lock file in a run directory; it holds a description of the process that has the lock (empty when free).
LOCK_NAME = ".invprop.lock"


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or last held) a run directory: written into the lock file by the holder."""

    pid: int
    host: str
    command: str
    since: str

    @classmethod
    def this_process(cls, command: str) -> "LockHolder":
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        return cls(os.getpid(), socket.gethostname(), command, now)

    @classmethod
    def parse(cls, text: str) -> "LockHolder | None":
        """The holder written in a lock file (None when empty or unreadable)."""
        try:
            values: Any = json.loads(text)
            return cls(int(values["pid"]), str(values["host"]), str(values["command"]), str(values["since"]))
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        """``process 1234 on host (invprop train, since 2026-11-27 03:20:11 UTC)``."""
        return f"process {self.pid} on {self.host} ({self.command}, since {self.since})"

    def to_json(self) -> str:
        return json.dumps({"pid": self.pid, "host": self.host, "command": self.command, "since": self.since})


#: How long a refused process waits for the holder to write who it is (it takes the lock first, then writes).
HOLDER_WAIT_S = 1.0
HOLDER_POLL_S = 0.05


def _holder_of(fd: int) -> "LockHolder | None":
    """The holder written in a lock file that another process holds, waiting up to :data:`HOLDER_WAIT_S` for it
    (a process that has just taken the lock writes it right after)."""
    deadline = time.monotonic() + HOLDER_WAIT_S
    while True:
        holder = LockHolder.parse(_read_all(fd))
        if holder is not None or time.monotonic() >= deadline:
            return holder
        time.sleep(HOLDER_POLL_S)


class RunLock:
    """An exclusive, non-blocking lock on ``folder`` (created when missing), held between ``acquire`` and
    ``release`` (or in a ``with`` block).

    Args:
        folder: the run directory (or ``ablate``'s results folder).
        command: what the holder is doing, shown to a process that is refused (e.g. ``"invprop train"``).

    Raises:
        RunBusyError: from :meth:`acquire`, when another process holds the folder; its message names the holder.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> with RunLock(folder, "doctest"):
        ...     (folder / LOCK_NAME).read_text().startswith('{"pid"')
        True
        >>> (folder / LOCK_NAME).read_text()
        ''
    """

    def __init__(self, folder: str | os.PathLike[str], command: str) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.command = command
        self._fd: int | None = None
        self._created_folder = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this RunLock")
        if fcntl is None:  # pragma: no cover - Windows
            logger.warning(
                "run-directory locks need POSIX fcntl: two writers of %s are not prevented here", self.folder
            )
            return self
        with writing(self.folder):  # a name too long for the file system fails here
            self._created_folder = not self.folder.exists()
        make_folder(self.folder)
        created_file = not self.path.exists()
        with writing(self.path):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _holder_of(fd)
            os.close(fd)
            who = holder.describe() if holder is not None else "another process"
            raise RunBusyError(self.folder, who) from None
        previous = LockHolder.parse(_read_all(fd))
        if previous is not None:
            logger.warning(
                "took over the lock of %s in %s: that process ended without releasing it (killed?)",
                previous.describe(), self.folder,
            )  # fmt: skip
        try:
            with writing(self.path):
                _replace_content(fd, LockHolder.this_process(self.command).to_json())
        except BaseException:
            if created_file:  # a full disk at the start leaves nothing behind: no empty lock, no empty folder
                self._remove_lock_file(only_if_alone=False)
            os.close(fd)
            raise
        self._fd = fd
        _HELD[fd] = os.path.abspath(self.path)
        return self

    def release(self) -> None:
        """Free the folder (the lock file is emptied; a folder that this lock created and nothing else used is
        removed with it)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        _HELD.pop(fd, None)
        try:
            os.ftruncate(fd, 0)
        except OSError as err:  # the lock is released anyway when the file is closed
            logger.warning("could not empty the lock file %s (%s)", self.path, err)
        if self._created_folder:
            self._remove_lock_file(only_if_alone=True)
        os.close(fd)

    def _remove_lock_file(self, only_if_alone: bool) -> None:
        """Remove the lock file (``only_if_alone``: only when it is all the folder holds), then the folder when this
        lock made it and it is empty. Called while the lock is still held."""
        try:
            if only_if_alone and [p.name for p in self.folder.iterdir()] != [LOCK_NAME]:
                return
            self.path.unlink(missing_ok=True)
            if self._created_folder and not any(self.folder.iterdir()):
                self.folder.rmdir()
        except OSError:  # the folder went away (removed while held) or cannot be listed: nothing to tidy
            pass

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()


def check_still_held(folder: str | os.PathLike[str]) -> None:
    """Raise :class:`~invprop.errors.RunDirectoryLost` when this process holds the lock of ``folder`` but the lock
    file at that path is no longer the one it locked (the folder was removed, or removed and made again); nothing
    when it holds no lock there (the library used without one)."""
    path = os.path.abspath(Path(folder) / LOCK_NAME)
    for fd, held_path in list(_HELD.items()):
        if held_path != path:
            continue
        held = os.fstat(fd)
        try:
            current = os.stat(path)
        except OSError:
            raise RunDirectoryLost(folder) from None
        if (current.st_dev, current.st_ino) != (held.st_dev, held.st_ino):
            raise RunDirectoryLost(folder)


def _read_all(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def _replace_content(fd: int, text: str) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, text.encode())


__all__ = ["LOCK_NAME", "LockHolder", "RunLock", "check_still_held"]
