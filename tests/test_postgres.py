"""The many-machines path: worker processes on one study in a real PostgreSQL server.

Runs against $DROPSWEEP_TEST_POSTGRES (default: the server on 127.0.0.1:5432, database
``test``, trust auth); skips, saying so, only when no server answers there. Each test makes
a uniquely named study and deletes it afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest

from helpers import SUITE
from test_workers import FAST, SONAR_SWEEP, assert_exactly

URL = os.environ.get("DROPSWEEP_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _server_error() -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install -e '.[postgres]')"
    try:
        psycopg.connect(URL, connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001 - any failure means: no server to test against
        return f"no PostgreSQL server answers at {URL}: {str(exc).splitlines()[0]}"
    return None


SKIP = _server_error()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")


@pytest.fixture
def study_name():
    name = f"dropsweep-test-{uuid.uuid4().hex[:12]}"
    yield name
    try:
        optuna.delete_study(study_name=name, storage=URL)
    except KeyError:
        pass


@pytest.mark.slow
def test_three_workers_on_postgresql_finish_exactly_the_target(tmp_path, sonar_dir, study_name):
    proc = subprocess.run(
        [sys.executable, "-m", "dropsweep", "search", SONAR_SWEEP, *FAST, "--trials", "12",
         "--batch", "2", "--workers", "3", "--storage", URL, "--study", study_name],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    SUITE["worker processes"] += 3
    assert proc.returncode == 0, proc.stderr
    assert "12 of 12 trials finished" in proc.stdout and "Traceback" not in proc.stderr
    study = optuna.load_study(study_name=study_name, storage=URL)
    assert_exactly(study.get_trials(deepcopy=False), 12)
    assert not (Path(tmp_path) / "results").exists()  # nothing went to the SQLite default


@pytest.mark.slow
def test_a_password_in_the_url_is_masked_everywhere(tmp_path, sonar_dir, study_name):
    """Trust auth ignores the password, so the server really is used with it in the URL."""
    secret = URL.replace("postgresql://postgres@", "postgresql://postgres:s3cr3t@")
    search = subprocess.run(
        [sys.executable, "-m", "dropsweep", "search", SONAR_SWEEP, *FAST, "--trials", "2",
         "--storage", secret, "--study", study_name],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert search.returncode == 0, search.stderr
    outputs = [search.stdout + search.stderr]
    for args in (["studies"], ["report", "--study", study_name],
                 ["report", "--study", study_name, "--format", "json"],
                 ["report", "--study", "no-such-study"]):
        proc = subprocess.run([sys.executable, "-m", "dropsweep", *args, "--storage", secret],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
        outputs.append(proc.stdout + proc.stderr)
    assert all("s3cr3t" not in text for text in outputs)
    assert any("postgres:***@" in text for text in outputs)
