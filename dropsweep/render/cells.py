"""Numbers as the text of a cell: percent, points, intervals, p-values, counts, dates — what
every answer's tables share. An empty cell means "does not apply"; :data:`MISSING`, a number
that was not recorded."""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: rendering must not import Optuna (answers/rows.py does)
    from dropsweep.answers.rows import TrialRow
    from dropsweep.answers.stats import Interval

MISSING = "—"  # a number that was not recorded (an empty cell means "does not apply")


def percent(fraction: float | None) -> str:
    return MISSING if fraction is None else f"{fraction * 100:.2f}%"


def accuracy(row: TrialRow) -> str:
    """Mean ± std of the fold accuracies in percent ("86.04% ± 5.12"), as papers quote CV."""
    mean = row.accuracy_mean if row.accuracy_mean is not None else row.value
    if mean is None:
        return MISSING
    if row.accuracy_std is None or len(row.fold_accuracies) == 1:  # one hold-out split
        return percent(mean)
    return f"{mean * 100:.2f}% ± {row.accuracy_std * 100:.2f}"


def points(diff: float | None) -> str:
    """A difference of two accuracies in percentage points, always signed."""
    return MISSING if diff is None else f"{diff * 100:+.2f} pp"


def when(moment: datetime | None) -> str:
    return MISSING if moment is None else moment.isoformat(sep=" ", timespec="seconds")


def param(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):  # a switch (the conv nets' spatial): yes or no
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def states(counts: dict[str, int], total: int) -> str:
    """Total and per-state counts in one cell, e.g. "12 (9 complete, 2 pruned, 1 fail)"."""
    parts = ", ".join(f"{n} {state.lower()}" for state, n in counts.items())
    return f"{total} ({parts})" if parts else str(total)


def trial_number(number: int) -> str:
    return "base" if number < 0 else f"#{number}"


def ci_percent(interval: Interval) -> str:
    if math.isnan(interval.low):
        return MISSING
    return f"[{interval.low * 100:.2f}, {interval.high * 100:.2f}]"


def p_text(p: float | None) -> str:
    if p is None or math.isnan(p):
        return MISSING
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def p_words(p: float) -> str:
    """"p = 0.021" or "p < 0.001", for a sentence."""
    text = p_text(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"
