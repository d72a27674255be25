"""The exact-resume check the method tests share: a run stopped -- after epoch 1, or by SIGTERM in the middle of an
epoch -- and resumed ends where an uninterrupted run does (metrics and every saved tensor)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch

from invprop.config import Config
from invprop.engine import Trainer, load_checkpoint
from invprop.engine.signals import TrainingInterrupted


def stop_by_signal_at(trainer: Trainer, step: int) -> None:
    """Make ``trainer`` receive SIGTERM during its ``step``-th optimiser step (counting from 1 over the run)."""
    method = trainer.method
    original = method.after_step
    calls = {"n": 0}

    def after_step_then_signal(outputs: object) -> None:
        original(outputs)  # type: ignore[arg-type]
        calls["n"] += 1
        if calls["n"] == step:
            signal.raise_signal(signal.SIGTERM)

    object.__setattr__(method, "after_step", after_step_then_signal)


def assert_resumes_exactly(cfg: Config, folder: Path, stop_at_step: int | None = None) -> dict[str, torch.Tensor]:
    """Train ``cfg`` whole, and stopped (after epoch 1, or by SIGTERM during optimiser step ``stop_at_step``) then
    resumed; assert equal metrics and states; return the state."""
    full = Trainer(cfg, folder / "full", progress=False).fit().metrics
    cut = Trainer(cfg, folder / "cut", progress=False)
    if stop_at_step is None:
        cut.fit(stop_after=1)
    else:
        stop_by_signal_at(cut, stop_at_step)
        with pytest.raises(TrainingInterrupted):
            cut.fit()
        assert load_checkpoint(folder / "cut" / "last.pt")["partial"] is not None  # stopped inside an epoch
    resumed = Trainer(cfg, folder / "cut", progress=False).fit(resume=True).metrics
    assert resumed["loss"] == full["loss"] and resumed.get("knn_top1") == full.get("knn_top1")
    a = load_checkpoint(folder / "full" / "last.pt")["model"]
    b = load_checkpoint(folder / "cut" / "last.pt")["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return a
