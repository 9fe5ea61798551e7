"""``ResilientRDBStorage``: Optuna's RDB storage whose every call rides out transient failures
(with backoff, for :func:`~dropsweep.storage.faults.retry_seconds`) and turns a permanent one
into one :class:`~dropsweep.errors.StorageFailure` line; and its batched writes, raw SQL on
Optuna's tables (:class:`TrialWrites`, :class:`TrialEnd`: many values of many trials in one
transaction, a statement per table).
"""

from __future__ import annotations

import datetime
import functools
import json
import time
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import sqlalchemy
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from dropsweep.errors import StorageFailure
from dropsweep.storage import optuna_private
from dropsweep.storage.faults import _storage_fault, describe_failure, is_transient
from dropsweep.storage.urls import mask_url


class TrialWrites(NamedTuple):
    """What was set on a running trial, written at once (``ResilientRDBStorage.write_trials``):
    parameters (name, internal value, distribution), user and system attributes."""

    trial_id: int
    params: list[tuple[str, float, Any]]
    user_attrs: dict[str, Any]
    system_attrs: dict[str, Any]
    beats: list[bool]  # [True] once its heartbeat is to be recorded


class TrialEnd(NamedTuple):
    """What ends a trial, written at once (``ResilientRDBStorage.finish_trials``)."""

    trial_id: int
    user_attrs: Mapping[str, Any]
    report: tuple[int, float] | None  # a last intermediate value: (step, value)
    state: TrialState
    values: Sequence[float] | None


