"""Checking one config value, and the words of every config message.

``checked`` converts a value to its field's type and holds it to the allowed choices and
ranges; the config sections (gradlab.config) call it for each field as they are built, so
a config made in code is held to the same rules as one read from a file. The helpers
format values as the user wrote them in YAML and suggest the nearest name for a typo.
Standard library only.
"""

import difflib
import math
import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, get_args

from gradlab.errors import ConfigError

# What YAML 1.2 calls a number; PyYAML (YAML 1.1) reads "1e-3" (no dot) as a string.
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


@dataclass(frozen=True)
class Range:
    """An interval of allowed numbers; ``str`` gives the rule as shown in messages."""

    low: float
    high: float | None = None  # None: unbounded above
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        if self.high is None:
            return above
        return above and (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


def at_least(low: float) -> Range:
    """[low, inf)."""
    return Range(low)


def above(low: float) -> Range:
    """(low, inf)."""
    return Range(low, low_open=True)


def join_path(prefix: str, key: object) -> str:
    """'model' + 'depth' -> 'model.depth'; '' + 'seed' -> 'seed'."""
    return f"{prefix}.{key}" if prefix else str(key)


def show(value: object) -> str:
    """A value as the user wrote it in YAML: true, null, 'text', 2.5."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str) and len(value) <= 60:
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."  # messages stay one readable line


def did_you_mean(word: object, candidates: Iterable[str]) -> str:
    """ "; did you mean 'relu'?" for the closest candidate, or ''."""
    matches = difflib.get_close_matches(str(word), list(candidates), n=1)
    return f"; did you mean '{matches[0]}'?" if matches else ""


def fail(path: str, problem: str) -> ConfigError:
    """The one-line error '<key path>: <problem>'."""
    return ConfigError(f"{path}: {problem}", path)


def is_section(annotation: object) -> bool:
    """A field typed by a dataclass is a section of keys (model, model.init, ...)."""
    return isinstance(annotation, type) and is_dataclass(annotation)


def _without_none(annotation: object) -> tuple[object, bool]:
    """(the type, whether null is allowed): int | None -> (int, True); int -> (int, False)."""
    if isinstance(annotation, types.UnionType) and type(None) in get_args(annotation):
        rest = [arg for arg in get_args(annotation) if arg is not type(None)]
        return (rest[0] if len(rest) == 1 else rest[0] | rest[1]), True
    return annotation, False


def expected(path: str, annotation: object, choices: Mapping, ranges: Mapping) -> str:
    """What a field may hold, in words: 'an integer >= 1', 'one of a, b'."""
    annotation, nullable = _without_none(annotation)
    if nullable:
        return f"{expected(path, annotation, choices, ranges)} or null"
    rule = f" {ranges[path]}" if path in ranges else ""
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return f"an integer{rule}"
    if annotation is float:
        return f"a number{rule}"
    if annotation == int | str:
        words = " or ".join(f"'{choice}'" for choice in choices[path])
        return f"an integer{rule} or {words}"
    if annotation == int | list[int]:
        return f"an integer{rule} or a list of integers{rule} (one per hidden layer)"
    if path in choices:
        return f"one of {', '.join(choices[path])}"
    return "a string"


def checked(path: str, annotation: object, value: Any, choices: Mapping, ranges: Mapping) -> Any:
    """``value`` converted to the field's type and checked against ``choices`` and ``ranges``
    (config.CHOICES and config.RANGES: allowed words and intervals by key path)."""
    if is_section(annotation):
        return value if isinstance(value, annotation) else build_section(annotation, value)
    declared = annotation  # with "| None": the words of messages say "or null"
    annotation, nullable = _without_none(annotation)
    if nullable and value is None:
        return None
    if annotation == int | list[int] and isinstance(value, list | tuple):
        return [_list_entry(path, position, item, ranges) for position, item in enumerate(value)]
    is_int = isinstance(value, int) and not isinstance(value, bool)  # bool is an int in Python
    if annotation is float:
        converted = as_float(value)
    elif annotation is bool:
        converted = value if isinstance(value, bool) else None
    elif annotation in (int, int | list[int]) or (
        annotation == int | str and not isinstance(value, str)
    ):
        converted = value if is_int else None
    else:
        converted = value if isinstance(value, str) else None
    if converted is None:
        raise fail(path, f"must be {expected(path, declared, choices, ranges)}, got {show(value)}")
    if isinstance(converted, float) and not math.isfinite(converted):
        raise fail(path, f"must be a finite number, got {show(value)}")
    if isinstance(converted, str) and path in choices and converted not in choices[path]:
        hint = did_you_mean(converted, choices[path])
        if annotation is str:
            allowed = ", ".join(choices[path])
            raise fail(path, f"{show(value)} is not one of {allowed}{hint}")
        raise fail(
            path, f"must be {expected(path, annotation, choices, ranges)}, got {show(value)}{hint}"
        )
    if path in ranges and not isinstance(converted, str) and converted not in ranges[path]:
        shown = converted if isinstance(value, str) else value  # '-1e-3' was meant as a number
        raise fail(path, f"must be {ranges[path]}, got {show(shown)}")
    return converted


def _list_entry(path: str, position: int, item: Any, ranges: Mapping) -> int:
    """Entry ``position`` (0-based) of a list of integers, held to the key's range."""
    rule = f" {ranges[path]}" if path in ranges else ""
    is_int = isinstance(item, int) and not isinstance(item, bool)
    if not is_int or (path in ranges and item not in ranges[path]):
        raise fail(path, f"entry {position + 1} must be an integer{rule}, got {show(item)}")
    return item


def as_float(value: Any) -> float | None:
    """A float from a float, an int (not a bool) or a numeric string like '1e-3'; else None."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value)
    if isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool)):
        try:
            return float(value)
        except OverflowError:  # an int beyond the float range
            return math.inf
    return None


def build_section(cls: type, mapping: Any) -> Any:
    """A section from a mapping holding some of its keys; null means all defaults."""
    if mapping is None:
        mapping = {}
    names = [item.name for item in fields(cls)]
    if not isinstance(mapping, Mapping):
        raise fail(
            cls._path, f"must be a mapping of keys ({', '.join(names)}), got {show(mapping)}"
        )
    for key in mapping:
        if key not in names:
            raise unknown_key(join_path(cls._path, key), key, names)
    return cls(**mapping)


def unknown_key(path: str, key: object, allowed: list[str], origin: str = "") -> ConfigError:
    """The error for a key the schema does not have, with a suggestion and the allowed keys."""
    where = f" in {origin}" if origin else ""
    hint = did_you_mean(key, allowed)
    return fail(path, f"unknown key{where}{hint} (allowed: {', '.join(allowed)})")


def first_difference(expected: Any, recorded: Any, labels: tuple[str, str], path: str = "") -> str:
    """'model.depth: 20 in the spec, 30 on disk' for the first key of two config mappings
    that differs, ``labels`` naming where each came from."""
    if isinstance(expected, Mapping) and isinstance(recorded, Mapping):
        for key in list(expected) + [k for k in recorded if k not in expected]:
            if expected.get(key) != recorded.get(key):
                return first_difference(
                    expected.get(key), recorded.get(key), labels, join_path(path, key)
                )
    return f"{path or 'config'}: {expected!r} {labels[0]}, {recorded!r} {labels[1]}"
