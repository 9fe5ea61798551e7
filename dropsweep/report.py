"""Everything a report shows, computed from the stored trials into plain numbers.

The report reads only what Optuna stores (params, values, the user attributes named in
:mod:`dropsweep.records`), so it works on a study written by any version of the runner, a
study still running in another process, or one that was interrupted. Formatting lives in
:mod:`dropsweep.render`; nothing here knows about colours, percent signs or column widths.
"""

from __future__ import annotations

import copy
import gc
import json
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Container, Iterable, Iterator, Sequence

import optuna
import sqlalchemy
from optuna.storages import BaseStorage, RDBStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from dropsweep import records
from dropsweep.errors import StorageError
from dropsweep.families import DEFAULT_FAMILY, Family, family_of_study
from dropsweep.select import Selection, select
from dropsweep.storage import describe_failure, mask_url, open_storage
from dropsweep.verdict import Confirmation, build_confirmation

CONFIRM_SUFFIX = ":confirm"  # the companion study `dropsweep confirm` writes (confirm.py)


def confirm_name(study_name: str) -> str:
    return study_name + CONFIRM_SUFFIX

__all__ = [
    "STATE_ORDER",
    "PlacementRow",
    "StudyReport",
    "StudyRow",
    "TrialRow",
    "build_report",
    "latest_study_name",
    "list_studies",
    "trial_row",
]

# Counts are listed in this order (then any state a future Optuna adds), so the finished
# trials come first in every summary.
STATE_ORDER = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


_INTERRUPTED_REASON = "interrupted"

# Below this many complete trials PED-ANOVA's top quantile holds a single trial, so the
# importances come with a caution (Optuna suggests >= 5 trials in the top 10%).
_FEW_TRIALS = 10


# ----------------------------------------------------------------------------- rows


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
    """The best complete trial of one dropout placement, compared with the baseline."""

    placement: str
    n_trials: int
    best: TrialRow
    diff_from_baseline: float | None


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

    @property
    def n_trials(self) -> int:
        return len(self.trials)

    @property
    def failed(self) -> list[TrialRow]:
        """FAIL trials, by number: the report lists them with their reason."""
        return [t for t in self.trials if t.state == TrialState.FAIL.name]

    @property
    def overfitting(self) -> list[TrialRow]:
        """The best trial of each placement: its train/held-out gap and learning curve."""
        return [p.best for p in self.placements]

    @property
    def n_folds(self) -> int:
        """The most folds any trial recorded (the CSV has one column per fold)."""
        return max((len(t.fold_accuracies) for t in self.trials), default=0)


@dataclass(frozen=True)
class StudyRow:
    """One line of the ``studies`` listing."""

    name: str
    counts: dict[str, int]
    n_trials: int
    best_value: float | None
    last_update: datetime | None
    direction: str | None = None


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


# ----------------------------------------------------------------------------- helpers


