"""Settings as nested dataclasses whose fields carry their own help, range and allowed values.

A field is declared with :func:`setting`: a default, one line of help, and optionally a :class:`Range` and the
``choices`` it may take -- a registry (heads, backbones, augmentations, methods, ...) or another container of
names, never a copied list. Everything else works on any such dataclass:

* :func:`merge` applies nested values (from YAML or ``--set``), checking names (with "did you mean") and types;
* :func:`check` checks every range and choice, with one-line messages naming the dotted key;
* :func:`help_texts` lists every key with its value and meaning.

A :class:`Range` is one object shared by a settings field and the constructor that needs the same bound
(:func:`require`), so both say the same thing in the same words. One walker, :func:`leaves`, visits every key of a
settings tree; a field declared with :func:`flattened` holds sections that sit at its parent's level (a run's
method sections, beside the shared ones).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Iterable, Iterator, Mapping, get_args, get_origin, get_type_hints

import yaml

from invprop.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """Bounds of a number: ``gt``/``ge`` below, ``lt``/``le`` above (None = unbounded).

    Example:
        >>> UNIT_INTERVAL.problem("momentum", 1.5)
        'momentum must be in [0, 1), got 1.5'
        >>> POSITIVE.problem("tau", 0.07) is None
        True
    """

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def contains(self, value: float) -> bool:
        return (
            (self.gt is None or value > self.gt)
            and (self.ge is None or value >= self.ge)
            and (self.lt is None or value < self.lt)
            and (self.le is None or value <= self.le)
        )

    def describe(self) -> str:
        """The bounds in words: "positive", "at least 1", "in [0, 1)", ..."""
        low = (self.gt, "(") if self.gt is not None else (self.ge, "[") if self.ge is not None else None
        high = (self.lt, ")") if self.lt is not None else (self.le, "]") if self.le is not None else None
        if low is not None and high is not None:
            return f"in {low[1]}{_number(low[0])}, {_number(high[0])}{high[1]}"
        if low is not None:
            if low[0] == 0:
                return "positive" if low[1] == "(" else "non-negative"
            return f"at least {_number(low[0])}" if low[1] == "[" else f"greater than {_number(low[0])}"
        if high is not None:
            return f"at most {_number(high[0])}" if high[1] == "]" else f"less than {_number(high[0])}"
        return "any number"

    def problem(self, name: str, value: float) -> str | None:
        """The one-line message for ``value`` out of range (None when it is inside)."""
        return None if self.contains(value) else f"{name} must be {self.describe()}, got {value}"


def _number(value: float | None) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


POSITIVE = Range(gt=0)
NON_NEGATIVE = Range(ge=0)
AT_LEAST_ONE = Range(ge=1)
AT_LEAST_TWO = Range(ge=2)
#: [0, 1): momenta and smoothing factors.
UNIT_INTERVAL = Range(ge=0, lt=1)
#: [0, 1]: shares, and momenta that may reach 1 (a frozen target).
FRACTION = Range(ge=0, le=1)
#: (0, 1]: a share of something that cannot be empty (a tile's side within its cell).
NON_EMPTY_SHARE = Range(gt=0, le=1)


def require(name: str, value: float, bounds: Range) -> None:
    """Raise ``ValueError`` with :meth:`Range.problem`'s message when ``value`` is out of ``bounds`` (for
    constructors of library objects)."""
    message = bounds.problem(name, value)
    if message is not None:
        raise ValueError(message)


@dataclass(frozen=True)
class Reference:
    """A setting's published value: what the paper (or, where the paper is silent, its authors' code) uses.

    Attributes:
        value: the published value.
        source: where it is written, e.g. ``"Wang et al. (2020), Sec. 4"``.
    """

    value: Any
    source: str


def setting(
    default: Any,
    help: str,  # noqa: A002 - mirrors argparse's name
    *,
    bounds: Range | None = None,
    choices: Collection[str] | None = None,
    factory: Any = None,
    resumable: bool = False,
) -> Any:
    """A dataclass field with its help, its range and its allowed values (any container of names whose iteration
    lists them: a tuple, a dict, a :class:`invprop.registry.Registry`).

    ``resumable``: the value does not change what is trained (where data is read from, workers, evaluation,
    logging), so a run may be resumed with another value; every other setting is fixed for the life of a run.
    """
    metadata = {"help": help, "bounds": bounds, "choices": choices, "resumable": resumable}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def section(factory: Any, help: str) -> Any:  # noqa: A002
    """A dataclass field holding a nested settings section."""
    return field(default_factory=factory, metadata={"help": help})


def flattened(factory: Any = None, default: Any = None) -> Any:
    """A dataclass field holding settings whose own fields are keys at this level (see :func:`leaves`)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"flatten": True}, repr=False)
    return field(default=default, metadata={"flatten": True}, repr=False)


