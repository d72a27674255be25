"""Writing files so that a reader never sees half of one: a temporary file beside the target, then a rename.

Every file invprop writes -- checkpoints, decode caches, exports, metrics, reports, run settings -- goes through
:func:`write_atomically`: until the rename the target still holds its previous content, so a process killed at any
moment leaves either the old file or the new one, and a leftover ``*.tmp`` file is never read.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


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

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "a.txt"
        >>> _ = write_atomically(target, lambda handle: handle.write(b"hello"))
        >>> target.read_text(), sorted(p.name for p in target.parent.iterdir())
        ('hello', ['a.txt'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
        if durable:
            _fsync_directory(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes_atomically(path: str | os.PathLike[str], data: bytes, durable: bool = False) -> Path:
    """:func:`write_atomically` for bytes."""
    return write_atomically(path, lambda handle: handle.write(data), durable)


def write_text_atomically(path: str | os.PathLike[str], text: str, durable: bool = False) -> Path:
    """:func:`write_atomically` for UTF-8 text."""
    return write_bytes_atomically(path, text.encode(), durable)


__all__ = ["write_atomically", "write_bytes_atomically", "write_text_atomically"]
