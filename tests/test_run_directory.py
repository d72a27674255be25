"""One run directory, one writer, one truthful record (through the command line).

- two writers: exactly one trains, the other is refused before writing; a killed holder's lock is taken over;
- resume keeps the run's settings: a change is refused with every key listed, or recorded where it happened;
  resuming a finished run changes no file;
- a write that fails (no space, quota, read-only, permission) ends with one line and exit code 74, the last good
  checkpoint untouched and no temporary file left.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml

from invprop.cli import main
from invprop.engine import CHANGES_KEY, LOCK_NAME, load_checkpoint, save_checkpoint
from invprop.engine.run_settings import HISTORY_CHANGES_KEY
from invprop.errors import EXIT_WRITE_FAILED

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="Linux: reads /proc/self/fd")

TRAIN = ["-q", "train", "--set", "loss.rampup_epochs=1"]


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as stop:
        code = int(stop.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def _one_line(err: str) -> str:
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and "During handling" not in err
    return err


def _snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def _history(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits at batch 64, 3 epochs planned, stopped after epoch 1. Copy it before use."""
    run = tmp_path_factory.mktemp("stopped") / "run"
    args = [*TRAIN, "--epochs", "3", "--stop-after", "1", "--set", "optim.batch_size=64", "--out", str(run)]
    assert main(args) == 0
    return run


