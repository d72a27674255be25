from __future__ import annotations

import errno
import stat
from pathlib import Path

import pytest
import torch

from invprop.errors import EXIT_WRITE_FAILED, WriteError
from invprop.files import make_folder, remove_leftovers, write_atomically, write_text_atomically, writing


def test_a_failed_write_leaves_the_previous_content_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "metrics.json"
    write_text_atomically(target, "old")

    def broken(handle) -> None:  # type: ignore[no-untyped-def]
        handle.write(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, broken, durable=True)
    assert target.read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == ["metrics.json"]
    write_text_atomically(target, "new", durable=True)
    assert target.read_text() == "new"


def test_an_os_error_becomes_one_line_naming_the_file_and_the_reason(tmp_path: Path) -> None:
    target = tmp_path / "last.pt"
    write_text_atomically(target, "good")

    def no_space(handle) -> None:  # type: ignore[no-untyped-def]
        handle.write(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(WriteError) as info:
        write_atomically(target, no_space, durable=True)
    message = str(info.value)
    assert message.startswith(f"cannot write {target}: No space left on device (ENOSPC); free some space")
    assert "\n" not in message and info.value.errno == errno.ENOSPC and info.value.exit_code == EXIT_WRITE_FAILED
    assert isinstance(info.value, OSError)  # code that tolerates a failed write (caches) still catches it
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no "During handling of ..." chain
    assert target.read_text() == "good" and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_an_os_error_behind_a_writer_s_own_exception_is_found(tmp_path: Path) -> None:
    """torch's zip writer reports a failed ``write`` of the handle as a RuntimeError raised from it."""

    def wrapped(handle) -> None:  # type: ignore[no-untyped-def]
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError as err:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos") from err

    with pytest.raises(WriteError, match=r"Disk quota exceeded \(EDQUOT\); free some of your quota"):
        write_atomically(tmp_path / "a.pt", wrapped)

    def unrelated(handle) -> None:  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug, not a write failure")

    with pytest.raises(RuntimeError, match="a bug"):
        write_atomically(tmp_path / "b.pt", unrelated)
    assert list(tmp_path.iterdir()) == []


def test_torch_save_onto_a_full_device_is_a_write_error(tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    with pytest.raises(WriteError, match="ENOSPC"):
        with writing("/dev/full"), open("/dev/full", "wb") as handle:
            torch.save({"w": torch.zeros(100_000)}, handle)


def test_a_folder_that_cannot_be_made_is_named(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(WriteError, match=r"cannot write .*a-file/run: .*\(ENOTDIR\)"):
        make_folder(tmp_path / "a-file" / "run")
    with pytest.raises(WriteError, match=r"cannot write .*a-file: a file is there, not a folder \(ENOTDIR\)"):
        write_text_atomically(tmp_path / "a-file" / "metrics.json", "{}")


def test_new_files_get_the_usual_mode_and_rewrites_keep_theirs(tmp_path: Path) -> None:
    """A temporary file is created 0600; the file renamed into place must not be (others read run directories)."""
    plain = tmp_path / "plain.txt"
    plain.write_text("")  # the mode open() gives under this process's umask
    target = write_text_atomically(tmp_path / "metrics.json", "{}")
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    target.chmod(0o640)
    write_text_atomically(target, "{1}")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_remove_leftovers_takes_only_the_temporary_files_of_killed_writes(tmp_path: Path) -> None:
    (tmp_path / ".last.pt.x7q2ab3c.tmp").write_bytes(bytes(3000))
    (tmp_path / ".history.jsonl.ab12cd34.tmp").write_bytes(bytes(24))
    (tmp_path / "mine.tmp").write_text("a user's file")  # no leading dot: not invprop's
    (tmp_path / ".notes.tmp").write_text("a user's hidden file")  # no random part: not invprop's
    (tmp_path / ".hidden").write_text("x")
    (tmp_path / ".folder.tmp").mkdir()
    write_text_atomically(tmp_path / "metrics.json", "{}")
    assert remove_leftovers(tmp_path) == (2, 3024)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".folder.tmp",
        ".hidden",
        ".notes.tmp",
        "metrics.json",
        "mine.tmp",
    ]
    assert remove_leftovers(tmp_path) == (0, 0) and remove_leftovers(tmp_path / "absent") == (0, 0)
