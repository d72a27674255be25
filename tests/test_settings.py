from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
    load_yaml,
    merge,
    parse_override,
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


@pytest.mark.parametrize("written,value", [("1e-3", 0.001), ("5E-4", 0.0005), ("2.5e-1", 0.25), ("0.5", 0.5)])
def test_floats_in_the_scientific_notation_users_write_are_floats(written: str, value: float) -> None:
    settings = Outer()
    merge(settings, parse_override(f"inner.rate={written}"))
    assert settings.inner.rate == value and isinstance(settings.inner.rate, float)


@pytest.mark.parametrize("written", [".inf", "-.inf", ".nan", "inf", "nan", "1e999"])
def test_a_float_must_be_finite(written: str) -> None:
    with pytest.raises(ConfigError, match="inner.rate must be a finite number"):
        merge(Outer(), {"inner": parse_override(f"rate={written}")})


def test_an_integer_must_fit_64_bits_and_a_word_is_not_a_float() -> None:
    with pytest.raises(ConfigError, match="count must be an integer below 2\\^63"):
        merge(Outer(), parse_override("count=99999999999999999999"))
    with pytest.raises(ConfigError, match="inner.rate must be a float, got 'fast'"):
        merge(Outer(), {"inner": parse_override("rate=fast")})


def test_a_config_file_that_is_not_utf8_is_refused_in_one_line(tmp_path: Path) -> None:
    utf16 = tmp_path / "config.yaml"
    utf16.write_text("epochs: 3\n", encoding="utf-16")
    with pytest.raises(ConfigError, match="is not UTF-8 text; save it as UTF-8 YAML"):
        load_yaml(utf16)
    scientific = tmp_path / "sci.yaml"
    scientific.write_text("inner:\n  rate: 1e-3\n")
    settings = Outer()
    merge(settings, load_yaml(scientific))
    assert settings.inner.rate == 0.001
