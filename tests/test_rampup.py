from __future__ import annotations

import math

import pytest

from invprop.core.rampup import binary_rampup, gaussian_rampup, rampup_weight


def test_binary_is_off_for_the_first_T_epochs() -> None:
    assert [binary_rampup(e, 30) for e in (1, 29, 30, 31, 800)] == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert binary_rampup(1, 0) == 1.0


def test_gaussian_ramp_values() -> None:
    assert gaussian_rampup(15, 30) == pytest.approx(math.exp(-5 * 0.25))
    assert gaussian_rampup(0, 30) == pytest.approx(math.exp(-5))
    assert gaussian_rampup(30, 30) == 1.0 and gaussian_rampup(100, 30) == 1.0
    values = [gaussian_rampup(e, 30) for e in range(1, 31)]
    assert values == sorted(values)


def test_by_name() -> None:
    assert rampup_weight("binary", 31, 30) == 1.0
    assert rampup_weight("gaussian", 15, 30) == gaussian_rampup(15, 30)
    with pytest.raises(ValueError, match="unknown ramp-up"):
        rampup_weight("linear", 1, 30)
