"""Writing files so that a reader never sees half of one: a temporary file beside the target, then a rename.

Every file invprop writes -- checkpoints, decode caches, exports, metrics, reports, run settings -- goes through
:func:`write_atomically`: until the rename the target still holds its previous content, so a process killed at any
moment leaves either the old file or the new one, and a leftover ``*.tmp`` file is never read.

A write that fails with an ``OSError`` (no space, quota, read-only file system, permission) removes its temporary
file and raises :class:`~invprop.errors.WriteError`, one line naming the target and the reason; the target keeps its
previous content.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from invprop.errors import WriteError


def os_error_behind(err: BaseException) -> OSError | None:
    """The ``OSError`` that ``err`` is or was raised while handling (torch's writers wrap a failed ``write`` of the
    handle in a ``RuntimeError``)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


@contextlib.contextmanager
def writing(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block (or behind an exception raised there) into a :class:`WriteError`
    naming ``path``, without the chain of exceptions that a failed flush on close adds."""
    try:
        yield
    except WriteError:
        raise
    except Exception as err:  # noqa: BLE001 - re-raised unless an OSError is behind it
        cause = os_error_behind(err)
        if cause is None:
            raise
        raise WriteError.from_os_error(path, cause) from None


def make_folder(path: str | os.PathLike[str]) -> Path:
    """``mkdir -p path``; a :class:`WriteError` naming it when that fails."""
    path = Path(path)
    with writing(path):
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "a file is there, not a folder", os.fspath(path))
        path.mkdir(parents=True, exist_ok=True)
    return path


#: How the temporary files of :func:`write_atomically` end (they start with a dot and the target's name).
TEMPORARY_SUFFIX = ".tmp"
#: A temporary file of :func:`write_atomically`: ``.`` + the target's name + ``.`` + mkstemp's 8 characters + suffix.
_TEMPORARY_NAME = re.compile(r"\..+\.[A-Za-z0-9_]{8}" + re.escape(TEMPORARY_SUFFIX))


def check_writable(folder: str | os.PathLike[str]) -> Path:
    """Make ``folder`` and write (then remove) a temporary file in it: a :class:`WriteError` now, before any work,
    where the results could not be written later (a read-only file system, no permission, /proc)."""
    folder = make_folder(folder)
    with writing(folder):
        fd, probe = tempfile.mkstemp(prefix=".", suffix=TEMPORARY_SUFFIX, dir=folder)
        os.close(fd)
        os.unlink(probe)
    return folder


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: The process's umask when invprop was imported: a new file gets the mode ``open()`` would give it.
_NEW_FILE_MODE = 0o666 & ~_umask()


def _mode_for(path: Path) -> int:
    """The mode a rewrite of ``path`` keeps (its own), or the mode a new file gets (0666 less the umask); a
    temporary file from ``mkstemp`` is 0600 otherwise."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return _NEW_FILE_MODE


def _fsync_directory(folder: Path) -> None:
    """Make a rename in ``folder`` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(path: str | os.PathLike[str], write: Callable[[BinaryIO], object], durable: bool = False) -> Path:
    """Write ``path`` through ``write(handle)`` on a temporary file in the same folder, then rename it into place.

    Args:
        path: the target (its folder is created).
        write: writes the content to a binary file handle.
        durable: also fsync the file and the folder, so the new content survives a power cut (checkpoints).

    Returns:
        The target path.

    Raises:
        WriteError: an ``OSError`` while writing; the temporary file is gone and ``path`` is unchanged.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "a.txt"
        >>> _ = write_atomically(target, lambda handle: handle.write(b"hello"))
        >>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
        ('hello', ['a.txt'])
    """
    path = Path(path)
    make_folder(path.parent)
    with writing(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent)
        try:
            os.chmod(tmp, _mode_for(path))
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                if durable:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    if durable:
        _fsync_directory(path.parent)
    return path


def remove_leftovers(folder: str | os.PathLike[str]) -> tuple[int, int]:
    """Remove the temporary files that writes killed before their rename left in ``folder``: ``.NAME.XXXXXXXX.tmp``,
    as :func:`write_atomically` names them (``mkstemp``'s eight random characters; a user's ``.notes.tmp`` is left).

    Call it only while holding the folder's lock (no other writer is mid-write there). Returns how many files were
    removed and their bytes.
    """
    count = size = 0
    try:
        leftovers = [p for p in Path(folder).iterdir() if _TEMPORARY_NAME.fullmatch(p.name)]
    except OSError:
        return 0, 0
    for path in leftovers:
        try:
            if not path.is_file() or path.is_symlink():
                continue
            bytes_ = path.stat().st_size
            path.unlink()
        except OSError:
            continue
        count, size = count + 1, size + bytes_
    return count, size


def write_bytes_atomically(path: str | os.PathLike[str], data: bytes, durable: bool = False) -> Path:
    """:func:`write_atomically` for bytes."""
    return write_atomically(path, lambda handle: handle.write(data), durable)


def write_text_atomically(path: str | os.PathLike[str], text: str, durable: bool = False) -> Path:
    """:func:`write_atomically` for UTF-8 text."""
    return write_bytes_atomically(path, text.encode(), durable)


__all__ = [
    "check_writable",
    "make_folder",
    "os_error_behind",
    "remove_leftovers",
    "write_atomically",
    "write_bytes_atomically",
    "write_text_atomically",
    "writing",
]
