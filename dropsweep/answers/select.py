"""Choosing with the noise in mind, and comparing studies (plain numbers; render words them).

``best`` takes the highest mean. ``1se`` is the one-standard-error rule (Breiman et al.;
Hastie, Tibshirani and Friedman): among the configurations whose mean lies within one
standard error of the best one's mean, take the simplest — in the order its family's
dimension table declares (for the MLP: no dropout before input dropout before hidden before
both, then lower rates, then no max-norm) — since the best mean is partly luck and a
simpler model within its noise is as good a bet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from dropsweep.sweep import space
from dropsweep.families import family_of_rows
from dropsweep.sweep.space import Dimension

from dropsweep.answers.rows import PlacementRow, Selection, StudyReport, TrialRow

RULES = ("best", "1se")


def standard_error(row: TrialRow, validation_rows: int | None = None) -> float | None:
    """Of the mean over folds: sample standard deviation / sqrt(k). One hold-out split has
    no spread over folds: its accuracy's binomial standard error over ``validation_rows``
    rows, sqrt(p(1 - p) / n), stands in."""
    folds = row.fold_accuracies
    if len(folds) == 1 and validation_rows:
        p = folds[0]
        return math.sqrt(p * (1.0 - p) / validation_rows)
    if len(folds) < 2:
        return None
    return float(np.std(folds, ddof=1) / math.sqrt(len(folds)))


def simplicity(row: TrialRow, dimensions: Sequence[Dimension]) -> tuple:
    """Sort key, simplest first (:func:`dropsweep.sweep.space.simplicity`), then the higher mean,
    then the earlier trial."""
    return (*space.simplicity(dimensions, row.params), -(row.accuracy_mean or 0.0), row.number)


def select(ranked: Sequence[TrialRow], rule: str, dimensions: Sequence[Dimension],
           validation_rows: int | None = None) -> Selection | None:
    """The configuration ``rule`` recommends among ``ranked``: the complete trials best
    first, as the report ranks them; ``dimensions`` (the study's family's) say which is
    simplest; ``validation_rows``: a hold-out study's validation split size."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    scored = [r for r in ranked if r.accuracy_mean is not None]
    if not scored:
        return None
    best = scored[0]
    if rule == "best":
        return Selection(rule, best, best, None)
    se = standard_error(best, validation_rows)
    threshold = best.accuracy_mean - (se or 0.0)
    close = [r for r in scored if r.accuracy_mean >= threshold]
    return Selection(rule, min(close, key=lambda r: simplicity(r, dimensions)), best, threshold)


@dataclass(frozen=True)
class ComparedPlacement:
    """One placement across several studies: each study's best trial of it, if any."""

    placement: str
    cells: list[PlacementRow | None]


def compare_studies(reports: Sequence[StudyReport]) -> list[ComparedPlacement]:
    """Placements in the first study's family's order, then any other study's."""
    present = list(dict.fromkeys(row.placement for r in reports for row in r.placements))
    order = family_of_rows(reports[0]).group_values if reports else ()
    names = [p for p in order if p in present] + [p for p in present if p not in order]
    return [ComparedPlacement(p, [next((row for row in r.placements if row.placement == p),
                                       None) for r in reports]) for p in names]
