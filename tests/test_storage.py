"""Opening storages: the SQLite default tuned for many small commits, read-only opens, masking."""

from __future__ import annotations

import contextlib
import os
import sqlite3

import optuna
import pytest

from dropsweep.errors import StorageError, StorageFailure
from dropsweep.storage.open import load_study, open_storage
from dropsweep.storage.urls import mask_url, storage_url


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
    # the driver's words (refused: is the server running?), not Optuna's "max length"
    assert "max length" not in text and "refused" in text.lower(), text


# ----------------------------------------------------------------------------- URLs and paths


@pytest.mark.parametrize(("given", "url"), [
    ("results.db", "sqlite:///results.db"),
    ("/tmp/x/study.db", "sqlite:////tmp/x/study.db"),
    ("runs/a b.db", "sqlite:///runs/a b.db"),
    ("C:/work/s.db", "sqlite:///C:/work/s.db"),  # a drive letter is no scheme
    ("sqlite:///results/dropsweep.db", "sqlite:///results/dropsweep.db"),
    ("sqlite:////abs/s.db", "sqlite:////abs/s.db"),
    ("postgresql://u:pw@h:5432/db", "postgresql://u:pw@h:5432/db"),
    ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ("sqlite:results.db", "sqlite:results.db"),  # a scheme: a URL (refused when opened)
])
def test_a_plain_path_is_its_sqlite_url_and_a_url_stays_one(given, url):
    assert storage_url(given) == url
    assert storage_url(url) == url  # once normalised, it stays so


def test_a_home_path_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert storage_url("~/s.db") == f"sqlite:///{tmp_path}/s.db"


def test_an_empty_storage_names_what_to_write():
    with pytest.raises(StorageError, match=r"^no storage given: write sqlite:///PATH"):
        storage_url("  ")


@pytest.mark.parametrize(("url", "fragment"), [
    ("results.db", "not a storage URL"),  # not through storage_url: refused, not guessed
    ("sqlite:results.db", "not a storage URL"),
    ("http://example.com/db", "unknown database 'http'"),
    ("postgresql://u:hunter2@h:port/db", "not a storage URL"),
])
def test_a_url_that_cannot_be_opened_names_how_to_write_one(tmp_path, monkeypatch, url,
                                                             fragment):
    monkeypatch.chdir(tmp_path)
    for read_only in (True, False):
        with pytest.raises(StorageError) as err:
            open_storage(url, read_only=read_only)
        text = str(err.value)
        assert fragment in text and "write sqlite:///PATH (or just the file's path)" in text
        assert "\n" not in text and "hunter2" not in text and "Could not parse" not in text
    assert list(tmp_path.iterdir()) == []


def _without_psycopg(monkeypatch):
    """psycopg is installed here: make importing it fail, as where it is not."""
    import sys

    monkeypatch.setitem(sys.modules, "psycopg", None)  # "import psycopg" raises ImportError


@pytest.mark.parametrize("url", ["postgresql://u:hunter2@127.0.0.1:1/db",
                                 "postgresql+psycopg://u:hunter2@127.0.0.1:1/db"])
def test_postgresql_without_its_driver_says_what_to_install(monkeypatch, url):
    _without_psycopg(monkeypatch)
    with pytest.raises(StorageError) as err:
        open_storage(url, read_only=True)
    assert str(err.value) == (f"storage {mask_url(url)}: its driver (psycopg) is not "
                              "installed: pip install 'dropsweep[postgres]'")


def test_the_driver_missing_under_optunas_wrapper_says_so_too(monkeypatch):
    """Optuna's own "Failed to import DB access module" (should SQLAlchemy import the driver
    only when Optuna makes the engine) names the fix the same way."""
    import dropsweep.storage.open as storage

    _without_psycopg(monkeypatch)
    monkeypatch.setattr(storage, "_check_url", lambda url: None)
    with pytest.raises(StorageError) as err:
        open_storage("postgresql://u@127.0.0.1:1/db", read_only=True)
    text = str(err.value)
    assert "pip install 'dropsweep[postgres]'" in text and "Failed to import" not in text