def _resilient(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: ResilientRDBStorage, *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + (0 if self.failed else self.retry_for)
        pause = 0.25
        while True:
            try:
                return method(self, *args, **kwargs)
            except Exception as exc:
                if not _storage_fault(exc):
                    raise
                transient = is_transient(exc)
                if transient and time.monotonic() + pause <= deadline:
                    time.sleep(pause)
                    pause = min(2 * pause, 5.0)
                    continue
                self.failed = True  # fail fast from now on: the abandon calls that follow
                what = "kept failing" if transient else "failed"
                raise StorageFailure(f"storage {mask_url(self.url)} {what}: "
                                     f"{describe_failure(exc)}") from exc

    return call


def _upsert(conn: Any, table: Any, keys: tuple[str, str], rows: list[dict[str, Any]]) -> None:
    """Insert the rows whose ``keys`` (trial id, then key or step or objective) are new, all in
    one statement; update the ones already stored."""
    if not rows:
        return

    def key(row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(row[k] for k in keys)

    have = {tuple(found) for found in conn.execute(
        sqlalchemy.select(*(table.c[k] for k in keys)).where(
            *(table.c[k].in_({row[k] for row in rows}) for k in keys)))}
    new = [row for row in rows if key(row) not in have]
    if new:
        conn.execute(sqlalchemy.insert(table), new)
    for row in rows:
        if key(row) in have:
            conn.execute(sqlalchemy.update(table)
                         .where(*(table.c[k] == row[k] for k in keys))
                         .values({c: v for c, v in row.items() if c not in keys}))


class ResilientRDBStorage(RDBStorage):
    """Optuna's RDB storage whose every call rides out transient failures (with backoff,
    for :func:`retry_seconds`) and turns a permanent one into a :class:`StorageFailure`.

    A retried write may have been committed just before its connection dropped: the only
    writes that are not idempotent (a new trial, a state change) then leave a RUNNING trial
    that never beats, which liveness fails as stale, or report the trial as finished, which
    the runner treats as a trial taken from it. Neither can change a finished result.
    """

    failed = False
    retry_for = 0  # seconds: set by open_storage from retry_seconds()

    # Optuna writes every value in a transaction of its own, through an ORM object per row:
    # a batch of 16 trials checkpointed 30 times is 480 of them. These two write what Optuna's
    # own set_trial_user_attr and set_trial_intermediate_value would, many in one transaction
    # (a finished trial is refused the same way), with a statement per table, not per row.

    def set_trial_user_attrs(self, trial_id: int, attrs: Mapping[str, Any]) -> None:
        """Several user attributes of one trial at once."""
        models = optuna_private.rdb_models()

        table = models.TrialUserAttributeModel.__table__
        with self.engine.begin() as conn:
            self._check_updatable(conn, [trial_id])
            _upsert(conn, table, ("trial_id", "key"), [
                {"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
                for key, value in attrs.items()])

    def set_intermediate_values(self, step: int, values: Mapping[int, float]) -> set[int]:
        """One step's intermediate value of several trials (trial id -> value) at once;
        the ids of the trials already finished, which take nothing (as Optuna refuses them)."""
        models = optuna_private.rdb_models()

        model = models.TrialIntermediateValueModel
        table = model.__table__
        with self.engine.begin() as conn:
            finished = self._check_updatable(conn, list(values), raise_=False)
            ids = [trial_id for trial_id in values if trial_id not in finished]
            if not ids:
                return finished
            rows = []
            for trial_id in ids:
                stored, kind = model.intermediate_value_to_stored_repr(values[trial_id])
                rows.append({"trial_id": trial_id, "step": step, "intermediate_value": stored,
                             "intermediate_value_type": kind})
            _upsert(conn, table, ("trial_id", "step"), rows)
        return finished

    def forget_intermediate_values(self, trial_ids: Sequence[int]) -> set[int]:
        """Delete every intermediate value of these trials, whose training starts again
        (a batch that ran out of memory, trained in halves: ``dropsweep.train.retry``): the curve
        is the new attempt's alone. The ids of the finished ones, left as they are."""
        models = optuna_private.rdb_models()

        table = models.TrialIntermediateValueModel.__table__
        with self.engine.begin() as conn:
            finished = self._check_updatable(conn, list(trial_ids), raise_=False)
            ids = [trial_id for trial_id in trial_ids if trial_id not in finished]
            if ids:
                conn.execute(sqlalchemy.delete(table).where(table.c.trial_id.in_(ids)))
        return finished

    def write_trials(self, writes: Sequence[TrialWrites], known: Mapping[str, Any]) -> None:
        """What was set on several trials of one study (parameters, user and system
        attributes, a heartbeat), in one transaction, as Optuna's set_trial_param,
        set_trial_user_attr, set_trial_system_attr and record_heartbeat write each: refused
        for a finished trial, each parameter's
        distribution checked against the study's (``known``: those already seen; others are
        looked up in the storage)."""
        from optuna import distributions
        models = optuna_private.rdb_models()

        params = models.TrialParamModel.__table__
        trials = models.TrialModel.__table__
        ids = [w.trial_id for w in writes]
        with self.engine.begin() as conn:
            self._check_updatable(conn, ids)
            previous = dict(known)
            unknown = {name for w in writes for name, _, _ in w.params} - set(previous)
            if unknown:
                study = sqlalchemy.select(trials.c.study_id).where(
                    trials.c.trial_id == ids[0]).scalar_subquery()
                for name, stored in conn.execute(
                        sqlalchemy.select(params.c.param_name, params.c.distribution_json)
                        .join(trials, trials.c.trial_id == params.c.trial_id)
                        .where(trials.c.study_id == study, params.c.param_name.in_(unknown))):
                    previous.setdefault(name, distributions.json_to_distribution(stored))
            rows = []
            for w in writes:
                for name, value, distribution in w.params:
                    if name in previous:
                        distributions.check_distribution_compatibility(previous[name],
                                                                       distribution)
                    else:
                        previous[name] = distribution
                    rows.append({"trial_id": w.trial_id, "param_name": name,
                                 "param_value": value,
                                 "distribution_json": distributions.distribution_to_json(
                                     distribution)})
            if rows:
                conn.execute(sqlalchemy.insert(params), rows)
            for model, field in ((models.TrialUserAttributeModel, "user_attrs"),
                                 (models.TrialSystemAttributeModel, "system_attrs")):
                table = model.__table__
                rows = [{"trial_id": w.trial_id, "key": key, "value_json": json.dumps(value)}
                        for w in writes for key, value in getattr(w, field).items()]
                if rows:
                    _upsert(conn, table, ("trial_id", "key"), rows)
            beating = [w.trial_id for w in writes if w.beats]
            if beating:
                table = models.TrialHeartbeatModel.__table__
                have = set(conn.execute(sqlalchemy.select(table.c.trial_id).where(
                    table.c.trial_id.in_(beating))).scalars())
                new = [{"trial_id": trial_id} for trial_id in beating if trial_id not in have]
                if new:  # stamped by the column's default, the database's clock
                    conn.execute(sqlalchemy.insert(table), new)
                if have:
                    conn.execute(sqlalchemy.update(table).where(table.c.trial_id.in_(have))
                                 .values(heartbeat=sqlalchemy.func.now()))

    def finish_trials(self, ends: Sequence[TrialEnd]) -> set[int]:
        """Several trials' ends at once, each as Optuna's set_trial_user_attr,
        set_trial_intermediate_value and set_trial_state_values would write it: its user
        attributes, a last intermediate value, its final state and value. The ids of the
        trials already finished (another worker failed them as stale), which take nothing."""
        models = optuna_private.rdb_models()

        trials = models.TrialModel.__table__
        values = models.TrialValueModel.__table__
        attrs = models.TrialUserAttributeModel.__table__
        steps = models.TrialIntermediateValueModel
        with self.engine.begin() as conn:
            finished = self._check_updatable(conn, [end.trial_id for end in ends],
                                             raise_=False)
            ends = [end for end in ends if end.trial_id not in finished]
            ids = [end.trial_id for end in ends]
            if not ends:
                return finished
            _upsert(conn, attrs, ("trial_id", "key"), [
                {"trial_id": end.trial_id, "key": key, "value_json": json.dumps(value)}
                for end in ends for key, value in end.user_attrs.items()])
            reported = [end for end in ends if end.report is not None]
            if reported:
                table = steps.__table__
                rows = []
                for end in reported:
                    step, value = end.report  # type: ignore[misc]
                    stored, kind = steps.intermediate_value_to_stored_repr(value)
                    rows.append({"trial_id": end.trial_id, "step": step,
                                 "intermediate_value": stored, "intermediate_value_type": kind})
                _upsert(conn, table, ("trial_id", "step"), rows)
            rows = []
            for end in ends:
                for objective, value in enumerate(end.values or ()):
                    stored, kind = models.TrialValueModel.value_to_stored_repr(value)
                    rows.append({"trial_id": end.trial_id, "objective": objective,
                                 "value": stored, "value_type": kind})
            if rows:
                _upsert(conn, values, ("trial_id", "objective"), rows)
            now = datetime.datetime.now()  # naive local time, as Optuna stores it
            for end in ends:
                conn.execute(sqlalchemy.update(trials)
                             .where(trials.c.trial_id == end.trial_id)
                             .values(state=end.state, datetime_complete=now))
        return finished

    def trial_states(self, study_id: int) -> dict[int, TrialState]:
        """Every trial's number and state, and nothing else: one light query where reading
        the trials themselves loads each running one whole (params, attributes, values)."""
        models = optuna_private.rdb_models()

        trials = models.TrialModel.__table__
        with self.engine.connect() as conn:
            return dict(conn.execute(sqlalchemy.select(trials.c.number, trials.c.state).where(
                trials.c.study_id == study_id)).all())

    def _check_updatable(self, conn: Any, trial_ids: list[int], raise_: bool = True
                         ) -> set[int]:
        """The finished ones among ``trial_ids`` (the first raises UpdateFinishedTrialError,
        as Optuna's writes do, unless ``raise_`` is false); an unknown id is a KeyError."""
        models = optuna_private.rdb_models()

        trials = models.TrialModel.__table__
        states = dict(conn.execute(sqlalchemy.select(trials.c.trial_id, trials.c.state).where(
            trials.c.trial_id.in_(trial_ids))).all())
        finished = set()
        for trial_id in trial_ids:
            if trial_id not in states:
                raise KeyError(models.NOT_FOUND_MSG)
            if states[trial_id].is_finished():
                if raise_:
                    self.check_trial_is_updatable(trial_id, states[trial_id])
                finished.add(trial_id)
        return finished


# Every call of the storage API, and the private ones Optuna's own cache in front of an RDB
# storage calls instead of the public ones (``optuna_private.rdb_cache_calls``). A call made
# inside another wrapped call is not retried twice: the inner one's StorageFailure passes the
# outer.
for _name in ("create_new_study", "delete_study", "set_study_user_attr",
              "set_study_system_attr", "get_study_id_from_name", "get_study_name_from_id",
              "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
              "get_trial_user_attrs", "get_trial_system_attrs", "get_all_studies",
              "create_new_trial", "set_trial_param",
              "get_trial_param", "set_trial_state_values", "set_trial_intermediate_value",
              "set_trial_user_attr", "set_trial_system_attr",
              "get_trial_id_from_study_id_trial_number", "get_trial", "get_all_trials",
              "get_best_trial", "record_heartbeat"):
    setattr(ResilientRDBStorage, _name, _resilient(getattr(RDBStorage, _name)))
for _name, _method in optuna_private.rdb_cache_calls().items():
    setattr(ResilientRDBStorage, _name, _resilient(_method))
for _name in ("set_trial_user_attrs", "set_intermediate_values", "write_trials",
              "finish_trials", "forget_intermediate_values", "trial_states"):
    setattr(ResilientRDBStorage, _name, _resilient(getattr(ResilientRDBStorage, _name)))
