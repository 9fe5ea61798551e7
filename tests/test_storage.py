"""Opening storages: the SQLite default tuned for many small commits, read-only opens, masking."""

from __future__ import annotations

import sqlite3

import optuna
import pytest

from dropsweep.errors import StorageError
from dropsweep.storage import load_study, mask_url, open_storage


def test_sqlite_storage_uses_write_ahead_logging(tmp_path):
    path = tmp_path / "sub" / "s.db"
    storage = open_storage(f"sqlite:///{path}")
    optuna.create_study(storage=storage, study_name="x")
    with sqlite3.connect(path) as con:
        assert con.execute("pragma journal_mode").fetchone()[0] == "wal"
    with storage.engine.connect() as con:  # every pooled connection skips fsync per commit
        assert con.exec_driver_sql("pragma synchronous").fetchone()[0] == 1  # NORMAL


def test_a_read_only_open_creates_nothing(tmp_path):
    path = tmp_path / "absent.db"
    with pytest.raises(StorageError, match="no storage at"):
        open_storage(f"sqlite:///{path}", read_only=True)
    assert not path.exists()


def test_an_unknown_study_lists_the_known_ones(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    storage = open_storage(url)
    optuna.create_study(storage=storage, study_name="sonar")
    with pytest.raises(StorageError, match=r"no study 'nope' .*\(studies: sonar\)"):
        load_study(storage, "nope", url)


@pytest.mark.parametrize("url,masked", [
    ("postgresql://user:secret@host:5432/db", "postgresql://user:***@host:5432/db"),
    ("postgresql+psycopg://u:p%40ss@h/db", "postgresql+psycopg://u:***@h/db"),
    ("sqlite:///results/dropsweep.db", "sqlite:///results/dropsweep.db"),
    ("postgresql://user@host/db", "postgresql://user@host/db"),
])
def test_passwords_are_masked(url, masked):
    assert mask_url(url) == masked


def test_an_unreachable_database_is_one_line_with_the_password_masked():
    with pytest.raises(StorageError) as err:
        open_storage("postgresql://postgres:hunter2@127.0.0.1:1/none")
    text = str(err.value)
    assert "hunter2" not in text and "***" in text and "\n" not in text