@pytest.fixture
def run(stopped_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(stopped_run, copy)
    return copy


# --------------------------------------------------------------------------------------------- resume settings
def test_resume_with_changed_settings_is_refused_listing_each_key(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _snapshot(run)
    code, _, err = _run(
        [*TRAIN, "--resume", "--out", str(run), "--set", "optim.batch_size=32", "--set", "loss.temperature=0.5"], capsys
    )
    assert code == 2
    _one_line(err)
    assert "optim.batch_size 64 -> 32" in err and "loss.temperature 0.2 -> 0.5" in err and "--allow-changes" in err
    assert _snapshot(run) == before


def test_allowed_changes_are_recorded_at_the_epoch_where_they_happened(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    steps_at_64 = load_checkpoint(run / "last.pt")["scheduler"]["global_step"]
    code, _, err = _run(
        [*TRAIN, "--resume", "--stop-after", "2", "--allow-changes", "--set", "optim.batch_size=32", "--out", str(run)],
        capsys,
    )
    assert code == 0, err
    change = {"optim.batch_size": {"from": 64, "to": 32}}
    history = _history(run)
    assert [r["epoch"] for r in history] == [1, 2]
    assert HISTORY_CHANGES_KEY not in history[0] and history[1][HISTORY_CHANGES_KEY] == change
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["optim"]["batch_size"] == 32 and saved[CHANGES_KEY] == [{"epoch": 2, "settings": change}]
    state = load_checkpoint(run / "last.pt")
    # Epoch 2 really ran at batch 32: twice the steps of epoch 1.
    assert state["scheduler"]["global_step"] - steps_at_64 == state["scheduler"]["steps_per_epoch"] > steps_at_64
    # A key that does not change what is trained needs no flag, and is recorded too.
    code, _, err = _run([*TRAIN, "--resume", "--epochs", "4", "--stop-after", "3", "--out", str(run)], capsys)
    assert code == 0, err
    assert _history(run)[2][HISTORY_CHANGES_KEY] == {"epochs": {"from": 3, "to": 4}}
    story = yaml.safe_load((run / "config.yaml").read_text())[CHANGES_KEY]
    assert [entry["epoch"] for entry in story] == [2, 3] and story[0]["settings"] == change
    # Evaluation, export and the next resume read the settings in force.
    code, _, err = _run([*TRAIN, "--resume", "--out", str(run)], capsys)
    assert code == 0, err
    assert [r["epoch"] for r in _history(run)] == [1, 2, 3, 4] and HISTORY_CHANGES_KEY not in _history(run)[3]


def test_resuming_a_finished_run_changes_no_file(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run([*TRAIN, "--resume", "--out", str(run)], capsys)[0] == 0
    before = _snapshot(run)
    code, out, _ = _run([*TRAIN, "--resume", "--out", str(run)], capsys)
    assert code == 0 and "run finished" in out and "epochs 3" in out
    assert _run([*TRAIN, "--resume", "--set", "eval.knn_k=20", "--out", str(run)], capsys)[0] == 0
    assert _run([*TRAIN, "--resume", "--stop-after", "2", "--out", str(run)], capsys)[0] == 0
    code, _, err = _run([*TRAIN, "--resume", "--set", "loss.temperature=0.5", "--out", str(run)], capsys)
    assert code == 2 and "loss.temperature 0.2 -> 0.5" in _one_line(err)
    assert _snapshot(run) == before


def test_settings_change_only_between_epochs(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = load_checkpoint(run / "last.pt")
    state["partial"] = {"epoch": 2, "step": 3, "sums": {"loss": 1.0}, "count": 3, "counts": {"loss": 3}}
    save_checkpoint(state, run / "last.pt")
    code, _, err = _run([*TRAIN, "--resume", "--allow-changes", "--set", "optim.lr=0.01", "--out", str(run)], capsys)
    assert code == 2 and "stopped inside epoch 2 (step 3)" in _one_line(err) and "--stop-after 2" in err


def test_a_config_file_given_to_resume_is_checked_like_set(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _snapshot(run)
    changed = run.parent / "changed.yaml"
    changed.write_text("loss:\n  temperature: 0.5\neval:\n  knn_k: 20\n")
    code, _, err = _run([*TRAIN, "--resume", "--config", str(changed), "--out", str(run)], capsys)
    assert code == 2 and "loss.temperature 0.2 -> 0.5" in _one_line(err) and "eval.knn_k" not in err
    code, _, err = _run([*TRAIN, "--resume", "--preset", "digits", "--out", str(run)], capsys)
    assert code == 2 and "--preset starts a new run" in _one_line(err)
    assert _snapshot(run) == before
    several = run.parent / "several.yaml"  # a compare's file: the sections of other methods are not this run's
    several.write_text("loss:\n  temperature: 0.5\nmoco:\n  queue_size: 256\n")
    code, _, err = _run([*TRAIN, "--resume", "--config", str(several), "--out", str(run)], capsys)
    assert code == 2 and "loss.temperature 0.2 -> 0.5" in _one_line(err) and "moco" not in err


def test_allow_changes_belongs_to_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run([*TRAIN, "--allow-changes", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "--resume" in _one_line(err) and not (tmp_path / "r").exists()


def test_a_run_s_config_yaml_can_be_reused_as_a_config_file(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run([*TRAIN, "--resume", "--stop-after", "2", "--allow-changes", "--set", "optim.batch_size=32",
                 "--out", str(run)], capsys)[0] == 0  # fmt: skip
    again = run.parent / "again"
    code, _, err = _run([*TRAIN, "--config", str(run / "config.yaml"), "--epochs", "1", "--out", str(again)], capsys)
    assert code == 0, err
    assert yaml.safe_load((again / "config.yaml").read_text())["optim"]["batch_size"] == 32


# --------------------------------------------------------------------------------------------- one writer
def _train_process(run: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "invprop", "-q", "train", "--epochs", "6", "--out", str(run), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_writers_started_together_exactly_one_trains(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first, second = _train_process(run), _train_process(run)
    outcomes = [(p, *p.communicate(timeout=600)) for p in (first, second)]
    codes = sorted(p.returncode for p, _, _ in outcomes)
    assert codes == [0, 2], outcomes
    winner = next(p for p, _, _ in outcomes if p.returncode == 0)
    _, _, refused = next(o for o in outcomes if o[0].returncode == 2)
    assert len(refused.strip().splitlines()) == 1 and "Traceback" not in refused
    assert f"{run} is in use by process {winner.pid} " in refused
    assert [r["epoch"] for r in _history(run)] == [1, 2, 3, 4, 5, 6]
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 6
    assert (run / LOCK_NAME).read_text() == ""


HOLD_LOCK = """
import sys, time
from invprop.engine.run_lock import RunLock
RunLock(sys.argv[1], "invprop train").acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_eval_and_export_of_a_run_being_trained(
    digits_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        before = (run / "metrics.json").read_bytes()
        code, out, _ = _run(["eval", "knn", "--checkpoint", str(run)], capsys)
        assert code == 0 and "knn_top1" in out
        assert f"is being written by process {holder.pid} " in caplog.text and "not recorded" in caplog.text
        assert (run / "metrics.json").read_bytes() == before
        code, _, err = _run([*TRAIN, "--resume", "--epochs", "3", "--out", str(run)], capsys)
        assert code == 2 and f"in use by process {holder.pid} " in _one_line(err)
        # An export into the run directory is a writer there too; elsewhere it needs no lock.
        code, _, err = _run(["-q", "export", "--format", "safetensors", "--checkpoint", str(run)], capsys)
        assert code == 2 and "export elsewhere with --out FILE" in _one_line(err)
        out = tmp_path / "encoder.safetensors"
        export = ["-q", "export", "--format", "safetensors", "--checkpoint", str(run), "--out", str(out)]
        assert _run(export, capsys)[0] == 0 and out.is_file()
        assert sorted(_snapshot(run)) == sorted(_snapshot(digits_run))  # nothing was added to the run directory
    finally:
        holder.kill()
        holder.wait()
    assert _run(["-q", "eval", "knn", "--checkpoint", str(run)], capsys)[0] == 0
    assert json.loads((run / "metrics.json").read_text())["eval"][-1]["protocol"] == "knn"


def test_eval_of_a_run_on_read_only_storage_prints_and_records_nothing(
    digits_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    before = _snapshot(run)
    real_open = os.open

    def read_only(path: Any, flags: int, *args: Any) -> int:  # a read-only mount refuses every write open there
        if Path(path).parent == run and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    code, out, err = _run(["eval", "knn", "--checkpoint", str(run)], capsys)
    assert code == 0, err
    assert "knn_top1" in out
    assert "cannot be written here (EROFS): the knn result is printed, not recorded" in caplog.text
    monkeypatch.undo()
    assert _snapshot(run) == before


# --------------------------------------------------------------------------------------------- failed writes
def _no_temporary_files(folder: Path) -> None:
    assert [p for p in folder.rglob("*") if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize(
    "target,code,reason",
    [
        ("last.pt", errno.ENOSPC, "No space left on device (ENOSPC)"),
        ("history.jsonl", errno.EDQUOT, "Disk quota exceeded (EDQUOT)"),
        ("config.yaml", errno.EROFS, "Read-only file system (EROFS)"),
        ("metrics.json", errno.EACCES, "Permission denied (EACCES)"),
    ],
)
def test_a_failed_training_write_is_one_line_and_keeps_the_last_good_checkpoint(
    target: str,
    code: int,
    reason: str,
    run: Path,
    fail_writes: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fail_writes(target, code)
    exit_code, _, err = _run([*TRAIN, "--resume", "--out", str(run)], capsys)
    assert exit_code == EXIT_WRITE_FAILED
    assert _one_line(err).startswith(f"invprop: error: cannot write {run / target}: {reason}; ")
    _no_temporary_files(run)
    state = load_checkpoint(run / "last.pt")
    # metrics.json comes after the last checkpoint; an epoch's history line right after its checkpoint
    expected_epoch = {"metrics.json": 3, "history.jsonl": 2}.get(target, 1)
    assert state["epoch"] == expected_epoch
    recorded = 1 if target == "history.jsonl" else expected_epoch
    assert [r["epoch"] for r in _history(run)] == list(range(1, recorded + 1))  # no epoch without checkpoint
    monkeypatch.undo()  # space again: the run goes on from its last good checkpoint
    assert _run([*TRAIN, "--resume", "--out", str(run)], capsys)[0] == 0
    assert load_checkpoint(run / "last.pt")["epoch"] == 3
    lines = _history(run)
    assert [r["epoch"] for r in lines] == [1, 2, 3]  # a line the disk refused is written from the checkpoint
    assert all(isinstance(r["loss"], float) for r in lines)


def test_tensorboard_events_that_cannot_be_written_stop_the_run_the_same_way(
    run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class FullWriter:
        def __init__(self, log_dir: str) -> None:
            self.log_dir = log_dir

        def add_scalar(self, *args: Any) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self) -> None: ...

        def close(self) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FullWriter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    exit_code, _, err = _run([*TRAIN, "--resume", "--out", str(run)], capsys)
    assert exit_code == EXIT_WRITE_FAILED
    assert _one_line(err).startswith(f"invprop: error: cannot write {run / 'tensorboard'}: No space left on device")
    assert load_checkpoint(run / "last.pt")["epoch"] == 2 and [r["epoch"] for r in _history(run)] == [1, 2]


def _killed_in_first_checkpoint(run: Path) -> Path:
    """``run`` as SIGKILL during its first checkpoint's write leaves it: settings, the lock, half a checkpoint in
    a temporary file, no last.pt and (the checkpoint comes first) no history."""
    for name in ("last.pt", "history.jsonl", "metrics.json"):
        (run / name).unlink()
    leftover = run / ".last.pt.k1ll3dxx.tmp"
    leftover.write_bytes(b"PK" + bytes(4000))
    return leftover


def test_a_run_killed_in_its_first_checkpoint_write_resumes_from_the_start(
    run: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    leftover = _killed_in_first_checkpoint(run)
    code, _, err = _run([*TRAIN, "--resume", "--out", str(run)], capsys)
    assert code == 0, err
    assert "has no checkpoint yet" in caplog.text and "starting it again from epoch 0" in caplog.text
    assert not leftover.exists()
    assert load_checkpoint(run / "last.pt")["epoch"] == 3 and [r["epoch"] for r in _history(run)] == [1, 2, 3]
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["batch_size"] == 64  # its own settings


def test_a_run_killed_in_its_first_checkpoint_write_can_be_started_again(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    leftover = _killed_in_first_checkpoint(run)
    code, _, err = _run([*TRAIN, "--epochs", "1", "--out", str(run)], capsys)
    assert code == 0, err  # not "already holds a run": nothing was saved
    assert not leftover.exists() and [r["epoch"] for r in _history(run)] == [1]


def test_resume_of_a_run_whose_checkpoint_was_removed_is_refused(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run / "last.pt").unlink()  # removed to save space, say: the run is not started again from nothing
    before = _snapshot(run)
    code, _, err = _run([*TRAIN, "--resume", "--out", str(run)], capsys)
    assert code == 2 and _one_line(err).endswith(
        f"cannot resume {run}: its last.pt is gone, but its history holds 1 epoch(s) (the checkpoint was removed); "
        "restore last.pt, or train the run again with --overwrite"
    )
    assert _snapshot(run) == before


def test_a_finished_run_stopped_before_its_last_records_gets_them_on_resume(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run([*TRAIN, "--resume", "--out", str(run)], capsys)[0] == 0
    whole = (run / "metrics.json").read_text()
    lines = (run / "history.jsonl").read_text().splitlines()
    (run / "history.jsonl").write_text("\n".join(lines[:-1]) + "\n")  # killed right after the last checkpoint
    (run / "metrics.json").unlink()
    assert _run([*TRAIN, "--resume", "--out", str(run)], capsys)[0] == 0
    assert (run / "history.jsonl").read_text().splitlines() == lines
    assert json.loads((run / "metrics.json").read_text())["loss"] == json.loads(whole)["loss"]


def test_resume_where_nothing_was_started_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run([*TRAIN, "--resume", "--out", str(tmp_path)], capsys)
    assert code == 2
    assert _one_line(err).endswith(f"nothing to resume in {tmp_path}: no last.pt and no config.yaml there (start a "
                                   "run there without --resume)")  # fmt: skip


def test_overwrite_removes_leftover_temporary_files(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    leftover = run / ".last.pt.abcdefgh.tmp"
    leftover.write_bytes(bytes(100))
    keep = run / "notes.tmp"  # not one of invprop's temporary files
    keep.write_text("mine")
    assert _run([*TRAIN, "--epochs", "1", "--overwrite", "--out", str(run)], capsys)[0] == 0
    assert not leftover.exists() and keep.read_text() == "mine"


@pytest.mark.parametrize(
    "command,target",
    [
        (["export", "--format", "safetensors"], "encoder.safetensors"),
        (["embed", "--out", "{tmp}/e.npz"], "e.npz"),
        (["report", "--out", "{tmp}/report"], "report.html"),
        (["eval", "knn"], "metrics.json"),
    ],
)
def test_every_other_writer_fails_the_same_way(
    command: list[str],
    target: str,
    digits_run: Path,
    tmp_path: Path,
    fail_writes: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    before = _snapshot(run)
    args = [part.replace("{tmp}", str(tmp_path)) for part in command]
    args = [*args, str(run)] if args[0] == "report" else [*args, "--checkpoint", str(run)]
    fail_writes(target, errno.ENOSPC)
    code, _, err = _run(["-q", *args], capsys)
    assert code == EXIT_WRITE_FAILED
    assert "cannot write " in _one_line(err) and f"{target}: No space left on device (ENOSPC)" in err
    _no_temporary_files(tmp_path)
    assert _snapshot(run) == before


def test_ablate_results_that_cannot_be_written(
    tmp_path: Path, fail_writes: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fail_writes("results.md", errno.ENOSPC)
    out = tmp_path / "ablate"
    code, _, err = _run(["-q", "ablate", "--variants", "insdis", "--epochs", "1", "--out", str(out)], capsys)
    assert code == EXIT_WRITE_FAILED and f"cannot write {out / 'results.md'}: " in _one_line(err)
    _no_temporary_files(tmp_path)
    assert load_checkpoint(out / "insdis" / "last.pt")["epoch"] == 1  # the variant itself is complete


@pytest.mark.slow
def test_a_real_write_limit_in_a_real_process(run: Path) -> None:
    """The operating system refuses the checkpoint (a file-size limit, EFBIG): the same one line and exit code."""
    size = (run / "last.pt").stat().st_size

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, size // 2))

    cmd = [sys.executable, "-m", "invprop", *TRAIN, "--resume", "--out", str(run)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, preexec_fn=limit)
    assert proc.returncode == EXIT_WRITE_FAILED, proc.stderr
    err = _one_line(proc.stderr.strip())
    assert err.startswith(f"invprop: error: cannot write {run / 'last.pt'}: File too large (EFBIG); ")
    _no_temporary_files(run)
    assert load_checkpoint(run / "last.pt")["epoch"] == 1 and [r["epoch"] for r in _history(run)] == [1]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert load_checkpoint(run / "last.pt")["epoch"] == 3
