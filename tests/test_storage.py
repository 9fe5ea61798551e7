"""Opening storages: the SQLite default tuned for many small commits, read-only opens, masking."""

from __future__ import annotations

import os
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
    with pytest.raises(optuna.exceptions.StorageInternalError) as err:
        storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "intruder")
    assert "readonly database" in str(err.value.__cause__)


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
    with sqlite3.connect(searched) as con:
        con.execute("update alembic_version set version_num = 'v2.6.0.a'")
    before = digest(searched)
    for result in (cli("search", SWEEP, *TINY, "--trials", "3"), cli("report"), cli("studies")):
        one_line(result, "optuna storage upgrade")
    assert digest(searched) == before


def test_a_study_not_made_by_dropsweep_is_one_line(tmp_path, monkeypatch, sonar_dir):
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/other.db"
    optuna.create_study(storage=url, study_name="sonar").optimize(lambda t: 1.0, n_trials=1)
    one_line(cli("search", SWEEP, *TINY, "--storage", url), "not made by dropsweep", "--study")
