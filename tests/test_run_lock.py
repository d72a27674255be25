"""One writer per run directory: the lock refuses a second process, and a dead holder's lock is taken over."""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from invprop.engine import run_lock
from invprop.engine.run_lock import LOCK_NAME, LockHolder, RunLock
from invprop.errors import RunBusyError, WriteError

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX record locks")


def _python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


TRY_LOCK = """
    import sys
    from invprop.engine.run_lock import RunLock
    from invprop.errors import RunBusyError
    try:
        RunLock(sys.argv[1], "the second writer").acquire()
    except RunBusyError as err:
        print(err)
        sys.exit(2)
    print("acquired")
"""

#: Takes the lock, says so, then waits to be killed (never releases it).
HOLD_LOCK = """
    import sys, time
    from invprop.engine.run_lock import RunLock
    RunLock(sys.argv[1], "invprop train --out run").acquire()
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_process_is_refused_with_the_holder_named(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with RunLock(run, "invprop train --out run"):
        before = (run / LOCK_NAME).read_text()
        other = _python(TRY_LOCK, str(run))
        out, _ = other.communicate(timeout=60)
        assert other.returncode == 2
        assert f"{run} is in use by process {os.getpid()} on " in out and "(invprop train --out run, since " in out
        assert (run / LOCK_NAME).read_text() == before  # the refused process wrote nothing
    other = _python(TRY_LOCK, str(run))  # released: the next one gets it
    assert other.communicate(timeout=60)[0].strip() == "acquired" and other.returncode == 0


def test_the_lock_of_a_killed_process_is_taken_over_and_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = tmp_path / "run"
    holder = _python(HOLD_LOCK, str(run))
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(RunBusyError, match=f"in use by process {holder.pid} "):
        RunLock(run, "me").acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert LockHolder.parse((run / LOCK_NAME).read_text()).pid == holder.pid  # type: ignore[union-attr]
    with caplog.at_level(logging.WARNING, logger="invprop.engine.run_lock"):
        with RunLock(run, "me"):
            assert LockHolder.parse((run / LOCK_NAME).read_text()).pid == os.getpid()  # type: ignore[union-attr]
    assert f"took over the lock of process {holder.pid} " in caplog.text and "ended without releasing it" in caplog.text


def test_forked_children_do_not_keep_a_dead_holder_s_lock(tmp_path: Path) -> None:
    """DataLoader workers are forked from the training process: a record lock is not inherited by them."""
    run = tmp_path / "run"
    code = """
        import os, sys, time
        from invprop.engine.run_lock import RunLock
        RunLock(sys.argv[1], "parent").acquire()
        child = os.fork()
        if child == 0:
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 1)
            os.dup2(null, 2)  # (the test reads the parent's output to its end)
            time.sleep(60)
            os._exit(0)
        print(child, flush=True)
        os._exit(0)  # the holder dies without releasing; its child lives on
    """
    parent = _python(code, str(run))
    child = int(parent.communicate(timeout=60)[0].strip())
    try:
        with RunLock(run, "next"):
            pass
    finally:
        os.kill(child, signal.SIGKILL)


def test_release_empties_the_lock_and_removes_only_a_folder_it_made_for_nothing(tmp_path: Path) -> None:
    made = tmp_path / "new"
    with RunLock(made, "x"):
        assert made.is_dir()
    assert not made.exists()  # e.g. a run that failed before writing anything leaves no empty folder
    used = tmp_path / "used"
    with RunLock(used, "x"):
        (used / "config.yaml").write_text("epochs: 1\n")
    assert sorted(p.name for p in used.iterdir()) == [LOCK_NAME, "config.yaml"]
    assert (used / LOCK_NAME).read_text() == ""
    existing = tmp_path / "existing"
    existing.mkdir()
    with RunLock(existing, "x"):
        pass
    assert existing.is_dir()


def test_holder_descriptions_round_trip_and_garbage_is_ignored() -> None:
    holder = LockHolder.this_process("invprop ablate")
    parsed = LockHolder.parse(holder.to_json())
    assert parsed == holder and parsed.describe().startswith(f"process {os.getpid()} on ")
    assert LockHolder.parse("") is None and LockHolder.parse("not json") is None and LockHolder.parse("[1]") is None


def test_acquiring_twice_through_one_object_is_a_bug(tmp_path: Path) -> None:
    lock = RunLock(tmp_path, "x").acquire()
    try:
        with pytest.raises(RuntimeError, match="already held"):
            lock.acquire()
    finally:
        lock.release()
    lock.release()  # a second release is harmless
    assert not lock.held


def test_a_run_directory_removed_while_training_is_not_recreated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deleted live run directory used to be re-created by the next write, without its lock, so that a second
    writer was accepted beside the first (issue 34, case 1)."""
    import shutil

    from invprop.config import from_dict, preset
    from invprop.engine import Trainer
    from invprop.errors import RunDirectoryLost

    run = tmp_path / "run"
    cfg = from_dict({"epochs": 3, "eval": {"every": 3}}, base=preset("digits"))
    with RunLock(run, "the first writer"):
        trainer = Trainer(cfg, run, progress=False)
        trainer.fit(stop_after=1)
        shutil.rmtree(run)  # `rm -rf RUN` while it trains
        with pytest.raises(RunDirectoryLost, match="was removed or replaced while this run wrote it"):
            trainer.fit(resume=False)
        assert not run.exists()  # nothing was written there again
        run.mkdir()  # removed and made again (a second writer's folder): not ours either
        with pytest.raises(RunDirectoryLost):
            trainer.fit(resume=False)
        assert list(run.iterdir()) == []

    # removed in the middle of an epoch: that epoch's record and checkpoint are not written
    again = tmp_path / "again"
    with RunLock(again, "the first writer"):
        trainer = Trainer(cfg, again, progress=False)
        original = type(trainer.method).after_step
        steps = {"n": 0}

        def after_step_then_remove(self, outputs) -> None:  # type: ignore[no-untyped-def]
            original(self, outputs)
            steps["n"] += 1
            if steps["n"] == trainer.steps_per_epoch + 2:  # inside epoch 2
                shutil.rmtree(again)

        monkeypatch.setattr(type(trainer.method), "after_step", after_step_then_remove)
        with pytest.raises(RunDirectoryLost):
            trainer.fit()
        assert not again.exists()


def test_the_run_directory_check_passes_for_the_lock_it_holds_and_for_no_lock(tmp_path: Path) -> None:
    from invprop.engine.run_lock import check_still_held

    with RunLock(tmp_path / "run", "a writer"):
        check_still_held(tmp_path / "run")  # its own, intact
    check_still_held(tmp_path / "elsewhere")  # no lock held there: the library used without one


@pytest.mark.parametrize("folder_existed", [False, True])
def test_a_full_disk_at_the_start_leaves_no_empty_lock_or_folder(
    tmp_path: Path, folder_existed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "run"
    if folder_existed:
        folder.mkdir()
        (folder / "notes.txt").write_text("mine")

    def full(fd: int, text: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_lock, "_replace_content", full)
    with pytest.raises(WriteError, match=r"cannot write .*\.invprop\.lock: No space left on device \(ENOSPC\)"):
        RunLock(folder, "test").acquire()
    if folder_existed:
        assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    else:
        assert not folder.exists()
    monkeypatch.undo()
    with RunLock(folder, "test"):  # nothing stale is in the way afterwards
        assert (folder / LOCK_NAME).read_text().startswith('{"pid"')
