"""Runs survive signals and kills: checkpoints stay loadable and resuming reaches the uninterrupted metrics."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from invprop.config import from_dict, preset
from invprop.engine import Trainer, load_checkpoint
from invprop.engine.signals import TrainingInterrupted
from invprop.errors import EXIT_SYSTEM

COMPARED = ("knn_top1", "knn_top5", "loss", "loss_ins", "loss_inv", "epochs", "purity_positive")


def config(pipeline: str, epochs: int = 2):
    return from_dict(
        {"epochs": epochs, "data": {"pipeline": pipeline}, "loss": {"rampup_epochs": 1}, "optim": {"batch_size": 64}},
        base=preset("digits"),
    )


@pytest.mark.parametrize("pipeline", ["tensor", "per_image"])
def test_sigterm_mid_epoch_saves_and_resume_matches(
    pipeline: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config(pipeline)
    full = Trainer(cfg, tmp_path / "full", progress=False).fit().metrics

    trainer = Trainer(cfg, tmp_path / "cut", progress=False)
    original = type(trainer.method).after_step
    calls = {"n": 0}

    def after_step_then_signal(self, outputs) -> None:
        original(self, outputs)
        calls["n"] += 1
        if calls["n"] == trainer.steps_per_epoch + 5:  # step 5 of epoch 2
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(type(trainer.method), "after_step", after_step_then_signal)
    with pytest.raises(TrainingInterrupted, match="SIGTERM.*epoch 2, step 5/") as info:
        trainer.fit()
    assert info.value.exit_code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    monkeypatch.undo()
    state = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert state["epoch"] == 1 and state["partial"]["step"] == 5

    with caplog.at_level(logging.INFO, logger="invprop.engine.trainer"):
        resumed = Trainer(cfg, tmp_path / "cut", progress=False).fit(resume=True).metrics
    assert f"inside epoch 2/{cfg.epochs}, after step 5" in caplog.text  # where it goes on, not "at epoch 1"
    for key in COMPARED:
        assert resumed[key] == full[key], key
    a = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "cut" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def _train_process(run: Path, epochs: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "invprop", "-q", "train", "--epochs", str(epochs), "--set", "optim.batch_size=16",
           "--set", "loss.rampup_epochs=1", "--out", str(run)]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_epochs(run: Path, count: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    history = run / "history.jsonl"
    while time.time() < deadline:
        if history.is_file() and len(history.read_text().splitlines()) >= count:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    raise AssertionError("training did not reach the epoch in time")


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    epochs = 3
    full = _train_process(tmp_path / "full", epochs)
    assert full.wait(timeout=300) == 0, full.communicate()
    victim = _train_process(tmp_path / "cut", epochs)
    _wait_for_epochs(tmp_path / "cut", 1, victim)
    time.sleep(0.3)  # well inside epoch 2
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    state = load_checkpoint(tmp_path / "cut" / "last.pt")  # the last complete checkpoint is intact
    assert state["epoch"] >= 1
    resume = subprocess.run([sys.executable, "-m", "invprop", "-q", "train", "--epochs", str(epochs), "--resume",
                             "--out", str(tmp_path / "cut")], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resume.returncode == 0, resume.stderr
    # The killed run's lock was released by the kernel; the resume takes it over and says whose it was.
    assert f"took over the lock of process {victim.pid} " in resume.stderr
    a = json.loads((tmp_path / "full" / "metrics.json").read_text())
    b = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    for key in COMPARED:
        assert a[key] == b[key], key


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP])  # SIGHUP: a closed terminal or ssh session
def test_a_signal_from_outside_stops_cleanly_with_a_message(tmp_path: Path, signum: signal.Signals) -> None:
    victim = _train_process(tmp_path / "run", 20)
    _wait_for_epochs(tmp_path / "run", 1, victim)
    victim.send_signal(signum)
    out, err = victim.communicate(timeout=60)
    assert victim.returncode == 128 + signum
    assert f"stopped by {signum.name}: checkpoint saved" in err and "--resume" in err and "Traceback" not in err
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] >= 1


def _wait_until_torch_loads(process: subprocess.Popen[str]) -> None:
    """Until ``process`` has mapped torch's library: it is inside the command line's imports (a fixed sleep came too
    early on a loaded machine, where the signal then met the interpreter's own start)."""
    maps = Path(f"/proc/{process.pid}/maps")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if "libtorch" in maps.read_text():
            return
        time.sleep(0.005)
    raise AssertionError("torch did not start loading within 60 s")


def _ctrl_c_as_at_a_terminal() -> None:
    """A child's SIGINT as a terminal's foreground command has it. A shell script's background job (``cmd &``, as CI
    may be started) inherits SIGINT ignored, and Python keeps an ignored SIGINT: the command would not hear it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="Linux: reads /proc/PID/maps")
def test_ctrl_c_while_the_command_starts_says_one_line(tmp_path: Path) -> None:
    """Importing torch takes seconds; a Ctrl-C in them used to print a 40-line traceback through its imports."""
    started = subprocess.Popen(
        [sys.executable, "-m", "invprop", "train", "--out", str(tmp_path / "run")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_ctrl_c_as_at_a_terminal,
    )  # fmt: skip
    _wait_until_torch_loads(started)  # the interpreter is up; the command line (torch) is still loading
    started.send_signal(signal.SIGINT)
    _, err = started.communicate(timeout=60)
    assert started.returncode == 128 + signal.SIGINT
    assert err.strip() == "invprop: interrupted while starting; nothing was done" and not (tmp_path / "run").exists()


def test_training_on_a_folder_with_broken_files_skips_and_counts_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from broken_images import write_folder_with_broken_files
    from invprop.cli import main

    root = write_folder_with_broken_files(tmp_path / "data")
    common = ["-q", "train", "--dataset", f"imagefolder:{root}", "--epochs", "1", "--set", "model.backbone=small_convnet",
              "--set", "data.image_size=8", "--set", "optim.batch_size=4", "--set", "bank.num_neighbors=2",
              "--set", "loss.n_background=8", "--set", "data.cache_dir=null"]  # fmt: skip
    assert main([*common, "--out", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["skipped_files"] == 2 and any("broken" in p for p in metrics["skipped_file_examples"])
    capsys.readouterr()
    assert main([*common, "--strict-data", "--out", str(tmp_path / "strict")]) == 2
    err = capsys.readouterr().err
    assert "unreadable image file" in err and "broken" in err and err.count("\n") == 1
    assert not (tmp_path / "strict" / "last.pt").exists()  # failed before training started


def test_resuming_after_files_were_removed_says_the_dataset_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from digit_folder import write_digit_folder
    from invprop.cli import main

    write_digit_folder(tmp_path / "images", 40, side=8)
    run = tmp_path / "run"
    args = ["-q", "train", "--dataset", f"imagefolder:{tmp_path / 'images'}", "--epochs", "2", "--stop-after", "1",
            "--set", "model.backbone=small_convnet", "--set", "data.image_size=8", "--set", "optim.batch_size=8",
            "--set", "bank.num_neighbors=2", "--set", "loss.n_background=8", "--set", "data.cache_dir=null",
            "--set", "data.pipeline=per_image", "--out", str(run)]  # fmt: skip
    assert main(args) == 0
    for name in ("0003.png", "0017.png", "0031.png"):
        (tmp_path / "images" / name).rename(tmp_path / name)
    capsys.readouterr()
    err = _one_line_error(["-q", "train", "--resume", "--out", str(run)], capsys)
    assert err.endswith(  # 4 of an unlabelled folder's images are held out for the label-free criteria
        "the dataset changed since the checkpoint was written: 36 training images then, 33 now (files added, removed "
        "or unreadable); restore them to resume, or start a new run"
    )
    for name in ("0003.png", "0017.png", "0031.png"):  # the same count again, under other names
        (tmp_path / name).rename(tmp_path / "images" / f"x{name}")
    err = _one_line_error(["-q", "train", "--resume", "--out", str(run)], capsys)
    assert err.endswith("36 training images then and now, but not the same files; restore them to resume, or start "
                        "a new run")  # fmt: skip
    assert load_checkpoint(run / "last.pt")["epoch"] == 1


def test_a_killed_data_loading_worker_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the out-of-memory killer does to a DataLoader worker, done with SIGKILL after the second batch."""
    import multiprocessing
    import re

    from digit_folder import write_digit_folder
    from invprop.cli import main
    from invprop.engine import batches

    write_digit_folder(tmp_path / "images", 96, side=8)
    real_epoch = batches.BatchPipeline.epoch

    def epoch_then_kill(self: Any, seed: int, skip: int = 0, views: int | None = None) -> Any:
        for n, batch in enumerate(real_epoch(self, seed, skip, views)):
            yield batch
            if n == 1:
                for child in multiprocessing.active_children():
                    os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]

    monkeypatch.setattr(batches.BatchPipeline, "epoch", epoch_then_kill)
    args = ["-q", "train", "--dataset", f"imagefolder:{tmp_path / 'images'}", "--epochs", "1",
            "--set", "model.backbone=small_convnet", "--set", "data.image_size=8", "--set", "optim.batch_size=8",
            "--set", "bank.num_neighbors=2", "--set", "loss.n_background=8", "--set", "data.pipeline=per_image",
            "--set", "data.num_workers=2", "--out", str(tmp_path / "run")]  # fmt: skip
    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == EXIT_SYSTEM, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert re.fullmatch(
        r"invprop: error: a data-loading worker process \(pid [\d, ]+\) (was killed by signal \w+|ended "
        r"unexpectedly), most often the system's out-of-memory killer: lower data.num_workers or optim.batch_size, "
        r"or free memory, then resume \(the last checkpoint is kept\)",
        err,
    ), err