def test_the_command_without_the_driver_is_one_line_naming_the_fix(tmp_path, monkeypatch,
                                                                   sonar_dir):
    monkeypatch.chdir(tmp_path)
    _without_psycopg(monkeypatch)
    for command in (["studies"], ["report"], ["search", SWEEP, *TINY]):
        line = one_line(cli(*command, "--storage", "postgresql://u:hunter2@127.0.0.1:1/db"),
                        "pip install 'dropsweep[postgres]'")
        assert line == ("Error: storage postgresql://u:***@127.0.0.1:1/db: its driver "
                        "(psycopg) is not installed: pip install 'dropsweep[postgres]'"), line
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- faults, end to end

import hashlib  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

from click.testing import CliRunner  # noqa: E402

from dropsweep.cli import main  # noqa: E402

SWEEP = str(Path(__file__).resolve().parents[1] / "sweeps" / "sonar.yaml")
TINY = ["--set", "train.epochs=2", "--set", "train.eval_every=1", "--set", "cv.folds=3",
        "--trials", "2"]


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


def one_line(result, *parts: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def digest(*paths: Path) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else "-" for p in paths]


@pytest.fixture
def searched(tmp_path, monkeypatch, sonar_dir) -> Path:
    monkeypatch.chdir(tmp_path)
    assert cli("search", SWEEP, *TINY).exit_code == 0
    return tmp_path / "results" / "dropsweep.db"


def test_a_read_only_storage_cannot_be_written_through(searched):
    storage = open_storage(f"sqlite:///{searched}", read_only=True)
    assert [s.study_name for s in storage.get_all_studies()] == ["sonar"]
    with pytest.raises(StorageFailure) as err:  # the real cause, not Optuna's wrapper
        storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "intruder")
    assert "readonly database" in str(err.value) and "max length" not in str(err.value)


def test_report_and_studies_leave_the_database_byte_for_byte(searched):
    before = digest(searched)
    for args in (["report"], ["report", "--format", "json"], ["studies"],
                 ["report", "--study", "sonar", "--format", "csv"]):
        assert cli(*args).exit_code == 0, args
    assert digest(searched) == before


def test_a_read_only_results_directory_is_one_line(tmp_path, monkeypatch, sonar_dir):
    results = tmp_path / "results"
    results.mkdir()
    if os.geteuid() == 0:  # root writes through permissions: mount a read-only file system
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(results)],
                          capture_output=True).returncode != 0:
            pytest.skip("running as root without permission to mount a read-only directory")
    else:
        results.chmod(0o555)
    try:
        monkeypatch.chdir(tmp_path)
        one_line(cli("search", SWEEP, *TINY), "results", "read-only")
        assert list(results.iterdir()) == []
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(results)], check=True)
        else:
            results.chmod(0o755)


def test_a_corrupt_database_file_is_one_line_and_stays_as_it_was(searched):
    data = bytearray(searched.read_bytes())
    data[100:4000] = b"\xff" * 3900  # a damaged page after the header
    searched.write_bytes(bytes(data))
    for side in ("-wal", "-shm"):
        Path(f"{searched}{side}").unlink(missing_ok=True)
    before = digest(searched)
    one_line(cli("search", SWEEP, *TINY, "--trials", "3"), "storage", str(searched.name))
    one_line(cli("report"), str(searched.name))
    assert digest(searched) == before


def test_an_older_schema_is_one_line_saying_how_to_upgrade(searched):
    with contextlib.closing(sqlite3.connect(searched)) as con, con:  # closed: folded in
        con.execute("update alembic_version set version_num = 'v2.6.0.a'")
    before = digest(searched)
    for result in (cli("search", SWEEP, *TINY, "--trials", "3"), cli("report"), cli("studies")):
        one_line(result, "optuna storage upgrade")
    assert digest(searched) == before


