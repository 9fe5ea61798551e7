"""Every environment variable dropsweep reads, read in one place.

A mistyped variable is a user mistake like a mistyped sweep key: one line naming the
variable, what it must hold and what it holds, exit status 2 — never a traceback from deep
inside a heartbeat thread or a cache lookup. An empty variable counts as unset (``VAR= cmd``
is how shells unset one for a single command).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from dropsweep.errors import DropsweepError


class EnvError(DropsweepError):
    """An environment variable dropsweep reads holds something it cannot use."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message, key=f"environment variable {name}")
        self.name = name


def raw(name: str) -> str | None:
    """The variable's text, or None when unset or empty."""
    value = os.environ.get(name)
    return value if value not in (None, "") else None


def integer(name: str, default: int, *, minimum: int, maximum: int | None = None,
            unit: str = "") -> int:
    """A whole number within bounds, else one line naming the variable."""
    text = raw(name)
    if text is None:
        return default
    try:
        value = int(text.strip())
    except ValueError:
        value = None
    if value is None or value < minimum or (maximum is not None and value > maximum):
        bounds = f"from {minimum} to {maximum}" if maximum is not None else f"{minimum} or more"
        what = f"a whole number{' of ' + unit if unit else ''}, {bounds}"
        raise EnvError(name, f"must be {what}, not {text!r}")
    return value


def choice(name: str, default: str, choices: Sequence[str]) -> str:
    """One of a few words, else one line listing them."""
    text = raw(name)
    if text is None:
        return default
    value = text.strip().lower()
    if value not in choices:
        raise EnvError(name, f"must be one of {', '.join(choices)}, not {text!r}")
    return value


def path(name: str) -> Path | None:
    """A directory path (``~`` expanded), or None when unset; one that exists and is not a
    directory is one line naming the variable."""
    text = raw(name)
    if text is None:
        return None
    where = Path(text).expanduser()
    if where.exists() and not where.is_dir():
        raise EnvError(name, f"must name a directory; {where} is a file")
    return where
