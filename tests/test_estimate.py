"""invprop.engine.estimate: the line said once after the first steps, from their measured times."""

from __future__ import annotations

import pytest

from invprop.engine import estimate
from invprop.engine.estimate import TIMED_STEPS, WARM_STEPS, RunEstimate


def _clock(monkeypatch: pytest.MonkeyPatch, step_seconds: float) -> list[float]:
    now = [100.0]
    monkeypatch.setattr(estimate.time, "perf_counter", lambda: now[0])
    return now


def test_the_warm_steps_are_not_timed_and_the_estimate_is_said_once(monkeypatch: pytest.MonkeyPatch) -> None:
    now = _clock(monkeypatch, 0.5)
    run = RunEstimate(steps_per_epoch=200, epochs_left=30, extras="the kNN monitor every 5 epoch(s)")
    said = []
    for step in range(1, 40):
        now[0] += 9.0 if step <= WARM_STEPS else 0.5  # slow first steps must not count
        said.append(run.step())
    lines = [s for s in said if s]
    assert len(lines) == 1 and said.index(lines[0]) == WARM_STEPS + TIMED_STEPS - 1
    assert run.epoch_seconds == pytest.approx(100.0)
    assert "about 100 s per epoch (200 steps of 0.500 s), 50.0 min for the 30 epoch(s) left" in lines[0]
    assert lines[0].endswith("plus the kNN monitor every 5 epoch(s)")


def test_a_short_epoch_times_what_it_has_and_an_epoch_of_one_step_says_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = _clock(monkeypatch, 1.0)
    short = RunEstimate(steps_per_epoch=3, epochs_left=2)
    lines = []
    for _ in range(3):
        now[0] += 1.0
        lines.append(short.step())
    assert short.warm_steps == 2 and short.timed_steps == 1 and lines[2] is not None and "3 s per epoch" in lines[2]
    single = RunEstimate(steps_per_epoch=1, epochs_left=5)
    assert all(single.step() is None for _ in range(5)) and single.epoch_seconds is None