def test_closing_takes_the_storages_opened_since_a_mark_and_folds_their_log_in(tmp_path):
    """close_storages(since=mark): the storages opened after the mark are closed, their
    write-ahead log in the file; one opened before is left open (a caller's own)."""
    from dropsweep.storage.open import close_storages, storages_opened

    before = open_storage(f"sqlite:///{tmp_path}/before.db")
    optuna.create_study(storage=before, study_name="b")
    mark = storages_opened()
    after = open_storage(f"sqlite:///{tmp_path}/after.db")
    optuna.create_study(storage=after, study_name="a")
    assert (tmp_path / "after.db-wal").exists()
    idle = before.engine.pool.checkedin()
    close_storages(since=mark)
    assert not (tmp_path / "after.db-wal").exists()  # folded in: the file alone holds it
    assert before.engine.pool.checkedin() == idle > 0 and (tmp_path / "before.db-wal").exists()
    assert [s.study_name for s in after.get_all_studies()] == ["a"]  # usable again
    close_storages(since=mark)  # closed already: nothing to do, no file made again
    (tmp_path / "after.db").unlink()
    close_storages(since=mark)
    assert not (tmp_path / "after.db").exists()
    # a storage without an idle connection is not connected again to be closed (that would
    # make a file deleted since anew)
    idle_none = open_storage(f"sqlite:///{tmp_path}/idle.db")
    optuna.create_study(storage=idle_none, study_name="i")
    idle_none.engine.pool.dispose()
    for name in ("idle.db", "idle.db-wal", "idle.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    close_storages(since=mark)
    assert not (tmp_path / "idle.db").exists()
    # an in-memory storage is never closed: its data lives in its one connection
    memory = open_storage("sqlite:///:memory:")
    optuna.create_study(storage=memory, study_name="m")
    close_storages(since=mark)
    assert [s.study_name for s in memory.get_all_studies()] == ["m"]


def test_a_command_leaves_the_callers_own_storages_open(tmp_path, monkeypatch, sonar_dir):
    """In-process (CliRunner, a library caller), a command closes only what it opened: an
    in-memory storage the caller made before, whose data lives in its one connection,
    keeps its study."""
    memory = open_storage("sqlite:///:memory:")
    optuna.create_study(storage=memory, study_name="mine")
    monkeypatch.chdir(tmp_path)
    assert cli("search", SWEEP, *TINY).exit_code == 0
    assert cli("report").exit_code == 0
    assert [s.study_name for s in memory.get_all_studies()] == ["mine"]


def test_a_study_not_made_by_dropsweep_is_one_line(tmp_path, monkeypatch, sonar_dir):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/other.db"
    optuna.create_study(storage=url, study_name="sonar").optimize(lambda t: 1.0, n_trials=1)
    one_line(cli("search", SWEEP, *TINY, "--storage", url), "not made by dropsweep", "--study")


# ----------------------------------------------------------------------------- failing mid-run

import sys  # noqa: E402
import time  # noqa: E402

import sqlalchemy.exc as sqlalchemy_exc  # noqa: E402
from helpers import SUITE  # noqa: E402

from dropsweep.storage.faults import describe_failure, is_transient  # noqa: E402

SLOW = ["--set", "train.epochs=1500", "--set", "train.eval_every=500", "--set", "cv.folds=3",
        "--batch", "1", "--threads", "1"]


def _sqlite_error(code: int, text: str) -> Exception:
    """What SQLAlchemy and Optuna raise for an SQLite error, as they chain it."""
    orig = sqlite3.OperationalError(text)
    orig.sqlite_errorcode = code
    wrapped = sqlalchemy_exc.OperationalError("INSERT ...", {}, orig)
    try:
        try:
            raise wrapped
        except sqlalchemy_exc.SQLAlchemyError as exc:
            raise optuna.exceptions.StorageInternalError(
                "An exception is raised during the commit. This typically happens due to "
                "invalid data in the commit, e.g. exceeding max length. ") from exc
    except optuna.exceptions.StorageInternalError as exc:
        return exc



def test_transient_and_permanent_failures_are_told_apart_by_their_real_cause():
    full = _sqlite_error(sqlite3.SQLITE_FULL, "database or disk is full")
    assert not is_transient(full)
    assert describe_failure(full) == "database or disk is full"
    assert is_transient(_sqlite_error(sqlite3.SQLITE_BUSY, "database is locked"))
    assert not is_transient(_sqlite_error(sqlite3.SQLITE_READONLY,
                                          "attempt to write a readonly database"))

    class PgError(Exception):  # what psycopg raises: a SQLSTATE, or none when the socket died
        def __init__(self, text: str, sqlstate: str | None) -> None:
            super().__init__(text)
            self.sqlstate = sqlstate

    def pg(text: str, sqlstate: str | None, invalidated: bool = False) -> Exception:
        return sqlalchemy_exc.OperationalError("SELECT 1", {}, PgError(text, sqlstate),
                                               connection_invalidated=invalidated)

    assert is_transient(pg("terminating connection due to administrator command", "57P01"))
    assert is_transient(pg("server closed the connection unexpectedly", None, True))
    assert is_transient(pg("deadlock detected", "40P01"))
    assert not is_transient(pg("could not extend file: No space left on device", "53100"))
    assert not is_transient(pg('relation "trials" does not exist', "42P01"))

    class UniqueViolation(PgError):
        pass

    def unique(text: str) -> Exception:
        return sqlalchemy_exc.IntegrityError("INSERT", {}, UniqueViolation(text, "23505"))

    # two writers inserted one trial's first heartbeat: the retry finds the row and updates
    assert is_transient(unique('duplicate key value violates unique constraint '
                               '"trial_heartbeats_trial_id_key"'))
    assert not is_transient(unique('duplicate key value violates unique constraint '
                                   '"studies_study_name_key"'))
    assert describe_failure(pg("password authentication failed for postgresql://u:pw@h/d",
                               "28P01")) == "password authentication failed for " \
                                            "postgresql://u:***@h/d"


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MB file system of its own, so that it can be filled (mounting needs root)."""
    where = tmp_path / "disk"
    where.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where)],
            capture_output=True).returncode != 0:
        pytest.skip("filling a disk needs a small file system: mounting one needs root")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    try:
        with open(filler, "wb") as f:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
    except OSError:  # full (once, in CI, already full before the filler could be made)
        pass
    return filler


def _states(db: Path) -> list[str]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return [s for (s,) in con.execute("select state from trials order by number")]
    except sqlite3.Error:  # the tables are being created
        return []


@pytest.mark.slow
def test_a_full_disk_ends_the_search_in_one_line_and_it_resumes_once_there_is_room(
        small_disk, tmp_path, sonar_dir):
    db = small_disk / "s.db"
    args = [sys.executable, "-m", "dropsweep", "search", SWEEP, *SLOW, "--trials", "12",
            "--storage", f"sqlite:///{db}"]
    env = {**os.environ, "DROPSWEEP_HEARTBEAT_SECONDS": "1"}
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists() and _states(db).count("COMPLETE") >= 2:
            break
        time.sleep(0.05)
    filler = _fill(small_disk)
    SUITE["full disks"] += 1
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, (out, err)
    lines = err.strip().splitlines()
    assert "Traceback" not in err and "max length" not in err, err
    line = lines[-1]
    assert line.startswith(f"Error: storage sqlite:///{db} failed: database or disk is full"), line
    assert f"resume with: dropsweep search {SWEEP}" in line and "--trials 12" in line
    kept = [s for s in _states(db) if s == "COMPLETE"]

    filler.unlink(missing_ok=True)  # room again: the same command resumes, nothing is lost
    again = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert "12 of 12 trials finished" in again.stdout
    states = _states(db)
    assert "RUNNING" not in states and "WAITING" not in states
    assert states.count("COMPLETE") >= len(kept)
