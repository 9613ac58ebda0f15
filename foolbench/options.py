"""Option rules, checked one way wherever options come from: presets, protocols, encodings, engines.

Each owner declares its options once, as a table of rules (`{"lr": Float(0, 100, positive=True)}`);
`check_table` refuses unknown names (a typo must not pass silently) and bad values, naming the key
as `section.key` in a one-line FoolbenchError. Values come back as plain Python numbers (numpy
scalars become int/float), so they serialise into manifests and compare equal across runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from foolbench.errors import FoolbenchError


def _fail(name: str, must: str, value: Any) -> FoolbenchError:
    return FoolbenchError(f"'{name}' must be {must}, got {value!r}")


def _is_number(value: Any, integer: bool) -> bool:
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    return isinstance(value, kinds) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class Int:
    """A whole number in [low, high] (no upper bound when high is None); `none`: None is allowed too."""

    low: int
    high: int | None = None
    none: bool = False

    def check(self, name: str, value: Any) -> int | None:
        if value is None and self.none:
            return None
        if not _is_number(value, integer=True):
            raise _fail(name, "a whole number", value)
        if value < self.low or (self.high is not None and value > self.high):
            bounds = f"between {self.low} and {self.high}" if self.high is not None else f">= {self.low}"
            raise _fail(name, bounds, value)
        return int(value)


@dataclass(frozen=True)
class Float:
    """A finite number in [low, high] (above low when `positive`; no upper bound when high is None)."""

    low: float
    high: float | None = None
    positive: bool = False

    def check(self, name: str, value: Any) -> float:
        if not _is_number(value, integer=False) or not math.isfinite(value):
            raise _fail(name, "a finite number", value)
        too_low = value <= self.low if self.positive else value < self.low
        if too_low or (self.high is not None and value > self.high):
            raise _fail(name, self._bounds(), value)
        return float(value)

    def _bounds(self) -> str:
        if self.positive:
            return f"> {self.low}" + ("" if self.high is None else f" and <= {self.high}")
        return f">= {self.low}" if self.high is None else f"between {self.low} and {self.high}"


@dataclass(frozen=True)
class Choice:
    """One of a few allowed values (booleans never pass as 0 or 1)."""

    choices: tuple

    def check(self, name: str, value: Any) -> Any:
        whole = all(isinstance(c, int) for c in self.choices)  # then 1.0 is not the choice 1
        wrong_type = isinstance(value, (bool, np.bool_)) or (whole and not _is_number(value, integer=True))
        if wrong_type or value not in self.choices:
            raise _fail(name, f"one of {', '.join(map(str, self.choices))}", value)
        return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True)
class Bool:
    """A switch: true or false only, so that a typo (1, "yes") cannot silently turn it on."""

    def check(self, name: str, value: Any) -> bool:
        if not isinstance(value, (bool, np.bool_)):
            raise _fail(name, "true or false", value)
        return bool(value)


@dataclass(frozen=True)
class Text:
    def check(self, name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise _fail(name, "text", value)
        return value


@dataclass(frozen=True)
class Texts:
    """A list of strings (names)."""

    def check(self, name: str, value: Any) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _fail(name, "a list of names", value)
        return value


@dataclass(frozen=True)
class Seeds:
    """A non-empty list of distinct whole numbers >= 0."""

    def check(self, name: str, value: Any) -> list[int]:
        ok = (
            isinstance(value, list)
            and value
            and all(_is_number(v, integer=True) and 0 <= v < 2**63 for v in value)
            and len(set(value)) == len(value)
        )
        if not ok:
            raise _fail(name, "a list of distinct seeds >= 0", value)
        return [int(v) for v in value]


@dataclass(frozen=True)
class Counts:
    """A non-empty list of whole numbers >= 1 in increasing order (e.g. query counts)."""

    def check(self, name: str, value: Any) -> list[int]:
        ok = (
            isinstance(value, list)
            and value
            and all(_is_number(v, integer=True) and 1 <= v < 2**63 for v in value)
            and all(a < b for a, b in zip(value, value[1:], strict=False))
        )
        if not ok:
            raise _fail(name, "a list of whole numbers >= 1 in increasing order", value)
        return [int(v) for v in value]


@dataclass(frozen=True)
class Classes:
    """Target classes as a preset gives them (resolved against a model's labels by `parse_classes`)."""

    def check(self, name: str, value: Any) -> Any:
        if not (
            isinstance(value, str)
            or (isinstance(value, list) and all(isinstance(v, (int, str)) for v in value))
        ):
            raise _fail(name, "'all', a range text like '0-9', or a list of indices/labels", value)
        return value


@dataclass(frozen=True)
class Table:
    """A table of keys that its owner checks itself (e.g. a protocol's suites)."""

    def check(self, name: str, value: Any) -> Any:
        if not isinstance(value, dict):
            raise FoolbenchError(f"[{name}] must be a table of keys")
        return value


Rule = Int | Float | Choice | Bool | Text | Texts | Seeds | Counts | Classes | Table


def check_table(given: Mapping[str, Any], rules: Mapping[str, Rule], section: str) -> dict[str, Any]:
    """The values of `given`, each checked against its rule; a name without a rule is an error."""
    if not isinstance(given, Mapping):
        raise FoolbenchError(f"[{section}] must be a table of keys")
    unknown = [key for key in given if key not in rules]
    if unknown:
        raise FoolbenchError(f"unknown key '{section}.{unknown[0]}'; known: {', '.join(rules)}")
    return {key: rules[key].check(f"{section}.{key}", value) for key, value in given.items()}


def with_defaults(
    given: Mapping[str, Any], defaults: Mapping[str, Any], rules: Mapping[str, Rule], section: str
) -> dict[str, Any]:
    """`given` over `defaults`, every value checked (what an encoding or engine is built with)."""
    return check_table({**defaults, **given}, rules, section)
