"""A storage failing while a search runs: which failures are transient (a dropped connection,
a restarted server, a lock held too long: worth another try on a new connection), how long they
are retried (:func:`retry_seconds`), and the real cause in one line (:func:`describe_failure`),
which Optuna's own wrapper ("exceeding max length") would otherwise bury.
"""

from __future__ import annotations

import sqlite3

import optuna
import sqlalchemy

from dropsweep import env
from dropsweep.storage.urls import mask_url


def retry_seconds() -> int:
    """How long a transient storage failure is retried before the search gives up on it.

    A minute rides out a dropped connection or a database server's restart; a longer outage
    ends the search with one line and the command to resume it (nothing finished is lost).
    $DROPSWEEP_STORAGE_RETRY_SECONDS overrides it (0: never retry).
    """
    return env.integer("DROPSWEEP_STORAGE_RETRY_SECONDS", 60, minimum=0, maximum=86400,
                       unit="seconds")


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