def is_section(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def is_flattened(f: dataclasses.Field) -> bool:
    """Whether the field's value is a dataclass whose fields sit at the field's own level (:func:`flattened`)."""
    return bool(f.metadata.get("flatten", False))


def top_level(settings: Any) -> Iterator[tuple[str, Any, dataclasses.Field]]:
    """``(name, value, field)`` of every field of ``settings`` at its own level: a :func:`flattened` field gives its
    value's fields in its place."""
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if is_flattened(f):
            if value is not None:
                yield from top_level(value)
        else:
            yield f.name, value, f


def leaves(settings: Any, prefix: str = "") -> Iterator[tuple[str, Any, dataclasses.Field]]:
    """``(dotted key, value, field)`` of every setting of a settings dataclass, sections walked recursively.

    Example:
        >>> @dataclass
        ... class Inner:
        ...     k: int = setting(3, "k")
        >>> @dataclass
        ... class Outer:
        ...     inner: Inner = section(Inner, "inner")
        >>> [(key, value) for key, value, _ in leaves(Outer())]
        [('inner.k', 3)]
    """
    for name, value, f in top_level(settings):
        if is_section(value):
            yield from leaves(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", value, f


def close_match(name: str, names: Iterable[str]) -> str:
    """``" (did you mean X?)"`` for the closest of ``names``, or an empty string."""
    close = difflib.get_close_matches(str(name), list(names), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def merge(target: Any, values: Any, prefix: str = "") -> None:
    """Apply nested ``values`` to the settings dataclass ``target`` in place, checking names and types.

    Raises:
        ConfigError: an unknown name (with the closest known one), a value of the wrong type, or a section that is
            not a mapping.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'configuration'} must be a mapping, got {values!r}")
    hints = get_type_hints(type(target))
    names = [f.name for f in dataclasses.fields(target)]
    for key, value in values.items():
        if key not in names:
            raise ConfigError(
                f"unknown setting {prefix}{key}{close_match(f'{prefix}{key}', [prefix + n for n in names])}"
            )
        current = getattr(target, key)
        if is_section(current):
            merge(current, value, f"{prefix}{key}.")
        else:
            setattr(target, key, coerce(value, hints[key], f"{prefix}{key}"))


#: The integers a setting may hold (what torch and numpy take as a seed or a count).
INT_LIMIT = 2**63 - 1


def float_literal(value: Any) -> Any:
    """``value``, or the float a string spells in scientific notation (``"1e-3"``, ``"5E-4"``: YAML 1.1, which
    PyYAML reads, takes them for strings without a dot); anything else unchanged."""
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return value
    return value


def coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against the field type ``hint`` (ints and scientific notation are accepted for floats, which
    must be finite; integers must fit 64 bits)."""
    args = get_args(hint)
    if value is None:
        if type(None) in args or hint is type(None):
            return None
        raise ConfigError(f"{key} cannot be null")
    if type(None) in args:
        hint = next(a for a in args if a is not type(None))
    origin = get_origin(hint)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (item,) = get_args(hint)
        return [coerce(v, item, key) for v in value]
    if hint is float:
        value = float_literal(value)
        if isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if hint is int and abs(value) > INT_LIMIT:
        raise ConfigError(f"{key} must be an integer below 2^63, got {value!r}")
    if not isinstance(value, hint):
        raise ConfigError(f"{key} must be a {hint.__name__}, got {value!r}")
    return value


def check_value(f: dataclasses.Field, value: Any, key: str) -> None:
    """Check one field's ``value`` against its range and choices; raises :class:`ConfigError` naming ``key``."""
    if value is None:
        return
    bounds: Range | None = f.metadata.get("bounds")
    if bounds is not None:
        for item in value if isinstance(value, list) else [value]:
            message = bounds.problem(key, item)
            if message is not None:
                raise ConfigError(message)
    choices = f.metadata.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}{close_match(str(value), choices)}")


def check(settings: Any, prefix: str = "") -> None:
    """Check every field's range and choices (recursively); raises :class:`ConfigError` naming the dotted key."""
    for key, value, f in leaves(settings, prefix):
        check_value(f, value, key)


def describe_field(f: dataclasses.Field) -> str:
    """A field's help with its allowed values and range appended."""
    text = f.metadata.get("help", "")
    choices = f.metadata.get("choices")
    if choices is not None:
        text += f" -- one of: {', '.join(choices)}"
    bounds = f.metadata.get("bounds")
    if bounds is not None:
        text += f" -- {bounds.describe()}"
    if is_resumable(f):
        text += " -- may change when a run is resumed"
    return text


def is_resumable(f: dataclasses.Field) -> bool:
    """Whether a run may be resumed with another value of the field (see :func:`setting`)."""
    return bool(f.metadata.get("resumable", False))


def fields_by_key(settings: Any, prefix: str = "") -> dict[str, tuple[Any, dataclasses.Field]]:
    """Every dotted key of a settings dataclass with its current value and its field."""
    return {key: (value, f) for key, value, f in leaves(settings, prefix)}


def help_texts(settings: Any, prefix: str = "") -> dict[str, tuple[Any, str]]:
    """Every dotted key of a settings dataclass with its current value and help (allowed values included)."""
    return {key: (value, describe_field(f)) for key, value, f in leaves(settings, prefix)}


def deep_update(into: dict[str, Any], tree: Mapping[str, Any]) -> dict[str, Any]:
    """Merge the nested mapping ``tree`` into ``into`` (in place; later values win per key); returns ``into``."""
    for key, value in tree.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            deep_update(into[key], value)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value
    return into


def parse_override(text: str) -> dict[str, Any]:
    """``"loss.temperature=0.2"`` -> ``{"loss": {"temperature": 0.2}}`` (the value is read as YAML).

    Example:
        >>> parse_override("optim.lr=0.1")
        {'optim': {'lr': 0.1}}
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value with a dotted key, e.g. loss.temperature=0.2; got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML settings file; one-line errors for unreadable or invalid files."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text; save it as UTF-8 YAML") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    return data


__all__ = [
    "Reference",
    "AT_LEAST_ONE",
    "AT_LEAST_TWO",
    "FRACTION",
    "NON_EMPTY_SHARE",
    "NON_NEGATIVE",
    "POSITIVE",
    "UNIT_INTERVAL",
    "Range",
    "check",
    "check_value",
    "close_match",
    "coerce",
    "deep_update",
    "fields_by_key",
    "flattened",
    "help_texts",
    "is_flattened",
    "is_resumable",
    "leaves",
    "load_yaml",
    "merge",
    "parse_override",
    "require",
    "section",
    "setting",
    "top_level",
]
