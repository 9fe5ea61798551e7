"""Everything a report shows, computed from the stored trials into plain numbers.

The report reads only what Optuna stores (params, values, the user attributes named in
:mod:`dropsweep.records`), so it works on a study written by any version of the runner, a
study still running in another process, or one that was interrupted. Formatting lives in
:mod:`dropsweep.render.report`; nothing here knows about colours, percent signs or column widths.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
import warnings
from datetime import datetime
from typing import Container, Iterable, Sequence

import optuna
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from dropsweep import records

from dropsweep.answers import answer
from dropsweep.answers.answer import Answer
from dropsweep.errors import StorageError
from dropsweep.answers.tested import TestResult, companion, stored_result
from dropsweep.families import Family, family_of_study, stored_model
from dropsweep.answers.rows import (KIND_CONFIRMATION, KIND_SEARCH, KIND_TEST, STATE_ORDER,
                            PlacementRow, StudyReport, StudyRow, TrialRow, best_first, trial_row)
from dropsweep.answers.select import select
from dropsweep.storage import optuna_private
from dropsweep.storage.read import describe, no_gc, read_all, stored_trials
from dropsweep.answers.verdict import Confirmation, build_confirmation

# Below this many complete trials PED-ANOVA's top quantile holds a single trial, so the
# importances come with a caution (Optuna suggests >= 5 trials in the top 10%).
_FEW_TRIALS = 10


# ----------------------------------------------------------------------------- helpers


def _counts(states: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for state in states:
        counts[state] = counts.get(state, 0) + 1
    known = {s: counts[s] for s in STATE_ORDER if s in counts}
    return {**known, **{s: n for s, n in sorted(counts.items()) if s not in known}}


def _param_names(rows: Iterable[TrialRow], fam: Family) -> list[str]:
    """Columns: the family's dimensions in its table's order, then any other parameter."""
    present = {name for r in rows for name in r.params}
    known = [d.name for d in fam.dimensions if d.name in present]
    return known + sorted(present - set(known))


def _last_activity(trials: Iterable[FrozenTrial]) -> datetime | None:
    stamps = [
        stamp
        for t in trials
        for stamp in (t.datetime_complete, t.datetime_start)
        if stamp is not None
    ]
    return max(stamps, default=None)


# A placement with fewer than 1/UNEVEN of the most-tried placement's complete trials is
# marked: the best of 4 noisy scores against the best of 87 is no comparison.
UNEVEN = 2


def _placements(ranked: list[TrialRow], rows: list[TrialRow], baseline: TrialRow | None,
                fam: Family, confirmation: Confirmation | None) -> list[PlacementRow]:
    """The best trial of each value of the family's group dimension (its placements), with
    its budget (complete and pruned trials) and, once ``confirm --per-placement`` ran, its
    confirmed reading."""
    by_placement: dict[str, list[TrialRow]] = {}
    for row in ranked:  # best first, so the first row of each placement is its best
        placement = row.params.get(fam.group)
        if placement is None:
            continue
        by_placement.setdefault(str(placement), []).append(row)
    pruned: dict[str, int] = {}
    for row in rows:
        if row.state == TrialState.PRUNED.name and fam.group in row.params:
            key = str(row.params[fam.group])
            pruned[key] = pruned.get(key, 0) + 1
    order = [p for p in fam.group_values if p in by_placement]
    order += sorted(p for p in by_placement if p not in fam.group_values)
    most = max((len(v) for v in by_placement.values()), default=0)
    confirmed = confirmation.per_placement.placements if (
        confirmation is not None and confirmation.per_placement is not None) else {}
    result = []
    for placement in order:
        best = by_placement[placement][0]
        diff = None
        if baseline is not None and baseline.accuracy_mean is not None \
                and best.accuracy_mean is not None:
            diff = best.accuracy_mean - baseline.accuracy_mean
        n = len(by_placement[placement])
        result.append(PlacementRow(placement, n, best, diff, pruned=pruned.get(placement, 0),
                                   uneven=n * UNEVEN < most,
                                   confirmed=confirmed.get(placement)))
    return result


def _protocol(study: optuna.Study) -> str:
    """``eval.protocol`` of the study's sweep (k-fold for a study made before there was one)."""
    sweep = study.user_attrs.get(records.STUDY_SWEEP)
    evaluation = sweep.get("eval") if isinstance(sweep, dict) else None
    protocol = evaluation.get("protocol") if isinstance(evaluation, dict) else None
    return protocol if protocol in ("kfold", "holdout") else "kfold"


