"""The rows of ablate and compare: an interrupted row says to re-run the table's command, not train --resume."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from invprop.config import preset
from invprop.engine import Trainer
from invprop.engine.signals import TrainingInterrupted
from invprop.evaluation.runs import train_or_reuse


def test_an_interrupted_row_points_to_the_table_s_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(self: Trainer, resume: bool = False, stop_after: int | None = None) -> None:
        raise TrainingInterrupted(
            signal.SIGTERM, f"stopped by SIGTERM: checkpoint saved at epoch 2 in {tmp_path}/last.pt; continue with "
            f"--resume --out {tmp_path}",
        )  # fmt: skip

    monkeypatch.setattr(Trainer, "fit", interrupted)
    with pytest.raises(TrainingInterrupted) as info:
        train_or_reuse(preset("digits"), tmp_path / "row", "compare, method invp")
    assert info.value.exit_code == 128 + signal.SIGTERM
    assert "checkpoint saved at epoch 2" in str(info.value) and "--resume" not in str(info.value)
    assert str(info.value).endswith("run the same command again to go on (finished rows are reused)")
