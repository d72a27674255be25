"""User-facing errors: the CLI prints their message on one line and exits with their ``exit_code``."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Sequence

#: Exit code for bad input: settings, files, data (as argparse uses).
EXIT_USAGE = 2
#: Exit code for a file that could not be written (sysexits.h's EX_IOERR): no space, quota, read-only, permission.
EXIT_WRITE_FAILED = 74
#: Exit code for a helper process that the system took away (sysexits.h's EX_OSERR), e.g. by its memory killer.
EXIT_SYSTEM = 71

#: What to do about the most common reasons a write fails, by errno.
_WRITE_HINTS = {
    errno.ENOSPC: "free some space or write elsewhere",
    errno.EDQUOT: "free some of your quota or write elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.EACCES: "you may not write there: fix its permissions or write elsewhere",
    errno.EPERM: "you may not write there: fix its permissions or write elsewhere",
    errno.EFBIG: "the file is larger than this system allows (ulimit -f?): raise the limit or write elsewhere",
    errno.ENOTDIR: "give a folder's path (a file is in the way)",
    errno.EEXIST: "give a folder's path (a file is in the way)",
    errno.ENAMETOOLONG: "use a shorter name (the file system allows 255 bytes per name)",
    errno.ENOENT: "a folder on the way cannot be created there: write elsewhere",
}


#: The errno values of a write that failed for want of room or of rights (not of a network, say).
WRITE_ERRNOS = frozenset(_WRITE_HINTS)


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): what a one-line error quotes."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class InvpropError(Exception):
    """Base class for errors caused by input (settings, files, data) rather than by a bug."""

    exit_code = EXIT_USAGE


class ConfigError(InvpropError, ValueError):
    """An invalid setting."""


class DataError(InvpropError):
    """A dataset that cannot be found or read."""


class DivergedError(InvpropError):
    """Training produced a non-finite loss (at ``epoch``, ``step``): the settings do not train this method stably.
    The run directory keeps its last good checkpoint."""

    def __init__(self, message: str, epoch: int, step: int) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step


class CheckpointError(InvpropError):
    """A checkpoint or run directory that cannot be used."""


class RunBusyError(CheckpointError):
    """A run directory, ``folder``, that another process is writing (see :mod:`invprop.engine.run_lock`);
    ``holder`` describes that process."""

    def __init__(self, folder: str | os.PathLike[str], holder: str = "another process") -> None:
        super().__init__(f"{os.fspath(folder)} is in use by {holder}")
        self.folder = Path(folder)
        self.holder = holder


class RunDirectoryLost(InvpropError):
    """The run directory, ``folder``, was removed or replaced while this process held its lock and wrote it: writing
    on would re-create it without the lock, beside another writer. Exit code :data:`EXIT_WRITE_FAILED`."""

    exit_code = EXIT_WRITE_FAILED

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        super().__init__(
            f"the run directory {os.fspath(folder)} was removed or replaced while this run wrote it; stopped without "
            "writing there again (its lock went with the old folder) -- start the run again"
        )
        self.folder = Path(folder)


class WorkerLost(InvpropError):
    """A data-loading worker process died (killed by a signal, most often the out-of-memory killer). Exit code
    :data:`EXIT_SYSTEM`."""

    exit_code = EXIT_SYSTEM

    def __init__(self, pids: str, how: str, shared_memory: bool = False) -> None:
        cause = (
            "most often too little shared memory (/dev/shm; a container's --shm-size): raise it or lower "
            "data.num_workers"
            if shared_memory
            else "most often the system's out-of-memory killer: lower data.num_workers or optim.batch_size, or free "
            "memory"
        )
        super().__init__(
            f"a data-loading worker process (pid {pids}) {how}, {cause}, then resume (the last checkpoint is kept)"
        )


class PeerLost(InvpropError):
    """Another process of a torchrun job ended (or lost contact) while this one waited for it at a collective.
    Exit code :data:`EXIT_SYSTEM`."""

    exit_code = EXIT_SYSTEM

    def __init__(self, rank: int, world_size: int, ended: str) -> None:
        super().__init__(
            f"process {rank} of {world_size} stopped: {ended} of this torchrun job ended while they trained (its own "
            "output and torchrun's summary say why); run the same torchrun command with --resume to go on from the "
            "last checkpoint"
        )


class ResumeChangesRefused(ConfigError):
    """Resuming ``run_dir`` would change what it trains: ``changes`` (``key saved -> new``, one each), which could
    apply from ``epoch``."""

    def __init__(self, run_dir: str | os.PathLike[str], changes: Sequence[str], epoch: int) -> None:
        super().__init__(f"resuming would change what {os.fspath(run_dir)} was trained with: {', '.join(changes)}")
        self.run_dir = Path(run_dir)
        self.changes = list(changes)
        self.epoch = epoch


class ChangesInsideEpoch(ConfigError):
    """Settings change only between epochs, and ``run_dir`` stopped inside epoch ``epoch`` (at ``step``)."""

    def __init__(self, run_dir: str | os.PathLike[str], epoch: int, step: int) -> None:
        super().__init__(f"{os.fspath(run_dir)} stopped inside epoch {epoch} (step {step}): settings change only "
                         "between epochs")  # fmt: skip
        self.run_dir = Path(run_dir)
        self.epoch = epoch
        self.step = step


class DeviceUnavailable(ConfigError):
    """The ``device`` asked for does not exist here (CUDA without a GPU)."""

    def __init__(self, device: str) -> None:
        super().__init__(f"device {device!r} asked for, but CUDA is not available")
        self.device = device


class WriteError(InvpropError, OSError):
    """A file invprop writes could not be written (an ``OSError``: no space, quota, read-only file system,
    permission). Exit code :data:`EXIT_WRITE_FAILED`; still an ``OSError`` for code that tolerates failed writes
    (caches)."""

    exit_code = EXIT_WRITE_FAILED

    @classmethod
    def from_os_error(cls, path: str | os.PathLike[str], err: OSError) -> "WriteError":
        """``cannot write PATH: <reason> (<ERRNO>); <hint>``.

        Example:
            >>> print(WriteError.from_os_error("runs/a/last.pt", OSError(errno.ENOSPC, "No space left on device")))
            cannot write runs/a/last.pt: No space left on device (ENOSPC); free some space or write elsewhere
        """
        reason = err.strerror or str(err) or type(err).__name__
        code = f" ({errno.errorcode[err.errno]})" if err.errno is not None and err.errno in errno.errorcode else ""
        hint = _WRITE_HINTS.get(err.errno or 0, "check the folder and write elsewhere if needed")
        error = cls(f"cannot write {os.fspath(path)}: {reason}{code}; {hint}")
        error.errno = err.errno
        return error
