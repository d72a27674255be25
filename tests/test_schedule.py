from __future__ import annotations

import pytest

from invprop.schedules import lr_factor


def test_cosine_with_warmup() -> None:
    assert lr_factor(0, 10, 10, "cosine", warmup_epochs=1) == pytest.approx(0.1)
    assert lr_factor(9, 10, 10, "cosine", warmup_epochs=1) == pytest.approx(1.0)
    assert lr_factor(10, 10, 10, "cosine", warmup_epochs=1) == pytest.approx(1.0)
    assert lr_factor(55, 10, 10, "cosine", warmup_epochs=1) == pytest.approx(0.5)
    assert lr_factor(99, 10, 10, "cosine") < 0.01


def test_step_schedule() -> None:
    assert lr_factor(0, 5, 8, "step") == 1.0
    assert lr_factor(4 * 5, 5, 8, "step") == pytest.approx(0.1)
    assert lr_factor(7 * 5, 5, 8, "step") == pytest.approx(0.001)
    assert lr_factor(3 * 5, 5, 8, "step", milestones=[2, 3], gamma=0.5) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        lr_factor(0, 1, 1, "exponential")


def test_the_linear_schedule_falls_in_a_straight_line_to_the_floor_after_the_warm_up() -> None:
    factors = [lr_factor(step, 10, 11, "linear", warmup_epochs=1) for step in (0, 10, 60, 109)]
    assert factors[0] == pytest.approx(0.1) and factors[1] == pytest.approx(1.0)
    assert factors[2] == pytest.approx(0.5) and factors[3] == pytest.approx(0.01)
    assert lr_factor(60, 10, 11, "linear", warmup_epochs=1, floor=0.2) == pytest.approx(0.6)
