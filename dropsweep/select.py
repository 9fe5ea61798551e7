"""Choosing with the noise in mind, and comparing studies (plain numbers; render words them).

``best`` takes the highest mean. ``1se`` is the one-standard-error rule (Breiman et al.;
Hastie, Tibshirani and Friedman): among the configurations whose mean lies within one
standard error of the best one's mean, take the simplest — no dropout before input dropout
before hidden before both, then lower rates, then no max-norm — since the best mean is
partly luck and a simpler model within its noise is as good a bet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from dropsweep import records

if TYPE_CHECKING:  # report.py calls select(): import its types only
    from dropsweep.report import PlacementRow, StudyReport, TrialRow

RULES = ("best", "1se")
_SIMPLER = {p: i for i, p in enumerate(records.PLACEMENTS)}  # none < input < hidden < both


@dataclass(frozen=True)
class Selection:
    rule: str
    chosen: TrialRow
    best: TrialRow
    threshold: float | None  # 1se: the best mean minus one standard error


def standard_error(row: TrialRow) -> float | None:
    """Of the mean over folds: sample standard deviation / sqrt(k)."""
    folds = row.fold_accuracies
    if len(folds) < 2:
        return None
    return float(np.std(folds, ddof=1) / math.sqrt(len(folds)))


def simplicity(row: TrialRow) -> tuple:
    """Sort key, simplest first: placement, then total dropout rate, then max-norm."""
    p = row.params
    rate = (float(p.get(records.PARAM_INPUT_RATE, 0.0))
            + float(p.get(records.PARAM_HIDDEN_RATE, 0.0)))
    return (_SIMPLER.get(str(p.get(records.PARAM_PLACEMENT)), len(_SIMPLER)), rate,
            p.get(records.PARAM_MAX_NORM) is not None, -(row.accuracy_mean or 0.0), row.number)


def select(ranked: Sequence[TrialRow], rule: str) -> Selection | None:
    """The configuration ``rule`` recommends among ``ranked``: the complete trials best
    first, as the report ranks them."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    scored = [r for r in ranked if r.accuracy_mean is not None]
    if not scored:
        return None
    best = scored[0]
    if rule == "best":
        return Selection(rule, best, best, None)
    se = standard_error(best)
    threshold = best.accuracy_mean - (se or 0.0)
    close = [r for r in scored if r.accuracy_mean >= threshold]
    return Selection(rule, min(close, key=simplicity), best, threshold)


@dataclass(frozen=True)
class ComparedPlacement:
    """One placement across several studies: each study's best trial of it, if any."""

    placement: str
    cells: list[PlacementRow | None]


def compare_studies(reports: Sequence[StudyReport]) -> list[ComparedPlacement]:
    names = [p for p in records.PLACEMENTS
             if any(row.placement == p for r in reports for row in r.placements)]
    return [ComparedPlacement(p, [next((row for row in r.placements if row.placement == p),
                                       None) for r in reports]) for p in names]