def _balance(study: optuna.Study) -> dict | None:
    """How the study shared its trials out among placements, as its searches recorded."""
    value = study.user_attrs.get(records.BALANCE)
    return value if isinstance(value, dict) else None


def _importances(study: optuna.Study, n_complete: int) -> tuple[dict[str, float], str | None]:
    """PED-ANOVA importances over complete trials, or why there are none.

    Dropsweep's space is conditional (a rate exists only where its placement uses it), which
    PED-ANOVA handles in Optuna 5; should it still raise, retry with the parameters every
    complete trial has. Optuna's own "normalise zeros to equal shares" is not used: equal
    shares would read as a finding when no parameter separates the best trials at all.
    """
    if n_complete < 2:
        return {}, f"needs at least 2 complete trials (the study has {n_complete})"
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    common = set.intersection(*(set(t.params) for t in complete))
    # A parameter that never varied carries no information; PED-ANOVA still gives it a
    # small score (its density estimates differ only in bandwidth), which would mislead.
    varying = {
        name
        for name in {n for t in complete for n in t.params}
        if len({repr(t.params[name]) for t in complete if name in t.params}) > 1
    }
    if not varying:
        return {}, "no parameter varied across the complete trials"

    def evaluate(params: list[str] | None) -> dict[str, float]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # few-trial and experimental warnings
            return optuna_private.param_importances(study, params=params, normalize=False)

    try:
        raw = evaluate(None)
    except Exception as first:  # a report must survive whatever the evaluator trips on
        if not common:
            return {}, f"cannot be computed: {first}"
        try:
            raw = evaluate(sorted(common))
        except Exception as second:
            return {}, f"cannot be computed: {second}"
    scores = {
        k: float(v) for k, v in raw.items() if k in varying and math.isfinite(v) and v >= 0.0
    }
    total = sum(scores.values())
    if total <= 0.0:
        return {}, "no parameter separates the best trials from the rest (all importances are 0)"
    ordered = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    note = None
    if n_complete < _FEW_TRIALS:
        note = f"only {n_complete} complete trials: importances are rough"
    return {k: v / total for k, v in ordered}, note


# ----------------------------------------------------------------------------- one study


def _direction(study_name: str, directions: Sequence[StudyDirection]) -> StudyDirection:
    if len(directions) != 1:
        raise StorageError(
            f"study {study_name!r} has {len(directions)} objectives; "
            "dropsweep reports single-objective studies only"
        )
    return directions[0]


def _confirmation(study: optuna.Study, folds: int, fam: Family, names: Container[str]
                  ) -> Confirmation | None:
    """The companion confirmation study's reading, if ``dropsweep confirm`` made one
    (``names``: the storage's study names)."""
    confirm = companion(study, records.CONFIRM_SUFFIX, names) if folds >= 1 else None
    return None if confirm is None else build_confirmation(confirm, folds, fam)


def data_words(user_attrs: dict) -> str | None:
    """What a study was searched on, in a word or two: its data file's name or its built-in
    set (from its stored sweep)."""
    sweep = user_attrs.get(records.STUDY_SWEEP)
    data = sweep.get("data") if isinstance(sweep, dict) else None
    if not isinstance(data, dict):
        return None
    for key in ("csv", "npz"):
        if data.get(key):
            return str(data[key]).replace("\\", "/").rsplit("/", 1)[-1]
    return str(data["dataset"]) if data.get("dataset") else None


