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
from collections import Counter
from pathlib import Path

import optuna
import pytest

from helpers import SUITE
from dropsweep.study.liveness import counts_toward_target
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
@pytest.mark.parametrize("balanced", [False, True], ids=["tpe", "balanced"])
def test_three_workers_on_postgresql_finish_exactly_the_target(tmp_path, sonar_dir, study_name,
                                                               balanced):
    proc = subprocess.run(
        [sys.executable, "-m", "dropsweep", "search", SONAR_SWEEP, *FAST, "--trials", "12",
         "--batch", "2", "--workers", "3", "--storage", URL, "--study", study_name,
         *(["--set", "search.balance=placement"] if balanced else [])],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    SUITE["worker processes"] += 3
    assert proc.returncode == 0, proc.stderr
    assert "12 of 12 trials finished" in proc.stdout and "Traceback" not in proc.stderr
    study = optuna.load_study(study_name=study_name, storage=URL)
    assert_exactly(study.get_trials(deepcopy=False), 12)
    assert not (Path(tmp_path) / "results").exists()  # nothing went to the SQLite default
    if balanced:
        assert Counter(t.params["placement"] for t in study.get_trials(deepcopy=False)
                       if counts_toward_target(t)) == {"none": 3, "input": 3, "hidden": 3,
                                                      "both": 3}


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


# ----------------------------------------------------------------------------- a server that drops us

import socket  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

SLOW = ["--set", "train.epochs=1500", "--set", "train.eval_every=500", "--set", "cv.folds=3",
        "--batch", "1", "--threads", "1"]


def _with_app_name(url: str, name: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}application_name={name}"


def _terminate(app: str) -> int:
    """Terminate every server process serving connections named ``app`` (as a DBA would, or
    a server restart does): how many there were."""
    import psycopg

    with psycopg.connect(URL, autocommit=True) as con:
        rows = con.execute("select pg_terminate_backend(pid) from pg_stat_activity "
                           "where application_name = %s", (app,)).fetchall()
    return len(rows)


def _search(url: str, study: str, cwd: Path, trials: int, **env: str) -> subprocess.Popen:
    SUITE["worker processes"] += 1
    return subprocess.Popen(
        [sys.executable, "-m", "dropsweep", "search", SONAR_SWEEP, *SLOW, "--trials",
         str(trials), "--storage", url, "--study", study],
        cwd=cwd, env={**os.environ, "DROPSWEEP_HEARTBEAT_SECONDS": "1", **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finished(study_name: str) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.RDBStorage(URL)
    try:
        return optuna.load_study(study_name=study_name, storage=storage).get_trials()
    finally:
        storage.engine.dispose()  # polled often: no connection may outlive the call


def _until_complete(study_name: str, proc: subprocess.Popen, n: int,
                    timeout: float = 180) -> None:
    """Wait, while ``proc`` runs, until the study has ``n`` complete trials."""
    deadline = time.monotonic() + timeout
    while _complete(study_name) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"fewer than {n} complete trials"
        time.sleep(0.05)


def _complete(study_name: str) -> int:
    """Complete trials of the study, counted on one short connection."""
    import psycopg

    with psycopg.connect(URL) as con:
        return con.execute("select count(*) from trials t join studies s using (study_id) "
                           "where s.study_name = %s and t.state = 'COMPLETE'",
                           (study_name,)).fetchone()[0]


@pytest.mark.slow
def test_terminated_connections_are_reopened_and_the_search_goes_on(tmp_path, sonar_dir,
                                                                    study_name):
    app = f"dropsweep-{uuid.uuid4().hex[:8]}"
    proc = _search(_with_app_name(URL, app), study_name, tmp_path, 10)
    killed = 0
    for wanted in (2, 4, 6):  # three times, each once more trials have finished
        _until_complete(study_name, proc, wanted)
        killed += _terminate(app)
        SUITE["dropped connections"] += 1
    out, err = proc.communicate(timeout=300)
    assert killed >= 3  # the search's connections really were cut
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "10 of 10 trials finished" in out
    assert_exactly(_finished(study_name), 10)


class _Proxy:
    """A TCP relay to the server that the test can stop and start: a database that goes away
    (a restart, a network cut) and comes back."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.listener: socket.socket | None = None
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()

    def start(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and cut every open one."""
        with self.lock:
            listener, self.listener = self.listener, None
            if listener is not None:
                listener.close()
            for c in self.conns:
                self._cut(c)
            self.conns.clear()

    @staticmethod
    def _cut(c: socket.socket) -> None:
        try:
            c.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        c.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                server = socket.create_connection(self.target)
            except OSError:
                return
            with self.lock:
                if self.listener is not listener:  # stopped while this one was accepted
                    self._cut(client)
                    self._cut(server)
                    return
                self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _via(proxy: _Proxy) -> str:
    parts = urlsplit(URL)
    return parts._replace(netloc=f"{parts.username or 'postgres'}@127.0.0.1:{proxy.port}"
                          ).geturl()


@pytest.mark.slow
def test_a_server_away_briefly_is_waited_for_and_one_away_too_long_is_one_line(
        tmp_path, sonar_dir, study_name):
    parts = urlsplit(URL)
    proxy = _Proxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    proxy.start()
    try:
        # away for 2 s, within the 10 s this search retries for: it goes on
        proc = _search(_via(proxy), study_name, tmp_path, 5,
                       DROPSWEEP_STORAGE_RETRY_SECONDS="10")
        _until_complete(study_name, proc, 2)
        proxy.stop()
        SUITE["dropped connections"] += 1
        time.sleep(2)
        proxy.start()
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert "Traceback" not in err and "5 of 5 trials finished" in out

        # away for good: after its 3 s of retries, one line, the cause, how to resume
        # (a target far from reached when the server goes: on a loaded machine a search of
        # 10 could finish its last trials before the proxy stops)
        proc = _search(_via(proxy), study_name, tmp_path, 20,
                       DROPSWEEP_STORAGE_RETRY_SECONDS="3")
        _until_complete(study_name, proc, 6)
        proxy.stop()
        SUITE["dropped connections"] += 1
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, (out, err)
        assert "Traceback" not in err
        line = err.strip().splitlines()[-1]
        assert line.startswith(f"Error: storage postgresql://postgres@127.0.0.1:{proxy.port}/"
                               "test kept failing: "), line
        assert "resume with: dropsweep search" in line and "--trials 20" in line, line
    finally:
        proxy.stop()
    # the server back: resuming finishes the study, nothing finished lost or counted twice
    proxy.start()
    try:
        proc = _search(_via(proxy), study_name, tmp_path, 20)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert "20 of 20 trials finished" in out
    finally:
        proxy.stop()
    assert_exactly(_finished(study_name), 20)


def test_a_batch_write_that_loses_the_first_heartbeat_race_retries(study_name):
    """A batch's write and the heartbeat thread each look for a new trial's heartbeat row,
    find none and insert it: the loser hits the unique key (seen in CI when a server pause
    lined them up). Here the heartbeat thread is made to win, between the write's look and
    its insert. The write must retry (and update the row), not fail the worker."""
    import psycopg
    import sqlalchemy

    from dropsweep.storage.open import open_storage
    from dropsweep.storage.rdb import TrialWrites

    storage = open_storage(URL, heartbeat=60)
    study = optuna.create_study(study_name=study_name, storage=storage)
    trial_id = study.ask()._trial_id  # noqa: SLF001
    won = []

    @sqlalchemy.event.listens_for(storage.engine, "before_cursor_execute")
    def heartbeat_thread_first(conn, cursor, statement, *args):
        if statement.startswith("INSERT INTO trial_heartbeats") and not won:
            won.append(True)
            with psycopg.connect(URL, autocommit=True) as other:
                other.execute("INSERT INTO trial_heartbeats (trial_id, heartbeat) "
                              "VALUES (%s, now())", (trial_id,))

    storage.write_trials([TrialWrites(trial_id, [], {"x": 1}, {}, [True])], {})
    assert won and not storage.failed
    assert study.trials[0].user_attrs == {"x": 1}
