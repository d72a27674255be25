from __future__ import annotations

from dataclasses import dataclass

import pytest

from invprop.errors import ConfigError
from invprop.registry import Registry
from invprop.settings import (
    AT_LEAST_ONE,
    NON_NEGATIVE,
    POSITIVE,
    UNIT_INTERVAL,
    Range,
    check,
    help_texts,
    merge,
    require,
    section,
    setting,
)

SHAPES: Registry[object] = Registry("shape")
SHAPES.register("circle")(object())
SHAPES.register("square")(object())


@dataclass
class Inner:
    rate: float = setting(0.5, "a rate", bounds=UNIT_INTERVAL)
    shape: str = setting("circle", "a shape", choices=SHAPES)
    sizes: list[int] | None = setting(None, "sizes", bounds=AT_LEAST_ONE)


@dataclass
class Outer:
    count: int = setting(3, "a count", bounds=AT_LEAST_ONE)
    inner: Inner = section(Inner, "nested")


@pytest.mark.parametrize(
    "bounds,words",
    [(POSITIVE, "positive"), (NON_NEGATIVE, "non-negative"), (AT_LEAST_ONE, "at least 1"), (UNIT_INTERVAL, "in [0, 1)"),
     (Range(gt=0, le=1), "in (0, 1]"), (Range(lt=5), "less than 5")],
)  # fmt: skip
def test_ranges_describe_themselves(bounds: Range, words: str) -> None:
    assert bounds.describe() == words


def test_merge_checks_names_and_types_and_check_checks_ranges_and_choices() -> None:
    settings = Outer()
    merge(settings, {"count": 4, "inner": {"rate": 0, "sizes": [2, 3]}})
    assert (settings.count, settings.inner.rate, settings.inner.sizes) == (4, 0.0, [2, 3])  # an int for a float
    with pytest.raises(ConfigError, match=r"unknown setting inner.rat \(did you mean inner.rate\?\)"):
        merge(settings, {"inner": {"rat": 1}})
    with pytest.raises(ConfigError, match="count must be an integer"):
        merge(settings, {"count": 1.5})
    merge(settings, {"inner": {"sizes": [2, 0]}})
    with pytest.raises(ConfigError, match="inner.sizes must be at least 1, got 0"):
        check(settings)
    merge(settings, {"inner": {"shape": "sqare", "sizes": None}})
    with pytest.raises(
        ConfigError, match=r"inner.shape must be one of circle, square; got 'sqare' \(did you mean square\?\)"
    ):
        check(settings)
    SHAPES.register("sqare")(object())  # a new registry entry is a new allowed value, with no other list to edit
    check(settings)
    assert help_texts(settings)["inner.shape"] == ("sqare", "a shape -- one of: circle, sqare, square")


def test_help_lists_choices_and_ranges_and_require_words_like_check() -> None:
    texts = help_texts(Outer())
    assert texts["count"] == (3, "a count -- at least 1")
    assert texts["inner.rate"] == (0.5, "a rate -- in [0, 1)")
    with pytest.raises(ValueError, match=r"^rate must be in \[0, 1\), got 2$"):
        require("rate", 2, UNIT_INTERVAL)
