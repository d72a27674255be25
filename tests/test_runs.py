"""The rows of ablate and compare: an interrupted row says to re-run the table's command, not train --resume."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from invprop.cli import words
from invprop.config import preset
from invprop.engine import Trainer
from invprop.engine.signals import TrainingInterrupted
from invprop.evaluation.runs import RowInterrupted, train_or_reuse


def test_an_interrupted_row_points_to_the_table_s_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "row"

    def interrupted(self: Trainer, resume: bool = False, stop_after: int | None = None) -> None:
        raise TrainingInterrupted(signal.SIGTERM, run, run / "last.pt", "epoch 2, step 3/10")

    alone = TrainingInterrupted(signal.SIGTERM, run, run / "last.pt", "epoch 2, step 3/10")
    assert words(alone).endswith(f"continue with --resume --out {run}")  # a run of its own: train --resume
    monkeypatch.setattr(Trainer, "fit", interrupted)
    with pytest.raises(RowInterrupted) as info:
        train_or_reuse(preset("digits"), run, "compare, method invp")
    assert info.value.exit_code == 128 + signal.SIGTERM and info.value.run_dir == run
    said = words(info.value)
    assert "checkpoint saved at epoch 2, step 3/10" in said and "--resume" not in said
    assert said.endswith("run the same command again to go on (finished rows are reused)")
