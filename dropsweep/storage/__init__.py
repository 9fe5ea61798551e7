"""Opening an Optuna storage: the embedded SQLite default, or any RDB URL.

Every failure to open or use a storage becomes one :class:`StorageError` line, with any
password in the URL masked. Read-only callers (``report``, ``studies``) never create a
database file or a table.

A storage can also fail *while* a search runs. A transient failure (a dropped connection, a
restarted server, a lock held too long) is retried with backoff for a bounded time, on a new
connection; a permanent one (disk full, read-only, a broken schema) and a transient one that
outlasts the bound become one :class:`StorageFailure` naming the real cause, which Optuna's
own wrapper ("exceeding max length") would otherwise bury.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import re
import sqlite3
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence
from urllib.parse import quote

import optuna
import sqlalchemy
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from dropsweep import env
from dropsweep.storage import optuna_private
from dropsweep.errors import StorageError, StorageFailure

GRACE_BEATS = 3  # a trial is stale after this many heartbeats missed


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


def heartbeat_seconds() -> int:
    """How often a worker records that its running trials are alive (Optuna's heartbeat).

    A trial whose worker died (kill -9, power loss) is failed by the next worker after
    ``GRACE_BEATS`` times this long without a beat, and run again.
    $DROPSWEEP_HEARTBEAT_SECONDS overrides the 10 s default (the tests use 1 s).
    """
    return env.integer("DROPSWEEP_HEARTBEAT_SECONDS", 10, minimum=1, maximum=3600,
                       unit="seconds")


def retry_seconds() -> int:
    """How long a transient storage failure is retried before the search gives up on it.

    A minute rides out a dropped connection or a database server's restart; a longer outage
    ends the search with one line and the command to resume it (nothing finished is lost).
    $DROPSWEEP_STORAGE_RETRY_SECONDS overrides it (0: never retry).
    """
    return env.integer("DROPSWEEP_STORAGE_RETRY_SECONDS", 60, minimum=0, maximum=86400,
                       unit="seconds")


def mask_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    return re.sub(r"(://[^/:@]*:)[^/@]*@", r"\1***@", url)


def sqlite_path(url: str) -> Path | None:
    """The database file behind a ``sqlite:///`` URL (None for other back ends)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:")  # two letters at least: not a drive (C:)

URL_HINT = ("write sqlite:///PATH (or just the file's path) for an SQLite file, or a "
            "server's URL such as postgresql://USER@HOST/DB")


def storage_url(given: str) -> str:
    """What ``--storage`` names, as a URL: a URL (``scheme:...``) as given, a plain file path
    as the SQLite database ``sqlite:///PATH`` (``results.db``, ``/tmp/x/study.db``, ``~/s.db``).

    Called once, where the option is read: everything after it (the workers' command, the
    checkpoints' owner, the resume command) sees one spelling. Idempotent.
    """
    if not given.strip():
        raise StorageError(f"no storage given: {URL_HINT}")
    if _SCHEME.match(given):
        return given
    return f"sqlite:///{os.path.expanduser(given)}"


def _check_url(url: str) -> None:
    """A URL SQLAlchemy cannot read, a database it does not know, or a driver that is not
    installed: one line naming the fix, before Optuna wraps it in its own words."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
        dialect = parsed.get_dialect()
    except sqlalchemy.exc.NoSuchModuleError:  # before ArgumentError: it is one
        raise StorageError(f"storage {mask_url(url)}: unknown database "
                           f"'{url.split(':', 1)[0]}': {URL_HINT}") from None
    except sqlalchemy.exc.ArgumentError:
        raise StorageError(f"storage {mask_url(url)}: not a storage URL: {URL_HINT}") from None
    except ImportError as exc:  # the dialect's own module needs the driver (mysql+...)
        raise _missing_driver(url, exc) from None
    except ValueError as exc:  # a port that is not a number
        raise StorageError(f"storage {mask_url(url)}: not a storage URL ({mask_url(str(exc))}): "
                           f"{URL_HINT}") from None
    except Exception as exc:  # anything else SQLAlchemy may raise: still one line
        raise StorageError(f"cannot open storage {mask_url(url)}: "
                           f"{mask_url(' '.join(str(exc).split()))[:300]}") from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        raise _missing_driver(url, exc) from None


# what to install for a driver module that is missing (the module's name, pip's name)
_DRIVER_FIX = {
    "psycopg": "pip install 'dropsweep[postgres]'",
    "psycopg2": "pip install psycopg2-binary, or pip install 'dropsweep[postgres]' and write "
                "postgresql://",
    "pymysql": "pip install pymysql",
    "MySQLdb": "pip install mysqlclient",
}


def _missing_driver(url: str, exc: ImportError) -> StorageError:
    """``pip install 'dropsweep[postgres]'`` for PostgreSQL's driver; the module for others."""
    cause: BaseException | None = exc
    name = None
    while cause is not None and name is None:  # Optuna's ImportError wraps the real one
        name = getattr(cause, "name", None)
        cause = cause.__cause__ or cause.__context__
    module = (name or "").split(".")[0]
    if not module and url.startswith("postgresql"):
        module = "psycopg"
    fix = _DRIVER_FIX.get(module, f"install the package that provides the module "
                                  f"'{module}'" if module else "install its driver")
    what = f"its driver ({module})" if module else "its driver"
    return StorageError(f"storage {mask_url(url)}: {what} is not installed: {fix}")


def open_storage(url: str, *, read_only: bool = False, heartbeat: int | None = None
                 ) -> RDBStorage:
    """Open (and, for writers, create) an Optuna RDB storage; ``heartbeat`` seconds turns on
    Optuna's heartbeat (running trials beat; stale ones can be failed by anyone).

    SQLite gets a generous busy timeout so that a reader or a second worker waits for a
    lock instead of failing with "database is locked". A plain path is refused here (the CLI
    turns it into a URL first, :func:`storage_url`), with how to write it.
    """
    _check_url(url)
    path = sqlite_path(url)
    # a pooled connection the server dropped (restart, idle timeout, pg_terminate_backend)
    # is noticed and replaced when checked out, instead of failing the next statement
    engine_kwargs: dict = {"pool_pre_ping": True}
    if path is not None:
        if read_only and not path.exists():
            raise StorageError(f"no storage at {path}: run 'dropsweep search SWEEP' first, "
                               "or pass --storage URL")
        _check_sqlite_file(path)
        if not read_only:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create {path.parent}: {exc.strerror}") from None
            # SQLite writes its journal beside the file: a read-only directory (or file)
            # would fail later with "unable to open database file"
            for where in (path.parent, path):
                if where.exists() and not os.access(where, os.W_OK):
                    raise StorageError(f"cannot write the storage {path}: {where} is "
                                       "read-only (pass --storage URL to write elsewhere)")
            engine_kwargs = {"connect_args": {"timeout": 60}}
        else:
            # SQLite's own read-only mode: a reader can never write, not even the
            # checkpoint a closing read-write connection does, so it cannot disturb workers.
            ro = f"file:{quote(str(path.resolve()))}?mode=ro"
            engine_kwargs = {"creator": lambda: sqlite3.connect(ro, uri=True, timeout=60,
                                                                check_same_thread=False)}
    retry_for = retry_seconds()  # read now: a bad value is a mistake before anything runs
    try:
        storage = _rdb_storage(url, engine_kwargs, read_only, heartbeat)
        storage.retry_for = retry_for
        if path is not None:
            _tune_sqlite(storage, read_only)
        return storage
    except ImportError as exc:
        raise _missing_driver(url, exc) from None
    except Exception as exc:  # SQLAlchemy/Optuna raise many kinds; all mean "cannot open"
        if isinstance(exc, optuna.exceptions.StorageInternalError):
            exc = _root_cause(exc)  # not Optuna's "exceeding max length" (connection refused)
        reason = " ".join(str(exc).split())
        reason = mask_url(reason)[:300]
        raise StorageError(f"cannot open storage {mask_url(url)}: {reason}") from None


_SQLITE_MAGIC = b"SQLite format 3\0"


def _check_sqlite_file(path: Path) -> None:
    """A file that is not an SQLite database would fail later with Optuna's misleading
    "exceeding max length"; an empty file is a new database, as SQLite itself treats it."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StorageError(f"cannot read the storage {path}: {exc.strerror}") from None
    if head and head != _SQLITE_MAGIC:
        raise StorageError(f"{path} is not an SQLite database (pass --storage URL to use "
                           "another file)")


def _rdb_storage(url: str, engine_kwargs: dict, read_only: bool, heartbeat: int | None
                 ) -> RDBStorage:
    """Optuna's RDBStorage. Workers that open a new database at the same moment all try to
    create its tables; the losers of that race ("already exists") simply open it again."""
    for attempt in range(5):
        try:
            with warnings.catch_warnings():  # the heartbeat arguments are "experimental"
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return ResilientRDBStorage(
                    url, engine_kwargs=engine_kwargs, skip_table_creation=read_only,
                    heartbeat_interval=None if read_only else heartbeat,
                    grace_period=None if read_only or heartbeat is None
                    else GRACE_BEATS * heartbeat)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            if attempt == 4 or not _lost_creation_race(exc):
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _lost_creation_race(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(sign in text for sign in ("already exists", "duplicate key", "unique constraint"))


def _tune_sqlite(storage: RDBStorage, read_only: bool) -> None:
    """Write-ahead logging, and no fsync at every commit (``synchronous=NORMAL``, still safe
    against a crashed process): a trial commits dozens of small writes (attributes,
    checkpoints), which otherwise cost more than a batch of trials takes to train. WAL also
    lets ``report`` read while a search writes."""

    def on_connect(connection: object, record: object) -> None:
        cursor = connection.cursor()  # type: ignore[attr-defined]
        if not read_only:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    sqlalchemy.event.listen(storage.engine, "connect", on_connect)
    storage.engine.dispose()  # connections opened while creating tables get the pragmas too


# ----------------------------------------------------------------------------- failing mid-run

# PostgreSQL SQLSTATEs worth another try: the connection (class 08), the server shutting
# down or starting (57P01-57P03), too many connections, and the losers of concurrency
# (serialization failure, deadlock).
_PG_TRANSIENT = ("08", "57P01", "57P02", "57P03", "53300", "40001", "40P01")
_SQLITE_TRANSIENT = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _root_cause(exc: BaseException) -> BaseException:
    """The driver's own error under SQLAlchemy's and Optuna's wrappers."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig is not None:
            return exc.orig
        nxt = exc.__cause__ or exc.__context__
        if nxt is None:
            break
        exc = nxt
    return exc


def _storage_fault(exc: BaseException) -> bool:
    """An error of the storage itself (as opposed to Optuna's answers, such as a finished
    trial that cannot be updated or an unknown study, which pass through untouched)."""
    return isinstance(exc, (optuna.exceptions.StorageInternalError,
                            sqlalchemy.exc.SQLAlchemyError, sqlite3.Error))


def _lost_heartbeat_race(cause: BaseException) -> bool:
    """A trial's first heartbeat inserted by two writers at once (the heartbeat thread and a
    batch's write both look, find no row, insert: seen on PostgreSQL when a server pause
    lines them up). The loser's retry finds the row and updates it."""
    text = str(cause)
    return (type(cause).__name__ in ("IntegrityError", "UniqueViolation")
            and "trial_heartbeats" in text and ("unique" in text.lower()
                                                or "duplicate" in text.lower()))


def is_transient(exc: BaseException) -> bool:
    """Whether another try, on a new connection, may succeed."""
    chain: BaseException | None = exc
    while chain is not None:  # SQLAlchemy saw the connection die
        if getattr(chain, "connection_invalidated", False):
            return True
        chain = chain.__cause__ or chain.__context__
    cause = _root_cause(exc)
    if _lost_heartbeat_race(cause):
        return True
    if isinstance(cause, sqlite3.Error):
        return getattr(cause, "sqlite_errorcode", None) in _SQLITE_TRANSIENT
    sqlstate = getattr(cause, "sqlstate", None)
    if sqlstate is not None:
        return any(sqlstate.startswith(code) for code in _PG_TRANSIENT)
    # a driver error with no SQLSTATE: the connection failed (refused, closed, reset)
    return type(cause).__name__ in ("OperationalError", "InterfaceError")


def describe_failure(exc: BaseException) -> str:
    """The real cause in one short line: the driver's first line, not Optuna's wrapper."""
    cause = _root_cause(exc)
    text = str(cause).strip().splitlines()
    return mask_url(text[0] if text else type(cause).__name__)[:200]


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
              "finish_trials", "forget_intermediate_values"):
    setattr(ResilientRDBStorage, _name, _resilient(getattr(ResilientRDBStorage, _name)))


def study_names(storage: RDBStorage) -> list[str]:
    return [s.study_name for s in storage.get_all_studies()]


def load_study(storage: RDBStorage, name: str, url: str) -> optuna.Study:
    """Load an existing study; an unknown name lists the ones that exist."""
    names = study_names(storage)
    if name not in names:
        known = ", ".join(sorted(names)) or "none"
        raise StorageError(f"no study '{name}' in {mask_url(url)} (studies: {known})")
    return optuna.load_study(study_name=name, storage=storage)