def _counts(states: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for state in states:
        counts[state] = counts.get(state, 0) + 1
    known = {s: counts[s] for s in STATE_ORDER if s in counts}
    return {**known, **{s: n for s, n in sorted(counts.items()) if s not in known}}


def _ranked(rows: Sequence[TrialRow], direction: StudyDirection) -> list[TrialRow]:
    """Complete trials best first; ties go to the earlier trial (it was found first)."""
    sign = -1.0 if direction == StudyDirection.MAXIMIZE else 1.0
    done = [
        r
        for r in rows
        if r.state == TrialState.COMPLETE.name and r.value is not None and not math.isnan(r.value)
    ]
    return sorted(done, key=lambda r: (sign * r.value, r.number))  # type: ignore[operator]


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


def _placements(
    ranked: list[TrialRow], baseline: TrialRow | None, fam: Family
) -> list[PlacementRow]:
    """The best trial of each value of the family's group dimension (its placements)."""
    by_placement: dict[str, list[TrialRow]] = {}
    for row in ranked:  # best first, so the first row of each placement is its best
        placement = row.params.get(fam.group)
        if placement is None:
            continue
        by_placement.setdefault(str(placement), []).append(row)
    order = [p for p in fam.group_values if p in by_placement]
    order += sorted(p for p in by_placement if p not in fam.group_values)
    result = []
    for placement in order:
        rows = by_placement[placement]
        best = rows[0]
        diff = None
        if (
            baseline is not None
            and baseline.accuracy_mean is not None
            and best.accuracy_mean is not None
        ):
            diff = best.accuracy_mean - baseline.accuracy_mean
        result.append(PlacementRow(placement, len(rows), best, diff))
    return result


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
            return optuna.importance.get_param_importances(
                study, params=params, normalize=False
            )

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


def _confirmation(study: optuna.Study, folds: int, fam: Family) -> Confirmation | None:
    """The companion confirmation study's reading, if ``dropsweep confirm`` made one."""
    name = confirm_name(study.study_name)
    storage = study._storage  # noqa: SLF001 - the same storage, already open read-only
    if folds < 2 or name not in {s.study_name for s in storage.get_all_studies()}:
        return None
    return build_confirmation(optuna.load_study(study_name=name, storage=storage), folds, fam)


def build_report(study: optuna.Study, top: int = 10, select_rule: str = "best") -> StudyReport:
    """Compute a study's report; read-only, so it can run while the sweep is still going."""
    direction = _direction(study.study_name, study.directions)
    frozen = _stored_trials(study._storage, study._study_id)  # noqa: SLF001 - read once
    with _no_gc():
        rows = [trial_row(t) for t in frozen]
    ranked = _ranked(rows, direction)
    complete = TrialState.COMPLETE.name
    baselines = [r for r in rows if r.state == complete and r.role == records.ROLE_BASELINE]
    baseline = baselines[0] if baselines else None  # the first: later ones are repeats
    importances, note = _importances(_AsRead(study, frozen), len(ranked))
    starts = [t.datetime_start for t in frozen if t.datetime_start is not None]
    fam = family_of_study(study.user_attrs)
    return StudyReport(
        name=study.study_name,
        direction=direction.name,
        counts=_counts(r.state for r in rows),
        total_wall_time=sum(r.wall_time for r in rows if r.wall_time is not None),
        first_start=min(starts, default=None),
        last_update=_last_activity(frozen),
        best=ranked[0] if ranked else None,
        baseline=baseline,
        top=ranked[: max(top, 0)],
        placements=_placements(ranked, baseline, fam),
        importances=importances,
        importance_note=note,
        trials=rows,
        param_names=_param_names(rows, fam),
        confirmation=_confirmation(study, max((len(r.fold_accuracies) for r in rows),
                                              default=0), fam),
        selection=select(ranked, select_rule, fam.dimensions),
        family=fam.name,
    )


# ----------------------------------------------------------------------------- storage


def _describe(storage: str | BaseStorage) -> str:
    url = storage if isinstance(storage, str) else getattr(storage, "url", None)
    return mask_url(url) if isinstance(url, str) else type(storage).__name__


def _open_storage(storage: str | BaseStorage) -> BaseStorage:
    """A storage object as is; a URL opened read-only (a missing SQLite file is an error)."""
    return storage if isinstance(storage, BaseStorage) else open_storage(storage, read_only=True)


def _read_all(
    storage: str | BaseStorage, stamps_only: bool = False
) -> list[tuple[Any, list[FrozenTrial]]]:
    """Every study with its trials; ``stamps_only``: on an RDB storage the trials may carry
    no more than number, state and datetimes (all that picking the latest study needs)."""
    opened = _open_storage(storage)
    try:
        return [
            (study, _stored_trials(opened, opened.get_study_id_from_name(study.study_name),
                                   stamps_only))
            for study in opened.get_all_studies()
        ]
    except Exception as exc:
        reason = describe_failure(exc)
        raise StorageError(f"cannot read studies from {_describe(storage)}: {reason}") from exc


class _AsRead(optuna.Study):
    """A study whose trials are the ones the report already read: the importance evaluator
    asks for them again, which would read a big RDB study a second time (and might see a
    running sweep's newer trials than the rest of the report)."""

    def __init__(self, study: optuna.Study, trials: list[FrozenTrial]) -> None:
        super().__init__(study_name=study.study_name, storage=study._storage,  # noqa: SLF001
                         sampler=study.sampler, pruner=study.pruner)
        self._as_read = trials

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        trials = [t for t in self._as_read if states is None or t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials


def _stored_trials(
    storage: BaseStorage, study_id: int, stamps_only: bool = False
) -> list[FrozenTrial]:
    """A study's trials by number, as ``storage.get_all_trials`` returns them.

    Optuna's RDB storage builds an ORM object per stored value: ~10 s for 10,000 trials of
    30 intermediate values each. The same rows come over ten times faster through a few
    plain SELECTs of its tables; should those tables ever differ from what this expects,
    Optuna's own reader is used.
    """
    rdb = getattr(storage, "_backend", storage)  # Optuna wraps an RDBStorage in a cache
    if isinstance(rdb, RDBStorage):
        try:
            with _no_gc():
                return _select_trials(rdb, study_id, stamps_only)
        except Exception:  # noqa: BLE001 - fall back to the reader Optuna maintains
            pass
    return sorted(storage.get_all_trials(study_id, deepcopy=False), key=lambda t: t.number)


def _local(utc: datetime | None) -> datetime | None:
    """Optuna's RDB storage keeps naive UTC; its trials carry naive local time."""
    if utc is None:
        return None
    return utc.replace(tzinfo=timezone.utc).astimezone().replace(tzinfo=None)


@contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small acyclic objects: it would
    otherwise walk the growing heap again and again (~40% of the time to read 10,000 trials)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _select_trials(storage: RDBStorage, study_id: int, stamps_only: bool) -> list[FrozenTrial]:
    """What ``RDBStorage.get_all_trials`` returns (the test suite compares the two), read
    with one SELECT per table instead of an ORM object per row. Enum columns are read as
    their stored names: SQLAlchemy's per-row enum conversion alone would double the time."""
    from optuna.distributions import json_to_distribution
    from optuna.storages._rdb import models

    trials_table = models.TrialModel.__table__
    c = trials_table.c

    def name_of(column: Any) -> Any:
        return sqlalchemy.type_coerce(column, sqlalchemy.String)

    def rows_of(conn: Any, model: Any, *columns: str, order: str | None = None) -> list[Any]:
        table = model.__table__
        picked = [name_of(table.c[n]) if n.endswith("_type") else table.c[n] for n in columns]
        query = (
            sqlalchemy.select(table.c.trial_id, *picked)
            .join(trials_table, table.c.trial_id == c.trial_id)
            .where(c.study_id == study_id)
        )
        if order is not None:
            query = query.order_by(table.c[order])
        if conn.dialect.name != "sqlite":
            return conn.execute(query).all()
        # SQLite's driver returns these columns as the ints, floats and strs SQLAlchemy
        # would; its row objects would cost a third of the read.
        sql = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        cursor = conn.connection.cursor()
        try:
            return cursor.execute(sql).fetchall()
        finally:
            cursor.close()

    with storage.engine.connect() as conn:
        base = conn.execute(
            sqlalchemy.select(c.trial_id, c.number, name_of(c.state), c.datetime_start,
                              c.datetime_complete).where(c.study_id == study_id)
        ).all()
        # per trial: values, params, distributions, user attrs, system attrs, intermediate
        parts: dict[int, tuple[dict, dict, dict, dict, dict, dict]] = {
            row[0]: ({}, {}, {}, {}, {}, {}) for row in base
        }
        if not stamps_only:
            to_value = models.TrialValueModel.stored_repr_to_value
            value_kinds = {k.name: k for k in models.TrialValueModel.TrialValueType}
            for trial_id, objective, value, kind in rows_of(
                conn, models.TrialValueModel, "objective", "value", "value_type"
            ):
                if trial_id in parts:
                    parts[trial_id][0][objective] = to_value(value, value_kinds[kind])
            known: dict[str, Any] = {}
            for trial_id, name, value, dist_json in rows_of(
                conn, models.TrialParamModel, "param_name", "param_value", "distribution_json",
                order="param_id",
            ):
                if trial_id in parts:
                    dist = known.get(dist_json)
                    if dist is None:
                        dist = known[dist_json] = json_to_distribution(dist_json)
                    parts[trial_id][1][name] = dist.to_external_repr(value)
                    parts[trial_id][2][name] = dist
            for index, model in ((3, models.TrialUserAttributeModel),
                                 (4, models.TrialSystemAttributeModel)):
                for trial_id, key, value_json in rows_of(conn, model, "key", "value_json"):
                    if trial_id in parts:
                        parts[trial_id][index][key] = json.loads(value_json)
            step_model = models.TrialIntermediateValueModel
            to_step_value = step_model.stored_repr_to_intermediate_value
            step_kinds = {k.name: k for k in step_model.TrialIntermediateValueType}
            for trial_id, step, value, kind in rows_of(
                conn, step_model, "step", "intermediate_value", "intermediate_value_type"
            ):
                if trial_id in parts:
                    parts[trial_id][5][step] = (
                        value if kind == "FINITE" else to_step_value(value, step_kinds[kind]))
    trials = []
    for trial_id, number, state, start, complete in base:
        values, params, dists, user_attrs, system_attrs, steps = parts[trial_id]
        trials.append(FrozenTrial(
            number=number, state=TrialState[state], value=None,
            values=[values[i] for i in range(len(values))] if values else None,
            datetime_start=_local(start), datetime_complete=_local(complete),
            params=params, distributions=dists, user_attrs=user_attrs,
            system_attrs=system_attrs, intermediate_values=steps, trial_id=trial_id,
        ))
    return sorted(trials, key=lambda t: t.number)


def list_studies(storage: str | BaseStorage) -> list[StudyRow]:
    """Summarise every study in a storage, read-only (listing must not create a database)."""
    result = []
    for study, trials in _read_all(storage):
        directions = list(study.directions)
        best_value = None
        direction_name = None
        if len(directions) == 1:
            direction = directions[0]
            direction_name = direction.name
            values = [
                t.value
                for t in trials
                if t.state == TrialState.COMPLETE
                and t.value is not None
                and not math.isnan(t.value)
            ]
            if values:
                best_value = max(values) if direction == StudyDirection.MAXIMIZE else min(values)
        result.append(
            StudyRow(
                name=study.study_name,
                counts=_counts(t.state.name for t in trials),
                n_trials=len(trials),
                best_value=None if best_value is None else float(best_value),
                last_update=_last_activity(trials),
                direction=direction_name,
            )
        )
    return result


def latest_study_name(storage: str | BaseStorage) -> str:
    """The study worked on most recently: the default when the user names none."""
    # a confirmation (NAME:confirm) is part of its search study, not a study to report alone
    studies = [(s, t) for s, t in _read_all(storage, stamps_only=True)
               if records.CONFIRM_OF not in s.user_attrs]
    if not studies:
        raise StorageError(
            f"no studies in {_describe(storage)}; run a sweep first or check the storage URL"
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
