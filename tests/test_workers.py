"""Several workers on one study: real processes on one SQLite file (and, in
test_postgres.py, on a real PostgreSQL server). Every test checks the same invariants:
exactly the target number of finished trials, nothing left RUNNING or WAITING, and no
configuration of a grid evaluated twice."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from dataclasses import fields, replace
from pathlib import Path

import optuna
import pytest

from helpers import SUITE, alive, worker_processes

from dropsweep.study.liveness import counts_toward_target
from dropsweep.storage.open import open_storage
from dropsweep.study.workers import (PARENT_PID_ENV, WorkerArgs, exit_status, watch_parent,
                               worker_args)
from dropsweep.study.summary import SearchSummary

REPO = Path(__file__).resolve().parents[1]
SONAR_SWEEP = str(REPO / "sweeps" / "sonar.yaml")
FAST = ["--set", "train.epochs=6", "--set", "train.eval_every=3", "--set", "cv.folds=3"]


def dropsweep(*args: str, cwd: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dropsweep", *args], cwd=cwd,
                            env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finished(url: str, name: str = "sonar") -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=open_storage(url, read_only=True))
    return study.get_trials(deepcopy=False)


def assert_exactly(trials: list, target: int) -> None:
    states = [t.state.name for t in trials]
    assert sum(counts_toward_target(t) for t in trials) == target, states
    assert "RUNNING" not in states and "WAITING" not in states, states


@pytest.fixture
def in_tmp(tmp_path, monkeypatch, sonar_dir) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def worker_options(cmd: list[str]) -> WorkerArgs:
    """The options a worker's command line gives it: ``search SWEEP --worker-options JSON``."""
    assert cmd[:4] == [sys.executable, "-m", "dropsweep", "search"], cmd
    assert cmd[5] == "--worker-options" and len(cmd) == 7, cmd
    options = WorkerArgs.from_json(cmd[6])
    assert cmd[4] == options.sweep
    return options


# every field set, none to its default
EVERY_FIELD = WorkerArgs("s.yaml", ("train.epochs=5", "cv.folds=3"), "sqlite:///x.db", "st",
                         30, "cuda:1", 4, 3, "ck/dir", 12.5, False)


def test_worker_options_round_trip_through_json():
    assert WorkerArgs.from_json(EVERY_FIELD.to_json()) == EVERY_FIELD
    defaults = WorkerArgs("s.yaml", (), "sqlite:///x.db", "st", None, "auto", None, 1)
    assert WorkerArgs.from_json(defaults.to_json()) == defaults
    assert set(json.loads(EVERY_FIELD.to_json())) == {f.name for f in fields(WorkerArgs)}


