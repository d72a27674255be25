"""Runs survive signals and kills: checkpoints stay loadable and resuming reaches the uninterrupted metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from invprop.config import from_dict, preset
from invprop.engine import Trainer, load_checkpoint
from invprop.engine.trainer import TrainingInterrupted

COMPARED = ("knn_top1", "knn_top5", "loss", "loss_ins", "loss_inv", "epochs", "purity_positive")


def config(pipeline: str, epochs: int = 2):
    return from_dict(
        {"epochs": epochs, "data": {"pipeline": pipeline}, "loss": {"rampup_epochs": 1}, "optim": {"batch_size": 64}},
        base=preset("digits"),
    )


@pytest.mark.parametrize("pipeline", ["tensor", "per_image"])
def test_sigterm_mid_epoch_saves_and_resume_matches(pipeline: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(pipeline)
    full = Trainer(cfg, tmp_path / "full", progress=False).fit().metrics

    trainer = Trainer(cfg, tmp_path / "cut", progress=False)
    original = type(trainer.method).after_step
    calls = {"n": 0}

    def after_step_then_signal(self) -> None:
        original(self)
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

    resumed = Trainer(cfg, tmp_path / "cut", progress=False).fit(resume=True).metrics
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
    a = json.loads((tmp_path / "full" / "metrics.json").read_text())
    b = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    for key in COMPARED:
        assert a[key] == b[key], key


@pytest.mark.slow
def test_sigint_from_outside_stops_cleanly_with_a_message(tmp_path: Path) -> None:
    victim = _train_process(tmp_path / "run", 20)
    _wait_for_epochs(tmp_path / "run", 1, victim)
    victim.send_signal(signal.SIGINT)
    out, err = victim.communicate(timeout=60)
    assert victim.returncode == 128 + signal.SIGINT
    assert "stopped by SIGINT: checkpoint saved" in err and "--resume" in err and "Traceback" not in err
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] >= 1