def _one_line_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    from invprop.cli import main

    try:
        code = main(args)
    except SystemExit as stop:
        code = int(stop.code)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "settings,message",
    [
        (["--set", "bank.num_neighbors=5000"], "bank.num_neighbors=5000 must be smaller than the dataset size 1347"),
        (["--set", "optim.batch_size=2000"], "optim.batch_size=2000 exceeds the dataset size 1347"),
        (["--set", "bank.momentum=1.5"], "bank.momentum must be in [0, 1)"),
        (["--set", "loss.steps=0"], "loss.steps must be at least 1"),
        (["--set", "loss.n_hard_positives=0"], "loss.n_hard_positives must be at least 1"),
        (["--set", "loss.temperature=0"], "loss.temperature must be positive"),
        (["--set", "epochs=abc"], "epochs"),
        (["--set", "loss.tempreature=0.1"], "did you mean loss.temperature"),
        (["--epochs", "0"], "epochs must be at least 1"),
    ],
)
def test_bad_settings_fail_before_any_work(
    settings: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _one_line_error(["-q", "train", *settings, "--out", str(tmp_path / "run")], capsys)
    assert message in err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_corrupt_truncated_and_foreign_checkpoints_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from invprop.cli import main

    assert main(["-q", "train", "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    good = (tmp_path / "run" / "last.pt").read_bytes()
    cases = {
        "truncated.pt": good[: len(good) // 2],
        "garbage.pt": b"\x00\x01 definitely not a checkpoint",
    }
    for name, payload in cases.items():
        (tmp_path / name).write_bytes(payload)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")

    class Evil:
        def __reduce__(self):  # would run a command if the loader unpickled arbitrary objects
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"model": {}, "config": {}, "x": Evil()}, tmp_path / "evil.pt")
    (tmp_path / "folder-run" / "last.pt").mkdir(parents=True)  # a run folder whose checkpoint is a folder
    said = {
        "truncated.pt": "is not a PyTorch checkpoint (not a zip archive: another kind of file, or cut short)",
        "garbage.pt": "is not a PyTorch checkpoint",
        "foreign.pt": "is not an invprop checkpoint (no model/config entries)",
        "evil.pt": "carries Python objects that loading it would run, and was refused",
        "folder-run": "last.pt is a folder, not a file",
    }
    for name, words in said.items():
        err = _one_line_error(["-q", "eval", "knn", "--checkpoint", str(tmp_path / name)], capsys)
        assert name in err and words in err, err
        assert "Weights only load failed" not in err and not err.endswith(("(", ",")), err  # whole sentences
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "run" / "last.pt").unlink()
    (tmp_path / "run" / "last.pt").mkdir()
    err = _one_line_error(["-q", "train", "--resume", "--out", str(tmp_path / "run")], capsys)
    assert "its last.pt is a folder, not a checkpoint" in err


def test_empty_and_single_image_folders_fail_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np
    from PIL import Image

    (tmp_path / "empty").mkdir()
    assert "no images" in _one_line_error(
        ["-q", "train", "--dataset", f"imagefolder:{tmp_path / 'empty'}", "--out", str(tmp_path / "a")], capsys
    )
    (tmp_path / "one").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "one" / "x.png")
    err = _one_line_error(
        ["-q", "train", "--dataset", f"imagefolder:{tmp_path / 'one'}", "--out", str(tmp_path / "b")], capsys
    )
    assert "1 training image" in err and "at least 2" in err


