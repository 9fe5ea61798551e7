"""Stored trials read into plain rows, and the one ranking every command uses.

A :class:`TrialRow` reads only what Optuna stores (params, values, the user attributes named
in :mod:`dropsweep.records`), so it holds for a study written by any version of the runner,
one still running in another process, or one that was interrupted. The report, the runner's
summary, ``export``, ``confirm`` and ``studies`` all rank trials with :func:`best_first`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Iterable, TypeVar

from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from dropsweep import records
from dropsweep.families import DEFAULT_FAMILY

if TYPE_CHECKING:  # they read rows: their types only
    from dropsweep.answers.answer import Answer
    from dropsweep.answers.tested import TestResult
    from dropsweep.answers.verdict import Confirmation, ConfirmedRow

# Counts are listed in this order (then any state a future Optuna adds), so the finished
# trials come first in every summary.
STATE_ORDER = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")

_INTERRUPTED_REASON = "interrupted"

T = TypeVar("T")


def _rank(value: float, number: int, direction: StudyDirection | None) -> tuple[float, int]:
    """Sort key: the better value first in the study's direction, then the earlier trial."""
    return (value if direction == StudyDirection.MINIMIZE else -value, number)


def better(a: tuple[float, int], b: tuple[float, int], direction: StudyDirection | None = None
           ) -> bool:
    """Whether (value, number) ``a`` ranks before ``b``, as :func:`best_first` orders them."""
    return _rank(*a, direction) < _rank(*b, direction)


def best_first(trials: Iterable[T], direction: StudyDirection | None = None) -> list[T]:
    """The complete trials with a value, best first in the study's direction (maximise when
    not given), NaN skipped; ties go to the earlier trial (it was found first). Works on
    Optuna's trials and on :class:`TrialRow`."""

    def complete(t: Any) -> bool:
        state = t.state.name if isinstance(t.state, TrialState) else t.state
        return state == "COMPLETE" and t.value is not None and not math.isnan(t.value)

    return sorted((t for t in trials if complete(t)),
                  key=lambda t: _rank(t.value, t.number, direction))  # type: ignore[attr-defined]


@dataclass(frozen=True)
class TrialRow:
    """One stored trial, any state, with dropsweep's user attributes read out (None if absent)."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    role: str | None = None
    fold_accuracies: tuple[float, ...] = ()
    accuracy_mean: float | None = None
    accuracy_std: float | None = None
    train_accuracy: float | None = None
    test_log_loss: float | None = None
    epochs: int | None = None
    wall_time: float | None = None
    fail_reason: str | None = None
    datetime_start: datetime | None = None
    datetime_complete: datetime | None = None
    curve: tuple[tuple[int, float], ...] = ()  # (epoch, mean held-out accuracy) checkpoints

    @property
    def gap(self) -> float | None:
        """Train minus held-out accuracy: how much the configuration overfits."""
        if self.train_accuracy is None or self.accuracy_mean is None:
            return None
        return self.train_accuracy - self.accuracy_mean


@dataclass(frozen=True)
class PlacementRow:
    """The best complete trial of one dropout placement, compared with the baseline, with
    the budget it is the best of."""

    placement: str
    n_trials: int  # complete trials: the best is the maximum of this many noisy scores
    best: TrialRow
    diff_from_baseline: float | None
    pruned: int = 0
    # fewer than 1/UNEVEN of the complete trials of the most-tried placement: its best is
    # the maximum of far fewer scores, lower by chance alone
    uneven: bool = False
    confirmed: ConfirmedRow | None = None  # its best, from `confirm --per-placement`


@dataclass(frozen=True)
class Selection:
    """The configuration a rule (:data:`dropsweep.answers.select.RULES`) recommends."""

    rule: str
    chosen: TrialRow
    best: TrialRow
    threshold: float | None  # 1se: the best mean minus one standard error


@dataclass(frozen=True)
class StudyReport:
    """All numbers of one study's report; ``render`` only formats them."""

    name: str
    direction: str  # "MAXIMIZE" or "MINIMIZE" (Optuna's StudyDirection name)
    counts: dict[str, int]
    total_wall_time: float
    first_start: datetime | None
    last_update: datetime | None
    best: TrialRow | None
    baseline: TrialRow | None
    top: list[TrialRow]
    placements: list[PlacementRow]
    importances: dict[str, float]
    importance_note: str | None
    trials: list[TrialRow]
    param_names: list[str]
    confirmation: Confirmation | None = None  # from the study NAME:confirm, when there is one
    selection: Selection | None = None  # the configuration --select recommends
    family: str = DEFAULT_FAMILY  # the model family whose dimensions the study searched
    # the study's stored model section: the family bound to it (families.family_of_rows)
    model: dict[str, Any] | None = None
    # how placements got their trials: records.BALANCE ({"by": ..., "since": trial}), or None
    balance: dict | None = None
    test: TestResult | None = None  # from the study NAME:test, once `dropsweep test` ran
    protocol: str = "kfold"  # eval.protocol of its sweep: how its trials were scored
    answer: Answer | None = None  # the question's answer at the furthest stage reached
    data: str | None = None  # what it was searched on, in words ("sonar.csv", "digits")

    @property
    def n_trials(self) -> int:
        return len(self.trials)

    @property
    def failed(self) -> list[TrialRow]:
        """FAIL trials, by number: the report lists them with their reason."""
        return [t for t in self.trials if t.state == TrialState.FAIL.name]

    @property
    def n_folds(self) -> int:
        """The most folds any trial recorded (the CSV has one column per fold)."""
        return max((len(t.fold_accuracies) for t in self.trials), default=0)


