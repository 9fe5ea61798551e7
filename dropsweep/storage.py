"""Opening an Optuna storage: the embedded SQLite default, or any RDB URL.

Every failure to open or use a storage becomes one :class:`StorageError` line, with any
password in the URL masked. Read-only callers (``report``, ``studies``) never create a
database file or a table.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
import warnings
from urllib.parse import quote
from pathlib import Path

import optuna
import sqlalchemy
from optuna.storages import RDBStorage

from dropsweep.errors import StorageError

DEFAULT_STORAGE = "sqlite:///results/dropsweep.db"


GRACE_BEATS = 3  # a trial is stale after this many heartbeats missed


def heartbeat_seconds() -> int:
    """How often a worker records that its running trials are alive (Optuna's heartbeat).

    A trial whose worker died (kill -9, power loss) is failed by the next worker after
    ``GRACE_BEATS`` times this long without a beat, and run again.
    $DROPSWEEP_HEARTBEAT_SECONDS overrides the 10 s default (the tests use 1 s).
    """
    return max(1, int(os.environ.get("DROPSWEEP_HEARTBEAT_SECONDS", "10")))


def mask_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    return re.sub(r"(://[^/:@]*:)[^/@]*@", r"\1***@", url)


def sqlite_path(url: str) -> Path | None:
    """The database file behind a ``sqlite:///`` URL (None for other back ends)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def open_storage(url: str, *, read_only: bool = False, heartbeat: int | None = None
                 ) -> RDBStorage:
    """Open (and, for writers, create) an Optuna RDB storage; ``heartbeat`` seconds turns on
    Optuna's heartbeat (running trials beat; stale ones can be failed by anyone).

    SQLite gets a generous busy timeout so that a reader or a second worker waits for a
    lock instead of failing with "database is locked".
    """
    path = sqlite_path(url)
    engine_kwargs: dict = {}
    if path is not None:
        if read_only and not path.exists():
            raise StorageError(f"no storage at {path}: run 'dropsweep search SWEEP' first, "
                               "or pass --storage URL")
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
    try:
        storage = _rdb_storage(url, engine_kwargs, read_only, heartbeat)
        if path is not None:
            _tune_sqlite(storage, read_only)
        return storage
    except ImportError as exc:
        hint = " (pip install 'dropsweep[postgres]')" if "psycopg" in str(exc) else ""
        raise StorageError(f"storage {mask_url(url)}: missing driver: {exc.name or exc}{hint}"
                           ) from None
    except Exception as exc:  # SQLAlchemy/Optuna raise many kinds; all mean "cannot open"
        reason = " ".join(str(exc).split())
        reason = mask_url(reason)[:300]
        raise StorageError(f"cannot open storage {mask_url(url)}: {reason}") from None


def _rdb_storage(url: str, engine_kwargs: dict, read_only: bool, heartbeat: int | None
                 ) -> RDBStorage:
    """Optuna's RDBStorage. Workers that open a new database at the same moment all try to
    create its tables; the losers of that race ("already exists") simply open it again."""
    for attempt in range(5):
        try:
            with warnings.catch_warnings():  # the heartbeat arguments are "experimental"
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(url, engine_kwargs=engine_kwargs, skip_table_creation=read_only,
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


def study_names(storage: RDBStorage) -> list[str]:
    return [s.study_name for s in storage.get_all_studies()]


def load_study(storage: RDBStorage, name: str, url: str) -> optuna.Study:
    """Load an existing study; an unknown name lists the ones that exist."""
    names = study_names(storage)
    if name not in names:
        known = ", ".join(sorted(names)) or "none"
        raise StorageError(f"no study '{name}' in {mask_url(url)} (studies: {known})")
    return optuna.load_study(study_name=name, storage=storage)
