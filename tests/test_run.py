"""``dropsweep run``: search, confirm and test in one command, ending with the answer; every
stage resumes."""

from __future__ import annotations

import optuna
from click.testing import CliRunner

from dropsweep.cli import main

DIGITS = ["run", "digits", "--set", "train.epochs=3", "--set", "search.trials=8",
          "--repeats", "2", "--batch", "4"]


def _trials(name: str) -> int:
    return len(optuna.load_study(study_name=name,
                                 storage="sqlite:///results/dropsweep.db").trials)


def test_run_ends_with_the_tested_answer_and_a_rerun_does_nothing_more(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    first = runner.invoke(main, DIGITS, catch_exceptions=False)
    assert first.exit_code == 0, first.stderr
    # the stages said on stderr; the answer alone on stdout, then where the tables are
    assert [line for line in first.stderr.splitlines() if line[:2] in ("1.", "2.", "3.")] == [
        "1. search", "2. confirm", "3. test"]
    out = first.stdout.strip()
    words = " ".join(out.split())  # the block is wrapped to the terminal's width
    assert words.startswith("Answer: does dropout help the mlp on digits? (confirmed on 2 "
                            "new hold-out splits, then the test rows)")
    assert "On the 360 test rows (3 seeds)" in words
    assert out.endswith("The tables behind it: dropsweep report --study digits")
    counts = {name: _trials(name) for name in ("digits", "digits:confirm", "digits:test")}
    assert counts["digits"] == 8
    # again: every stage finds its work done, and the answer is the same
    again = runner.invoke(main, DIGITS, catch_exceptions=False)
    assert again.exit_code == 0, again.stderr
    assert again.stdout == first.stdout
    assert {name: _trials(name) for name in counts} == counts
    assert "note: the answer stored in 'digits:test' is shown, not scored again" in again.stderr
    # the same block opens the report
    report = runner.invoke(main, ["report"], catch_exceptions=False).stdout
    assert report.startswith(out.split("\n\nThe tables behind it")[0])


def test_run_without_test_rows_stops_after_the_confirmation(tmp_path, monkeypatch, sonar_dir):
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(main, ["run", "sonar", "--set", "train.epochs=3",
                                     "--set", "cv.folds=3", "--trials", "8", "--repeats", "2"],
                              catch_exceptions=False)
    assert done.exit_code == 0, done.stderr
    assert "3. test" not in done.stderr
    assert "(confirmed on 2 x 3-fold CV on new splits)" in " ".join(done.stdout.split())


# ----------------------------------------------------------------------------- interrupted


import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from helpers import SUITE  # noqa: E402

pytestmark = pytest.mark.slow  # every test runs search, confirm and test end to end

LONG = ["run", "digits", "--set", "train.epochs=150", "--set", "search.trials=8",
        "--repeats", "2", "--batch", "4", "--threads", "1"]
ENV = {"DROPSWEEP_HEARTBEAT_SECONDS": "1", "PYTHONUNBUFFERED": "1"}


def _start(cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dropsweep", *LONG], cwd=cwd,
                            env={**os.environ, **ENV}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _states(db: Path, study: str) -> list[str]:
    """The states of a study's trials, read without writing ([] before it exists)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return [s for (s,) in con.execute(
                "select t.state from trials t join studies s on s.study_id = t.study_id "
                "where s.study_name = ? order by t.number", (study,))]
    except sqlite3.Error:
        return []


def _stop_in(cwd: Path, how: str, study: str, ready) -> None:
    """Run until ``ready(states of study)``, then stop it with ``how``: 'kill' (kill -9) or
    'ctrl-c' (which says how to resume, with exit status 130)."""
    db = cwd / "results" / "dropsweep.db"
    proc = _start(cwd)
    deadline = time.monotonic() + 180
    while proc.poll() is None and time.monotonic() < deadline:
        if ready(_states(db, study)):
            break
        time.sleep(0.02)
    assert proc.poll() is None, (f"{study} ended before it could be stopped",
                                 _states(db, study), proc.communicate())
    if how == "kill":
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        SUITE["kill -9 points"] += 1
    else:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        assert "Traceback" not in err and "Resume with: dropsweep run digits" in err
        SUITE["stopped stages"] += 1


def _answer(cwd: Path) -> dict:
    """The answer's figures without trial numbers (a batch that goes on after a stop does
    so as new trials) and its wording with them."""
    report = subprocess.run([sys.executable, "-m", "dropsweep", "report", "--format", "json"],
                            cwd=cwd, capture_output=True, text=True, check=True)
    answer = json.loads(report.stdout)["answer"]

    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items() if k not in ("trial", "verdict")}
        return [plain(v) for v in value] if isinstance(value, list) else value

    return plain(answer)


@pytest.mark.parametrize("hows", [("kill", "ctrl-c", "kill"), ("ctrl-c", "kill", "ctrl-c")])
def test_run_stopped_in_every_stage_ends_with_the_answer_of_one_never_stopped(tmp_path, hows):
    """Issue 25, item 5: ``dropsweep run`` stopped (kill -9 or Ctrl-C) in its search, then in
    its confirmation, then in its test, each time run again with the same command, ends with
    the answer of the same run never stopped."""
    plain = tmp_path / "plain"
    stopped = tmp_path / "stopped"
    plain.mkdir(), stopped.mkdir()
    done = _start(plain)
    out, err = done.communicate(timeout=600)
    assert done.returncode == 0, err
    search, confirm, test = hows
    _stop_in(stopped, search, "digits", lambda s: s.count("RUNNING") == 4)  # mid-batch
    _stop_in(stopped, confirm, "digits:confirm", lambda s: "RUNNING" in s and "COMPLETE" in s)
    _stop_in(stopped, test, "digits:test", lambda s: 0 < s.count("COMPLETE"))
    last = _start(stopped)
    out_again, err = last.communicate(timeout=600)
    assert last.returncode == 0, err
    assert _answer(stopped) == _answer(plain)
    assert _answer(plain)["status"] == "tested"
