"""What ``--storage`` names, as a URL: a plain file path as SQLite (:func:`storage_url`), any
password masked in what is shown (:func:`mask_url`), and a URL SQLAlchemy cannot read or whose
driver is missing refused in one line naming the fix (``sqlite:///PATH``,
``pip install 'dropsweep[postgres]'``) before Optuna wraps it in its own words.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import sqlalchemy

from dropsweep.errors import StorageError


def mask_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    return re.sub(r"(://[^/:@]*:)[^/@]*@", r"\1***@", url)


def cannot_open(url: str, exc: BaseException) -> str:
    """``cannot open storage URL: reason``, on one line, passwords masked, the reason cut at
    300 characters (SQLAlchemy's and drivers' messages run to many lines)."""
    return f"cannot open storage {mask_url(url)}: {mask_url(' '.join(str(exc).split()))[:300]}"


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
        raise StorageError(cannot_open(url, exc)) from None
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