def _answer(study: optuna.Study, ranked: list[TrialRow], baseline: TrialRow | None,
            fam: Family, confirmation: Confirmation | None, test: TestResult | None,
            storage_args: Sequence[str]) -> Answer:
    """The study's answer at the furthest stage it reached (:mod:`dropsweep.answers.answer`)."""
    rows_attr = study.user_attrs.get(records.DATA_ROWS)
    test_rows = rows_attr.get("test_rows") if isinstance(rows_attr, dict) else None
    confirmed = (None if confirmation is None
                 else answer.from_confirmation(confirmation, fam))
    tested = None if test is None else answer.from_test(test)
    if test is not None:
        test_rows = test.n_test
    bests: dict[str, int] = {}
    for row in ranked:  # best first: each placement's first row is its best
        bests.setdefault(str(row.params.get(fam.group)), row.number)
    return answer.build_answer(
        study.study_name, answer.from_search(ranked, baseline, fam), len(ranked),
        confirmation=confirmation if confirmed is not None else None, confirmed=confirmed,
        tested=tested, seeds=0 if test is None else len(test.seeds), test_rows=test_rows,
        storage_args=storage_args,
        is_stale=confirmed is not None and answer.stale(confirmation, bests))


@dataclass(frozen=True)
class _Read:
    """One read of a study and its companions: what the report and the answer are built
    from."""

    direction: StudyDirection
    frozen: list[FrozenTrial]
    rows: list[TrialRow]
    ranked: list[TrialRow]
    baseline: TrialRow | None
    fam: Family
    confirmation: Confirmation | None
    test: TestResult | None

    def answer(self, study: optuna.Study, storage_args: Sequence[str]) -> Answer:
        return _answer(study, self.ranked, self.baseline, self.fam, self.confirmation,
                       self.test, storage_args)


def _read(study: optuna.Study) -> _Read:
    direction = _direction(study.study_name, study.directions)
    frozen = stored_trials(optuna_private.study_storage(study),  # read once
                           optuna_private.study_id(study))
    with no_gc():
        rows = [trial_row(t) for t in frozen]
    ranked = best_first(rows, direction)
    complete = TrialState.COMPLETE.name
    baselines = [r for r in rows if r.state == complete and r.role == records.ROLE_BASELINE]
    fam = family_of_study(study.user_attrs)
    # the companions (NAME:confirm, NAME:test) are looked for in one listing of the storage
    names = {s.study_name for s in optuna_private.study_storage(study).get_all_studies()}
    confirmation = _confirmation(study, max((len(r.fold_accuracies) for r in rows), default=0),
                                 fam, names)
    return _Read(direction, frozen, rows, ranked,
                 baselines[0] if baselines else None,  # the first: later ones are repeats
                 fam, confirmation, stored_result(study, names))


def study_answer(study: optuna.Study, storage_args: Sequence[str] = ()
                 ) -> tuple[Answer, Family, str | None]:
    """The study's answer alone (the end of ``dropsweep search`` prints it), with its family
    and data in words: no importances, no tables."""
    read = _read(study)
    return read.answer(study, storage_args), read.fam, data_words(study.user_attrs)


def build_report(study: optuna.Study, top: int = 10, select_rule: str = "best",
                 storage_args: Sequence[str] = ()) -> StudyReport:
    """Compute a study's report; read-only, so it can run while the sweep is still going.
    ``storage_args``: how the commands it suggests name the storage (none: the default)."""
    read = _read(study)
    rows, ranked, frozen, fam = read.rows, read.ranked, read.frozen, read.fam
    importances, note = _importances(_AsRead(study, frozen), len(ranked))
    starts = [t.datetime_start for t in frozen if t.datetime_start is not None]
    return StudyReport(
        name=study.study_name,
        direction=read.direction.name,
        counts=_counts(r.state for r in rows),
        total_wall_time=sum(r.wall_time for r in rows if r.wall_time is not None),
        first_start=min(starts, default=None),
        last_update=_last_activity(frozen),
        best=ranked[0] if ranked else None,
        baseline=read.baseline,
        top=ranked[: max(top, 0)],
        placements=_placements(ranked, rows, read.baseline, fam, read.confirmation),
        importances=importances,
        importance_note=note,
        trials=rows,
        param_names=_param_names(rows, fam),
        confirmation=read.confirmation,
        selection=select(ranked, select_rule, fam.dimensions,
                         study.user_attrs.get(records.VALIDATION_ROWS)),
        family=fam.name,
        model=stored_model(study.user_attrs),
        balance=_balance(study),
        test=read.test,
        protocol=_protocol(study),
        answer=read.answer(study, storage_args),
        data=data_words(study.user_attrs),
    )


