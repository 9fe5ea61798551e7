"""Several workers on one study: real processes on one SQLite file (and, in
test_postgres.py, on a real PostgreSQL server). Every test checks the same invariants:
exactly the target number of finished trials, nothing left RUNNING or WAITING, and no
configuration of a grid evaluated twice."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from helpers import SUITE

from dropsweep.liveness import counts_toward_target
from dropsweep.storage import open_storage
from dropsweep.workers import WorkerArgs, exit_status
from dropsweep.runner import SearchSummary

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


def test_worker_command_repeats_the_search_as_one_quiet_worker():
    args = WorkerArgs("s.yaml", ("train.epochs=5",), "sqlite:///x.db", "st", 30, "cpu", None, 1)
    cmd = args.command()
    assert cmd[:5] == [sys.executable, "-m", "dropsweep", "search", "s.yaml"]
    joined = " ".join(cmd)
    for part in ("--storage sqlite:///x.db", "--study st", "--workers 1", "--threads 1",
                 "--quiet", "--set train.epochs=5", "--trials 30", "--device cpu"):
        assert part in joined
    assert "--batch" not in cmd


def test_exit_status_is_zero_only_when_the_target_was_reached():
    done = SearchSummary("s", "x", target=5, finished_before=0, finished=5)
    short = SearchSummary("s", "x", target=5, finished_before=0, finished=3)
    assert exit_status([0, 2], done) == 0
    assert exit_status([0, 2], short) == 2
    assert exit_status([143, 143], short) == 143


@pytest.mark.slow
def test_four_workers_on_sqlite_finish_exactly_the_target(in_tmp):
    proc = dropsweep("search", SONAR_SWEEP, *FAST, "--trials", "16", "--batch", "2",
                     "--workers", "4", cwd=in_tmp)
    SUITE["worker processes"] += 4
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "locked" not in err and "Traceback" not in err
    assert "16 of 16 trials finished" in out
    assert_exactly(finished("sqlite:///results/dropsweep.db"), 16)


@pytest.mark.slow
def test_two_searches_started_at_once_share_the_study(in_tmp):
    procs = [dropsweep("search", SONAR_SWEEP, *FAST, "--trials", "12", "--batch", "3",
                       "--threads", "1", cwd=in_tmp) for _ in range(2)]
    SUITE["worker processes"] += 2
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert "12 of 12 trials finished" in out
    trials = finished("sqlite:///results/dropsweep.db")
    assert_exactly(trials, 12)
    baselines = [t for t in trials if t.user_attrs.get("role") == "baseline"
                 and counts_toward_target(t)]
    assert len(baselines) == 1  # planned once, though both asked for it first
    with sqlite3.connect(in_tmp / "results" / "dropsweep.db") as con:
        assert con.execute("select count(*) from studies").fetchone() == (1,)
