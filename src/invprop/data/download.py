"""Fetching the built-in torchvision datasets (``data.download``): torchvision's own download and checksum code,
run into a staging folder so that a failed or corrupt download leaves nothing behind.

A dataset is fetched only when it cannot be read from ``data.root``. The download goes to a fresh hidden folder
under ``data.root`` (with torchvision's progress bar, unless the log is quiet); torchvision verifies every file's MD5 checksum and extracts the archive there; only then are
the dataset's own entries (e.g. ``cifar-10-batches-py/``) moved into place, each by one rename. Whatever happens,
the staging folder (with the archive) is removed. Offline, or on a checksum mismatch, the error says what to put
where instead.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import sys
import tempfile
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from invprop.errors import WRITE_ERRNOS, DataError, WriteError, first_line
from invprop.files import make_folder, os_error_behind

logger = logging.getLogger(__name__)

#: Prefix of the staging folders under ``data.root``.
STAGING_PREFIX = ".invprop-download-"


@dataclass(frozen=True)
class Fetch:
    """How one built-in dataset is fetched.

    Attributes:
        label: the dataset's name in messages, e.g. ``"CIFAR-10"``.
        folder: the folder under ``data.root`` that torchvision reads it from (``""``: ``data.root`` itself).
        entries: what torchvision's download creates in that folder and invprop keeps (archives are dropped).
        download: runs torchvision's download of every split into the folder it is given.
        by_hand: what to put where, for the message when the download cannot be made.
    """

    label: str
    folder: str
    entries: tuple[str, ...]
    download: Callable[[Path], None]
    by_hand: str


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.URLError):
        return f"no connection: {err.reason}"
    text = first_line(err)
    if "corrupted" in text:  # torchvision's word for an MD5 mismatch after a download
        return "its checksum does not match the published one"
    return text[:160]


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def fetch_dataset(spec: Fetch, root: Path) -> None:
    """Download ``spec``'s dataset into ``root / spec.folder`` through torchvision, checksums verified.

    Raises:
        DataError: one line -- the download failed (offline, server error, checksum mismatch) and what to do instead,
            or an entry already exists (a dataset that cannot be read is not overwritten).
        WriteError: the files could not be written under ``root`` (no space, quota, read-only, permission); nothing
            of the download is left.
    """
    target = root / spec.folder
    present = [name for name in spec.entries if (target / name).exists()]
    if present:
        raise DataError(
            f"{spec.label} cannot be read from {target / present[0]}, and it is not downloaded over existing files: "
            f"remove {target / present[0]} to download it again, or repair it"
        )
    make_folder(target)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=target))
    logger.info("downloading %s into %s (torchvision; checksums verified)", spec.label, target)
    chatter = io.StringIO()
    try:
        # torchvision prints what it does (the log line above says it) and draws a progress bar on stderr, which
        # stays unless the log is quiet.
        quiet = not logger.isEnabledFor(logging.INFO)
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter if quiet else sys.stderr):
            spec.download(staging)
        missing = [name for name in spec.entries if not (staging / name).exists()]
        if missing:
            raise RuntimeError(f"the download has no {missing[0]}")
        for name in spec.entries:
            (staging / name).rename(target / name)
    except Exception as err:  # noqa: BLE001 - every failure becomes the same one-line message
        for name in spec.entries:  # none existed before: remove what this download moved into place
            _remove(target / name)
        cause = os_error_behind(err)
        if cause is not None and cause.errno in WRITE_ERRNOS:  # a full disk, not a download that went wrong
            raise WriteError.from_os_error(target, cause) from None
        raise DataError(
            f"{spec.label} could not be downloaded ({_reason(err)}); {spec.by_hand}, or set data.root to where it is"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        logger.debug("torchvision said: %s", chatter.getvalue().strip())
    logger.info("%s is in %s", spec.label, target)


__all__ = ["STAGING_PREFIX", "Fetch", "fetch_dataset"]