@pytest.mark.parametrize(("text", "part"), [
    ("{nope", "not JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"sweep": "s.yaml"}', "missing key 'storage'"),
    (EVERY_FIELD.to_json()[:-1] + ',"workers":2}', "unknown key 'workers'"),
    (EVERY_FIELD.to_json().replace('"trials":30', '"trials":"30"'), "trials: '30'"),
    (EVERY_FIELD.to_json().replace('"threads":3', '"threads":0'), "threads: 0"),
    (EVERY_FIELD.to_json().replace('"quiet":false', '"quiet":1'), "quiet: 1"),
    (EVERY_FIELD.to_json().replace('"overrides":["train.epochs=5"', '"overrides":[5'),
     "overrides"),
])
def test_worker_options_that_are_not_worker_args_are_refused(text, part):
    from dropsweep.errors import DropsweepError

    with pytest.raises(DropsweepError, match=re.escape(part)):
        WorkerArgs.from_json(text)


def test_worker_command_repeats_the_search_as_one_quiet_worker():
    args = WorkerArgs("s.yaml", ("train.epochs=5",), "sqlite:///x.db", "st", 30, "cpu", None, 1)
    cmd = args.command()
    assert cmd[:5] == [sys.executable, "-m", "dropsweep", "search", "s.yaml"]
    assert worker_options(cmd) == args
    assert args.quiet  # a worker prints no progress of its own: the parent does
    assert worker_options(EVERY_FIELD.command()) == EVERY_FIELD


def test_each_worker_is_told_its_own_device_and_batch():
    common = WorkerArgs("s.yaml", (), "sqlite:///x.db", "st", None, "cuda", None, 1)
    args = worker_args(common, ["cuda:0", "cuda:1", "cuda:0"], [4, None, 4])
    told = [worker_options(a.command()) for a in args]
    assert [o.device for o in told] == ["cuda:0", "cuda:1", "cuda:0"]
    assert [o.batch for o in told] == [4, None, 4]
    assert all(o == replace(common, device=o.device, batch=o.batch) for o in told)


def test_a_worker_searches_with_exactly_the_options_it_was_given(in_tmp, monkeypatch):
    """``search SWEEP --worker-options JSON`` runs the search the parent resolved: every
    field reaches run_search (the overrides, the storage, study, trials, device, batch,
    threads, checkpoints), and quiet means no progress."""
    import torch
    from click.testing import CliRunner

    from dropsweep.cli import main
    from dropsweep.study import runner

    seen: dict = {}

    class Reached(Exception):
        pass

    def run_search(sweep, dataset, **kwargs):
        seen.update(kwargs, epochs=sweep.train.epochs, folds=sweep.cv.folds,
                    threads=torch.get_num_threads())
        raise Reached

    monkeypatch.setattr(runner, "run_search", run_search)
    before = torch.get_num_threads()
    options = WorkerArgs(SONAR_SWEEP, ("train.epochs=5", "cv.folds=3"),
                         f"sqlite:///{in_tmp}/w.db", "worker-study", 7, "cpu", 3, 1,
                         str(in_tmp / "ck"), 12.5, True)
    try:
        result = CliRunner().invoke(main, ["search", SONAR_SWEEP, "--worker-options",
                                           options.to_json()])
    finally:
        torch.set_num_threads(before)
    assert isinstance(result.exception, Reached), (result.exit_code, result.stderr)
    assert seen["epochs"] == 5 and seen["folds"] == 3 and seen["threads"] == 1
    assert {k: seen[k] for k in ("storage_url", "study_name", "trials", "device", "batch",
                                 "checkpoint_dir", "checkpoint_every")} == {
        "storage_url": options.storage, "study_name": "worker-study", "trials": 7,
        "device": "cpu", "batch": 3, "checkpoint_dir": str(in_tmp / "ck"),
        "checkpoint_every": 12.5}
    assert result.stderr == ""  # quiet: no progress, no notice


@pytest.mark.parametrize("extra", [["--trials", "3"], ["--workers", "1"], ["--quiet"],
                                   ["--set", "train.epochs=5"], ["--storage", "x.db"]])
def test_worker_options_with_any_other_option_is_one_line_error(in_tmp, extra):
    from click.testing import CliRunner

    from dropsweep.cli import main

    result = CliRunner().invoke(main, ["search", SONAR_SWEEP, *extra, "--worker-options",
                                       EVERY_FIELD.to_json()])
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert not isinstance(result.exception, Exception) or isinstance(result.exception,
                                                                     SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "--worker-options" in lines[0] and extra[0] in lines[0], lines[0]
    assert list(in_tmp.iterdir()) == []


@pytest.mark.parametrize(("text", "part"), [
    ("{nope", "not JSON"),
    ('{"sweep": "s.yaml"}', "missing key"),
    (replace(EVERY_FIELD, sweep="other.yaml").to_json(), "names the sweep other.yaml"),
])
def test_worker_options_that_do_not_parse_are_one_line_error(in_tmp, text, part):
    from click.testing import CliRunner

    from dropsweep.cli import main

    result = CliRunner().invoke(main, ["search", "s.yaml", "--worker-options", text])
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "--worker-options" in lines[0] and part in lines[0], lines[0]
    assert list(in_tmp.iterdir()) == []


def test_search_with_workers_spreads_them_over_the_gpus(in_tmp, monkeypatch):
    """CUDA faked (this machine has none): two GPUs, three workers; the worker command lines
    carry cuda:0, cuda:1, cuda:0, and each batch is what its GPU's free memory holds for the
    workers on that GPU (two share cuda:0: half its memory each)."""
    import torch
    from click.testing import CliRunner

    from dropsweep.train import devices

    from dropsweep.train import memory

    from dropsweep.study import workers
    from dropsweep.cli import main
    from dropsweep.train.memory import trial_need

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(devices, "deterministic_cuda", lambda: None)
    one = trial_need([60, 60, 30, 1], folds=3, max_rows=208).total
    free = {"cuda:0": 10 * one, "cuda:1": 5 * one}  # usable: 80%
    monkeypatch.setattr(memory, "available", lambda device: free[str(device)])
    started: list = []

    def run_workers(args, stop, watch, interval=0.5):
        started.extend(args)
        return [0] * len(args)

    monkeypatch.setattr(workers, "run_workers", run_workers)
    result = CliRunner().invoke(main, ["search", SONAR_SWEEP, *FAST, "--trials", "3",
                                       "--device", "cuda", "--workers", "3"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    told = [worker_options(a.command()) for a in started]
    assert [o.device for o in told] == ["cuda:0", "cuda:1", "cuda:0"]
    # cuda:0: 10 x 0.8 / 2 workers = 4 trials each; cuda:1: 5 x 0.8 = 4 for its one worker
    assert [o.batch for o in told] == [4, 4, 4]
    assert {(o.sweep, o.overrides, o.trials, o.quiet) for o in told} == {
        (SONAR_SWEEP, tuple(FAST[1::2]), 3, True)}
    assert "each worker on cuda:0 trains 4 trials at a time, not 16" in result.stderr
    started.clear()
    free["cuda:1"] = 100 * one
    result = CliRunner().invoke(main, ["search", SONAR_SWEEP, *FAST, "--trials", "3",
                                       "--device", "cuda:1", "--workers", "2"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    told = [worker_options(a.command()) for a in started]
    assert [o.device for o in told] == ["cuda:1", "cuda:1"]
    assert all(o.batch is None for o in told)  # 16 fit: the automatic batch


def test_exit_status_is_zero_only_when_the_target_was_reached():
    done = SearchSummary("s", "x", target=5, finished_before=0, finished=5)
    short = SearchSummary("s", "x", target=5, finished_before=0, finished=3)
    assert exit_status([0, 2], done) == 0
    assert exit_status([0, 2], short) == 2
    assert exit_status([143, 143], short) == 143


@pytest.mark.slow
@pytest.mark.parametrize("balanced", [False, True], ids=["tpe", "balanced"])
def test_four_workers_on_sqlite_finish_exactly_the_target(in_tmp, balanced):
    proc = dropsweep("search", SONAR_SWEEP, *FAST, "--trials", "16", "--batch", "2",
                     "--workers", "4", *(["--set", "search.balance=placement"] if balanced
                                         else []), cwd=in_tmp)
    SUITE["worker processes"] += 4
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "locked" not in err and "Traceback" not in err
    assert "16 of 16 trials finished" in out
    trials = finished("sqlite:///results/dropsweep.db")
    assert_exactly(trials, 16)
    if balanced:  # four workers asking at once still give every placement exactly its share
        assert Counter(t.params["placement"] for t in trials if counts_toward_target(t)) \
            == {"none": 4, "input": 4, "hidden": 4, "both": 4}


@pytest.mark.slow
def test_two_searches_started_at_once_share_the_study(in_tmp):
    # enough training that both are still running when the later one has started (its
    # start-up can lag by a second or more on a loaded machine; 150 epochs no longer were,
    # once the kernel trained spans of epochs)
    procs = [dropsweep("search", SONAR_SWEEP, *FAST, "--set", "train.epochs=600",
                       "--set", "train.eval_every=200", "--trials", "30", "--batch", "3",
                       "--threads", "1", cwd=in_tmp) for _ in range(2)]
    SUITE["worker processes"] += 2
    ran = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert "30 of 30 trials finished" in out, out
        ran.append(int(re.search(r"\((\d+) run now\)", out).group(1)))
    assert all(ran) and sum(ran) == 30, ran  # both worked on it, nothing twice
    trials = finished("sqlite:///results/dropsweep.db")
    assert_exactly(trials, 30)
    baselines = [t for t in trials if t.user_attrs.get("role") == "baseline"
                 and counts_toward_target(t)]
    assert len(baselines) == 1  # planned once, though both asked for it first
    with sqlite3.connect(in_tmp / "results" / "dropsweep.db") as con:
        assert con.execute("select count(*) from studies").fetchone() == (1,)


# ----------------------------------------------------------------------------- orphans


def test_only_a_worker_of_run_workers_watches_a_parent(monkeypatch):
    monkeypatch.delenv(PARENT_PID_ENV, raising=False)
    assert watch_parent() is False  # a plain ``dropsweep search``
    monkeypatch.setenv(PARENT_PID_ENV, "not a pid")
    assert watch_parent() is False
    assert PARENT_PID_ENV not in os.environ  # taken out: nothing it starts inherits it


# A worker's start, alone: watch for the parent named in the environment, then a clean stop
# (as stop.stop_on_signals does) on SIGTERM, reported through a file.
WATCHER = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path
    import dropsweep.study.workers as workers
    if sys.argv[2] == "poll":  # as where there is no PR_SET_PDEATHSIG
        workers._signal_when_parent_dies = lambda signum: False
    def stop(signum, frame):
        Path(sys.argv[1]).write_text(f"stopped by {signum}")
        sys.exit(143)
    signal.signal(signal.SIGTERM, stop)
    assert workers.watch_parent(interval=0.1)
    Path(sys.argv[1] + ".ready").write_text(str(os.getpid()))
    time.sleep(60)
""")


def wait_for_file(path: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} never written")


def test_a_worker_whose_parent_is_already_gone_stops_at_once(tmp_path):
    done = tmp_path / "done"
    # its parent is this test, not the pid it is told: as if the parent died before it looked
    proc = subprocess.run([sys.executable, "-c", WATCHER, str(done), "kernel"], timeout=60,
                          env={**os.environ, PARENT_PID_ENV: str(os.getpid() + 10**6)})
    assert proc.returncode == 143
    assert done.read_text() == f"stopped by {signal.SIGTERM}"


@pytest.mark.parametrize("how", ["kernel", "poll"])
def test_a_worker_stops_cleanly_when_its_parent_dies(tmp_path, how):
    done = tmp_path / "done"
    # the parent: starts the worker, tells it its pid, and dies by SIGKILL once it watches
    parent = textwrap.dedent(f"""
        import os, signal, subprocess, sys, time
        from pathlib import Path
        subprocess.Popen([sys.executable, "-c", {WATCHER!r}, {str(done)!r}, {how!r}],
                         env={{**os.environ, {PARENT_PID_ENV!r}: str(os.getpid())}})
        while not Path({str(done)!r} + ".ready").exists():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", parent], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    worker = int((tmp_path / "done.ready").read_text())
    try:
        assert wait_for_file(done, timeout=10) == f"stopped by {signal.SIGTERM}"
    finally:
        if not done.exists():  # an orphan left running: end it
            try:
                os.kill(worker, signal.SIGKILL)
            except ProcessLookupError:
                pass


def trial_states(db: Path) -> list[tuple[int, str, bool]]:
    """(number, state, interrupted) of every trial, read without writing; a trial that
    diverged (FAIL with its own reason, "loss became NaN ...": a result of the random
    sampler's draw, not of the stop) reads as state "DIVERGED"."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rows = con.execute(
            "select t.number, t.state, a.value_json, r.value_json from trials t "
            "left join trial_user_attributes a on a.trial_id = t.trial_id "
            "and a.key = 'interrupted' "
            "left join trial_user_attributes r on r.trial_id = t.trial_id "
            "and r.key = 'fail_reason' order by t.number").fetchall()
    return [(n, "DIVERGED" if state == "FAIL" and flag != "true"
             and (reason or "").startswith('"loss became') else state, flag == "true")
            for n, state, flag, reason in rows]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_kill_9_of_the_parent_stops_its_workers_cleanly(in_tmp):
    from test_kill import SLOW, kill9, start, wait_for

    # far more trials than the test lasts: workers left running would go on adding them
    proc = start(["search", SONAR_SWEEP, *SLOW, "--trials", "1000", "--workers", "2"], in_tmp)
    SUITE["worker processes"] += 2
    db = in_tmp / "results" / "dropsweep.db"
    wait_for(db, proc, lambda t: sum(s == "RUNNING" for _, s, _, _ in t) >= 2)
    workers = worker_processes(proc.pid)
    assert len(workers) == 2, workers
    kill9(proc)
    try:
        deadline = time.monotonic() + 30
        while any(alive(*w) for w in workers.items()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(*w) for w in workers.items()), "workers outlived their parent"
        _, err = proc.communicate(timeout=30)  # the workers held its stderr
    finally:
        for pid, started in workers.items():
            if alive(pid, started):
                os.kill(pid, signal.SIGKILL)
    assert "Traceback" not in err, err
    # a clean stop: each trial in flight ended FAIL + interrupted (no other worker could have
    # failed it in the meantime), nothing else failed (a trial that diverged before the kill
    # is a result, not a failure of the stop), nothing left RUNNING or WAITING
    table = trial_states(db)
    states = [state for _, state, _ in table]
    assert "RUNNING" not in states and "WAITING" not in states, table
    assert all(flag for _, state, flag in table if state == "FAIL"), table
    assert any(flag for _, _, flag in table), table  # they were stopped mid-trial
    # and the study stops growing
    time.sleep(3)
    assert trial_states(db) == table
