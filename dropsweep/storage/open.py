"""Opening an Optuna storage: the embedded SQLite default, or any RDB URL; loading a study.

Every failure to open a storage becomes one :class:`~dropsweep.errors.StorageError` line, with
any password in the URL masked. Read-only callers (``report``, ``studies``) never create a
database file or a table. Writers may turn on Optuna's heartbeat (:func:`heartbeat_seconds`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
import time
import warnings
import weakref
from pathlib import Path
from urllib.parse import quote

import optuna
import sqlalchemy
from optuna.storages import RDBStorage

from dropsweep import env
from dropsweep.errors import StorageError
from dropsweep.storage.faults import _root_cause, retry_seconds
from dropsweep.storage.rdb import ResilientRDBStorage
from dropsweep.storage.urls import _check_url, _missing_driver, cannot_open, mask_url, sqlite_path

GRACE_BEATS = 3  # a trial is stale after this many heartbeats missed

# The connection pools of the storages this process opened and close_storages has not closed
# yet: pool -> (when opened, kind: "reader", "writer" or "sqlite" for an SQLite file's
# writer). Weak: a pool dropped is gone. Pools, not storages: a storage dropped can leave its
# pool, and the pool its open connections, in cycles nothing collects before the process ends.
_POOLS: weakref.WeakKeyDictionary[sqlalchemy.pool.Pool, tuple[int, str]] = (
    weakref.WeakKeyDictionary())
_OPENED = itertools.count()


def heartbeat_seconds() -> int:
    """How often a worker records that its running trials are alive (Optuna's heartbeat).

    A trial whose worker died (kill -9, power loss) is failed by the next worker after
    ``GRACE_BEATS`` times this long without a beat, and run again.
    $DROPSWEEP_HEARTBEAT_SECONDS overrides the 10 s default (the tests use 1 s).
    """
    return env.integer("DROPSWEEP_HEARTBEAT_SECONDS", 10, minimum=1, maximum=3600,
                       unit="seconds")


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
        if path is not None or not url.startswith("sqlite"):  # (an in-memory one: never)
            # after _tune_sqlite: its dispose() replaced the pool
            kind = "reader" if read_only else "sqlite" if path is not None else "writer"
            _POOLS[storage.engine.pool] = (next(_OPENED), kind)
        return storage
    except ImportError as exc:
        raise _missing_driver(url, exc) from None
    except Exception as exc:  # SQLAlchemy/Optuna raise many kinds; all mean "cannot open"
        if isinstance(exc, optuna.exceptions.StorageInternalError):
            exc = _root_cause(exc)  # not Optuna's "exceeding max length" (connection refused)
        raise StorageError(cannot_open(url, exc)) from None


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


def storages_opened() -> int:
    """A mark: :func:`close_storages` given it closes only the storages opened after it."""
    return next(_OPENED)


def close_storages(since: int = 0) -> None:
    """Close the idle connections of the storages opened since the mark ``since`` (all by
    default), readers first, an SQLite file's write-ahead log first copied into the file
    (the pools stay usable: a storage used again reconnects; a later call leaves it be).

    Left to the end of the process (Python's shutdown did not close them), the ``.db`` file
    alone held none of a run's writes: they sat in the ``-wal`` beside it, and a copy of the
    ``.db`` without it (mailed, committed, ``scp``-ed) looked empty. The last connection to
    close folds the log in, but not when another process still has the file open (a
    ``report`` of the moment), nor a read-only one; a checkpoint does, whoever else has it
    open, and does not wait for a reader in the middle of a read (PASSIVE). It goes through
    a connection already open, never a new one (which would create a file deleted since)."""
    closing = sorted(((kind != "reader", when, pool) for pool, (when, kind)
                      in list(_POOLS.items()) if when >= since), key=lambda c: c[:2])
    for _, when, pool in closing:
        kind = _POOLS.pop(pool, (when, ""))[1]
        try:
            if kind == "sqlite" and pool.checkedin() > 0:  # type: ignore[attr-defined]
                with contextlib.suppress(Exception):  # best effort: every write is committed
                    connection = pool.connect()
                    try:
                        connection.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)")
                    finally:
                        connection.close()
        finally:
            with contextlib.suppress(Exception):
                pool.dispose()


def study_names(storage: RDBStorage) -> list[str]:
    return [s.study_name for s in storage.get_all_studies()]


def load_study(storage: RDBStorage, name: str, url: str) -> optuna.Study:
    """Load an existing study; an unknown name lists the ones that exist."""
    names = study_names(storage)
    if name not in names:
        known = ", ".join(sorted(names)) or "none"
        raise StorageError(f"no study '{name}' in {mask_url(url)} (studies: {known})")
    return optuna.load_study(study_name=name, storage=storage)