def test_an_empty_folder_name_or_a_file_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = _one_line_error(["-q", "train", "--dataset", "imagefolder:", "--out", str(tmp_path / "a")], capsys)
    assert "imagefolder: names no folder" in empty  # not the working folder
    (tmp_path / "passwd").write_text("root:x:0:0\n")
    afile = _one_line_error(
        ["-q", "train", "--dataset", f"imagefolder:{tmp_path / 'passwd'}", "--out", str(tmp_path / "b")], capsys
    )
    assert "is a file, not a folder" in afile
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def _write_failure(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    from invprop.cli import main

    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 74, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_output_paths_that_cannot_be_written_say_so_in_one_line(
    digits_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    err = _write_failure(["-q", "report", str(digits_run), "--out", str(a_file)], capsys)
    assert "a file is there, not a folder" in err and "give a folder's path" in err
    err = _write_failure(["-q", "embed", "--checkpoint", str(digits_run), "--out", str(a_file / "x.npz")], capsys)
    assert f"cannot write {a_file}" in err
    long_name = tmp_path / ("r" * 300)
    err = _write_failure(["-q", "train", "--epochs", "1", "--out", str(long_name)], capsys)
    assert "File name too long (ENAMETOOLONG); use a shorter name" in err
    from PIL import Image

    bomb = tmp_path / "bomb.png"
    Image.new("L", (100, 100)).save(bomb)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 pixels is then a decompression bomb
    err = _one_line_error(["-q", "neighbors", "--checkpoint", str(digits_run), "--query", str(bomb)], capsys)
    assert "too large an image to decode safely" in err


def test_a_report_that_could_not_be_written_fails_before_any_work(
    digits_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from invprop.evaluation import report

    def no_work(*args: Any) -> Any:
        raise AssertionError("the figures were computed for a folder that cannot be written")

    monkeypatch.setattr(report, "build_report", no_work)
    if Path("/proc/self").is_dir():
        err = _write_failure(["-q", "report", str(digits_run), "--out", "/proc/nope"], capsys)
        assert err.startswith("invprop: error: cannot write /proc/nope: ")
    read_only = tmp_path / "shared"
    read_only.mkdir()
    real_open = os.open

    def refuse(path: Any, flags: int, *args: Any) -> int:  # a read-only mount
        if Path(path).parent == read_only and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refuse)
    err = _write_failure(["-q", "report", str(digits_run), "--out", str(read_only)], capsys)
    assert (
        err
        == f"invprop: error: cannot write {read_only}: Read-only file system (EROFS); the file system is read-only: write elsewhere"
    )
    monkeypatch.undo()
    typo = tmp_path / "typo"  # not a run: the report fails, and leaves no folder behind
    err = _one_line_error(["-q", "report", str(typo)], capsys)
    assert not typo.exists(), err


def test_overwrite_only_when_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from invprop.cli import main

    run = tmp_path / "run"
    assert main(["-q", "train", "--epochs", "1", "--out", str(run)]) == 0
    (run / "notes.txt").write_text("mine")
    before = (run / "last.pt").read_bytes()
    capsys.readouterr()
    assert "--overwrite" in _one_line_error(["-q", "train", "--epochs", "1", "--out", str(run)], capsys)
    assert (run / "last.pt").read_bytes() == before
    assert main(["-q", "train", "--epochs", "2", "--overwrite", "--out", str(run)]) == 0
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2
    assert (run / "notes.txt").read_text() == "mine"  # only the run's own files are replaced


def test_non_finite_loss_stops_with_epoch_and_step_and_keeps_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config("tensor", epochs=3)
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    trainer.fit(stop_after=1)
    good = (tmp_path / "run" / "last.pt").read_bytes()
    resumed = Trainer(cfg, tmp_path / "run", progress=False)
    original = type(resumed.method).training_step
    calls = {"n": 0}

    def poisoned(self, batch):
        calls["n"] += 1
        out = original(self, batch)
        if calls["n"] == 3:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(type(resumed.method), "training_step", poisoned)
    from invprop.errors import InvpropError

    with pytest.raises(InvpropError, match=r"non-finite loss \(nan\) at epoch 2, step 3"):
        resumed.fit(resume=True)
    assert (tmp_path / "run" / "last.pt").read_bytes() == good


@pytest.mark.slow
def test_ctrl_c_to_the_process_group_with_dataloader_workers(tmp_path: Path) -> None:
    # A terminal's Ctrl-C signals every process of the group, DataLoader workers included.
    cmd = [sys.executable, "-m", "invprop", "-q", "train", "--epochs", "20", "--set", "data.pipeline=per_image",
           "--set", "data.num_workers=2", "--set", "optim.batch_size=16", "--out", str(tmp_path / "run")]  # fmt: skip
    victim = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_for_epochs(tmp_path / "run", 1, victim)
    time.sleep(0.2)
    os.killpg(victim.pid, signal.SIGINT)
    _, err = victim.communicate(timeout=60)
    assert victim.returncode == 128 + signal.SIGINT, err
    assert "checkpoint saved" in err and "Traceback" not in err
    resume = subprocess.run([sys.executable, "-m", "invprop", "-q", "train", "--epochs", "2", "--resume",
                             "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert resume.returncode == 0, resume.stderr


def _signal_one_process(rank: int, world: int, run: str) -> dict[str, object]:
    from invprop.engine.process_group import DistributedContext

    cfg = from_dict({"device": "cpu", "log": {"every_steps": 4}}, base=config("tensor", epochs=2))
    trainer = Trainer(cfg, Path(run), progress=False, context=DistributedContext(rank, world, rank))
    original = type(trainer.method).after_step
    calls = {"n": 0}

    def after_step_then_signal(self, outputs) -> None:
        original(self, outputs)
        calls["n"] += 1
        if rank == 1 and calls["n"] == 3:  # only process 1 is told to stop, during step 3 of epoch 1
            signal.raise_signal(signal.SIGTERM)

    type(trainer.method).after_step = after_step_then_signal
    try:
        trainer.fit()
    except TrainingInterrupted as err:
        return {"message": str(err), "steps": calls["n"]}
    finally:
        type(trainer.method).after_step = original
    return {"message": "", "steps": calls["n"]}


def test_a_signal_to_one_process_stops_all_at_the_same_step(tmp_path: Path) -> None:
    from gloo import run_gloo

    run = tmp_path / "run"
    results = run_gloo(_signal_one_process, 2, tmp_path, str(run))
    # Both stopped at the first sync after the signal (log.every_steps=4), not at the step it arrived in (3).
    assert [r["steps"] for r in results] == [4, 4]
    assert "epoch 1, step 4/" in results[0]["message"]
    state = load_checkpoint(run / "last.pt")
    assert state["epoch"] == 0 and state["partial"]["step"] == 4
    cfg = from_dict({"device": "cpu", "log": {"every_steps": 4}}, base=config("tensor", epochs=2))
    resumed = Trainer(cfg, run, progress=False).fit(resume=True)
    assert resumed.finished and resumed.metrics["epochs"] == 2


def _drawing_run(rank: int, world: int, run: str, stop_at: int, resume: bool) -> dict[str, Any]:
    """A two-epoch denoising-autoencoder run (it draws noise in every step) as process ``rank``; the torch generator's
    state after each step, and the final weights (main process). With ``stop_at``, process 1 is sent SIGTERM after
    that many steps (both stop at the next sync)."""
    from invprop.engine.process_group import DistributedContext

    cfg = from_dict({"device": "cpu", "epochs": 2, "log": {"every_steps": 4}, "optim": {"batch_size": 64}},
                    base=preset("digits", "denoising-ae"))  # fmt: skip
    trainer = Trainer(cfg, Path(run), progress=False, context=DistributedContext(rank, world, rank))
    original = type(trainer.method).after_step
    states: list[torch.Tensor] = []

    def after_step_recording(self, outputs) -> None:
        original(self, outputs)
        states.append(torch.get_rng_state().clone())
        if rank == 1 and len(states) == stop_at:
            signal.raise_signal(signal.SIGTERM)

    type(trainer.method).after_step = after_step_recording
    try:
        trainer.fit(resume=resume)
    except TrainingInterrupted:
        pass
    finally:
        type(trainer.method).after_step = original
    model = load_checkpoint(Path(run) / "last.pt")["model"] if rank == 0 else None
    return {"states": states, "model": model}


@pytest.mark.slow
def test_each_process_draws_its_own_noise_and_resumes_its_own_stream_inside_an_epoch(tmp_path: Path) -> None:
    from gloo import run_gloo

    full = run_gloo(_drawing_run, 2, tmp_path / "full", str(tmp_path / "full-run"), 0, False)
    assert not torch.equal(full[0]["states"][0], full[1]["states"][0])  # not the same noise on both processes
    run = str(tmp_path / "cut-run")
    cut = run_gloo(_drawing_run, 2, tmp_path / "cut", run, 3, False)
    assert len(cut[0]["states"]) == 4  # stopped inside epoch 1, at the first sync after the signal
    resumed = run_gloo(_drawing_run, 2, tmp_path / "resumed", run, 0, True)
    for rank in (0, 1):  # each process's stream goes on from where it was cut
        streams = cut[rank]["states"] + resumed[rank]["states"]
        assert len(streams) == len(full[rank]["states"])
        assert all(torch.equal(a, b) for a, b in zip(streams, full[rank]["states"]))
    for key, value in full[0]["model"].items():
        assert torch.equal(value, resumed[0]["model"][key]), key