# What a stored study is (StudyRow.kind): a search, or a companion that `dropsweep confirm`
# or `dropsweep test` wrote beside its search (records.CONFIRM_OF, records.TEST_OF)
KIND_SEARCH, KIND_CONFIRMATION, KIND_TEST = "search", "confirmation", "test"


@dataclass(frozen=True)
class StudyRow:
    """One line of the ``studies`` listing."""

    name: str
    counts: dict[str, int]
    n_trials: int
    best_value: float | None  # a search's best; None for a companion (its trials are not
    # candidates: the best test seed or confirmation repeat would only be the luckiest)
    last_update: datetime | None
    direction: str | None = None
    kind: str = KIND_SEARCH
    of: str | None = None  # a companion's search study


# ----------------------------------------------------------------------------- trial rows


def _number(value: Any) -> float | None:
    """A real number from a user attribute, or None (attributes are JSON: anything goes)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _folds(value: Any) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)):
        return ()
    return tuple(f for f in map(_number, value) if f is not None)


def _wall_time(trial: FrozenTrial) -> float | None:
    """Seconds the runner measured; else the span Optuna recorded (includes its overhead)."""
    stored = _number(trial.user_attrs.get(records.WALL_TIME))
    if stored is not None:
        return stored
    if trial.datetime_start is not None and trial.datetime_complete is not None:
        return (trial.datetime_complete - trial.datetime_start).total_seconds()
    return None


def _fail_reason(trial: FrozenTrial) -> str | None:
    reason = trial.user_attrs.get(records.FAIL_REASON)
    if isinstance(reason, str) and reason.strip():
        return reason
    if trial.state == TrialState.FAIL and trial.user_attrs.get(records.INTERRUPTED) is True:
        return _INTERRUPTED_REASON
    return None


def trial_row(trial: FrozenTrial) -> TrialRow:
    """Read one Optuna trial into a :class:`TrialRow`."""
    attrs = trial.user_attrs
    role = attrs.get(records.ROLE)
    value = trial.value if trial.values is not None and len(trial.values) == 1 else None
    return TrialRow(
        number=trial.number,
        state=trial.state.name,
        value=None if value is None else float(value),
        params=dict(trial.params),
        role=role if isinstance(role, str) else None,
        fold_accuracies=_folds(attrs.get(records.FOLD_ACCURACIES)),
        accuracy_mean=_number(attrs.get(records.ACCURACY_MEAN)),
        accuracy_std=_number(attrs.get(records.ACCURACY_STD)),
        train_accuracy=_number(attrs.get(records.TRAIN_ACCURACY)),
        test_log_loss=_number(attrs.get(records.TEST_LOG_LOSS)),
        epochs=_integer(attrs.get(records.EPOCHS)),
        wall_time=_wall_time(trial),
        fail_reason=_fail_reason(trial),
        datetime_start=trial.datetime_start,
        datetime_complete=trial.datetime_complete,
        curve=tuple(sorted((int(e), float(v)) for e, v in trial.intermediate_values.items())),
    )