# ----------------------------------------------------------------------------- storage


class _AsRead(optuna.Study):
    """A study whose trials are the ones the report already read: the importance evaluator
    asks for them again, which would read a big RDB study a second time (and might see a
    running sweep's newer trials than the rest of the report)."""

    def __init__(self, study: optuna.Study, trials: list[FrozenTrial]) -> None:
        super().__init__(study_name=study.study_name,
                         storage=optuna_private.study_storage(study),
                         sampler=study.sampler, pruner=study.pruner)
        self._as_read = trials

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        trials = [t for t in self._as_read if states is None or t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials


def _kind(attrs: dict) -> tuple[str, str | None]:
    """(kind, search study) from a study's user attributes: a companion says whose it is."""
    for key, kind in ((records.CONFIRM_OF, KIND_CONFIRMATION), (records.TEST_OF, KIND_TEST)):
        if key in attrs:
            of = attrs[key]
            return kind, of if isinstance(of, str) else None
    return KIND_SEARCH, None


def list_studies(storage: str | BaseStorage) -> list[StudyRow]:
    """Summarise every study in a storage, read-only (listing must not create a database):
    the searches in the storage's order, each followed by its confirmation and test."""
    result = []
    for study, trials in read_all(storage):
        directions = list(study.directions)
        kind, of = _kind(study.user_attrs)
        best_value = None
        direction_name = None
        if len(directions) == 1:
            direction_name = directions[0].name
            ranked = best_first(trials, directions[0]) if kind == KIND_SEARCH else []
            best_value = ranked[0].value if ranked else None
        result.append(
            StudyRow(
                name=study.study_name,
                counts=_counts(t.state.name for t in trials),
                n_trials=len(trials),
                best_value=None if best_value is None else float(best_value),
                last_update=_last_activity(trials),
                direction=direction_name,
                kind=kind,
                of=of,
            )
        )
    searches = {r.name for r in result if r.kind == KIND_SEARCH}
    companions: dict[str, list[StudyRow]] = {}
    for row in result:
        if row.kind != KIND_SEARCH and row.of in searches:
            companions.setdefault(row.of, []).append(row)  # type: ignore[arg-type]
    ordered = []
    for row in result:
        if row.kind == KIND_SEARCH:
            ordered += [row, *companions.get(row.name, [])]
        elif row.of not in searches:  # its search is gone: listed where it is
            ordered.append(row)
    return ordered


def latest_study_name(storage: str | BaseStorage) -> str:
    """The study worked on most recently: the default when the user names none."""
    # a confirmation (NAME:confirm) or a test (NAME:test) is part of its search study, not a
    # study to report alone
    studies = [(s, t) for s, t in read_all(storage, stamps_only=True)
               if records.CONFIRM_OF not in s.user_attrs and records.TEST_OF not in s.user_attrs]
    if not studies:
        raise StorageError(
            f"no studies in {describe(storage)}; run a sweep first or check the storage URL"
        )
    # Studies without trials rank below any activity; among them, the newest created wins.
    best = max(
        enumerate(studies),
        key=lambda item: (
            _last_activity(item[1][1]) is not None,
            _last_activity(item[1][1]) or datetime.min,
            item[0],
        ),
    )
    return best[1][0].study_name
