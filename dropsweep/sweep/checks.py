"""Validation helpers that know where each key of a sweep was written.

Shared by the generic sections (:mod:`dropsweep.sweep.config`) and the dimension tables of the
model families (:mod:`dropsweep.sweep.space`), so every mistake reads the same: one line naming
the file, the line and the dotted key.
"""

from __future__ import annotations

import difflib
import math
from typing import Any

from dropsweep.errors import SweepError
from dropsweep.sweep.file import RawSweep


class Checker:
    """Validation helpers that know where each key was written."""

    def __init__(self, raw: RawSweep) -> None:
        self.raw = raw

    def fail(self, key: str, message: str) -> SweepError:
        return SweepError(message, **self.raw.where(key))

    def unknown_keys(self, mapping: dict[str, Any], allowed: tuple[str, ...], prefix: str) -> None:
        for key in mapping:
            if key not in allowed:
                name = str(key)
                close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.5)
                hint = f"; did you mean '{close[0]}'?" if close else (
                    f"; valid keys: {', '.join(allowed)}" if allowed else "")
                where = self.raw.where(f"{prefix}.{name}" if prefix else name)
                # An empty key or one with spaces would vanish from the one-line message.
                if not name or name != "".join(name.split()):
                    where["key"] = f"{prefix}.{name!r}" if prefix else repr(name)
                raise SweepError(f"unknown key{hint}", **where)

    def section(self, name: str) -> dict[str, Any]:
        value = self.raw.data.get(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(name, f"must be a mapping of keys, got {describe(value)}")
        return value

    def integer(self, key: str, value: Any, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be an integer, got {describe(value)}")
        if minimum is not None and value < minimum:
            raise self.fail(key, f"must be at least {minimum}, got {value}")
        return value

    def number(self, key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"must be a number, got {describe(value)}")
        try:
            number = float(value)  # an int too large for a float overflows
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise self.fail(key, f"must be a finite number, got {describe(value)}")
        return number

    def string(self, key: str, value: Any, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, got {describe(value)}")
        if choices is not None and value not in choices:
            close = difflib.get_close_matches(value, choices, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise self.fail(key, f"must be one of {', '.join(choices)}, got '{value}'{hint}")
        return value


def describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string '{_shorten(value)}'"
    try:
        shown = repr(value)
    except ValueError:  # an int with more digits than Python will print
        shown = "(too large to show)"
    return f"{type(value).__name__} {_shorten(shown)}"


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
