"""kill -9 and SIGTERM against real ``dropsweep search`` processes.

A search is killed with SIGKILL at several moments (during start-up, in the middle of a
trial, right after a trial finished), then the same command is run again; at the end every
trial finished before a kill is still there with the same values, nothing is RUNNING or
WAITING, and the study holds exactly its target. The heartbeat is 1 s here (10 s by
default), so a killed worker's trials go stale after 3 s.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from helpers import SUITE, alive, trials_in_the_file_alone, worker_processes

pytestmark = pytest.mark.slow  # every test kills or stops real dropsweep processes

REPO = Path(__file__).resolve().parents[1]
SONAR_SWEEP = str(REPO / "sweeps" / "sonar.yaml")
ENV = {"DROPSWEEP_HEARTBEAT_SECONDS": "1", "PYTHONUNBUFFERED": "1"}
# slow enough trials (~0.3 s each) that a poll every 20 ms sees them running
SLOW = ["--set", "train.epochs=1500", "--set", "train.eval_every=500", "--set", "cv.folds=3",
        "--batch", "1", "--threads", "1"]
GRID = ["--set", "search.sampler=grid", "--set", "space.placement=[none,input,hidden]",
        "--set", "space.input_rate=[0.2,0.4]", "--set", "space.hidden_rate=[0.3,0.5]",
        "--set", "space.learning_rate=[0.01]", "--set", "space.momentum=[0.8]",
        "--set", "space.max_norm=[off]"]  # 1 + 2 + 2 = 5 points


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dropsweep", *args], cwd=cwd,
                            env={**os.environ, **ENV}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def rows(db: Path) -> list[tuple]:
    """(number, state, value, config json) of every trial, read without writing."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return con.execute(
                "select t.number, t.state, v.value, a.value_json from trials t "
                "left join trial_values v on v.trial_id = t.trial_id "
                "left join trial_user_attributes a on a.trial_id = t.trial_id "
                "and a.key = 'config' order by t.number").fetchall()
    except sqlite3.Error:  # the tables are being created
        return []


def wait_for(db: Path, proc: subprocess.Popen, condition, timeout: float = 120) -> list[tuple]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        now = rows(db)
        if condition(now):
            return now
        time.sleep(0.02)
    raise AssertionError(f"never happened (exit {proc.poll()}): {rows(db)}")


def kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    SUITE["kill -9 points"] += 1


def completed(table: list[tuple]) -> dict[int, tuple]:
    return {n: (value, config) for n, state, value, config in table if state == "COMPLETE"}


@pytest.fixture
def in_tmp(tmp_path, monkeypatch, sonar_dir) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


BALANCED = ["--set", "search.balance=placement"]


@pytest.mark.parametrize("grid,balanced", [(False, False), (True, False), (False, True)],
                         ids=["tpe", "grid", "balanced"])
def test_kill_9_at_any_moment_loses_nothing_and_counts_nothing_twice(in_tmp, grid, balanced):
    target = 5
    args = ["search", SONAR_SWEEP, *SLOW, *(GRID if grid else []),
            *(BALANCED if balanced else []), "--trials", str(target)]
    db = in_tmp / "results" / "dropsweep.db"
    kept: dict[int, tuple] = {}

    # 1. during start-up: while importing, then the moment the storage file appears
    proc = start(args, in_tmp)
    time.sleep(0.3)
    kill9(proc)
    proc = start(args, in_tmp)
    deadline = time.monotonic() + 60
    while not db.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    kill9(proc)
    # 2. in the middle of a trial (one finished, the next running)
    proc = start(args, in_tmp)
    table = wait_for(db, proc, lambda t: len(completed(t)) >= 1
                     and any(s == "RUNNING" for _, s, _, _ in t))
    kill9(proc)
    kept.update(completed(rows(db)))
    # 3. the moment another trial has finished (between two trials)
    proc = start(args, in_tmp)
    before = len(completed(rows(db)))
    wait_for(db, proc, lambda t: len(completed(t)) > before)
    kill9(proc)
    now = completed(rows(db))
    assert all(now[n] == kept[n] for n in kept), "a finished trial changed"
    kept.update(now)
    # then run to the end
    proc = start(args, in_tmp)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert f"{target} of {target} trials finished" in out

    table = rows(db)
    states = [s for _, s, _, _ in table]
    assert "RUNNING" not in states and "WAITING" not in states, states
    final = completed(table)
    assert all(final[n] == kept[n] for n in kept), "a finished trial changed"
    assert counted(db) == target, states  # complete, pruned, or diverged
    if grid:  # every grid point exactly once
        configs = [config for _, config in final.values()]
        assert len(configs) == len(set(configs)) == target
    if balanced:  # every placement its share, lost trials refilled
        import optuna

        from dropsweep.study.liveness import counts_toward_target

        study = optuna.load_study(study_name="sonar", storage=f"sqlite:///{db}")
        placements = Counter(t.params["placement"] for t in study.get_trials()
                             if counts_toward_target(t))
        assert placements == {"none": 2, "input": 1, "hidden": 1, "both": 1}, placements


def test_sigterm_stops_cleanly_like_ctrl_c(in_tmp):
    args = ["search", SONAR_SWEEP, *SLOW, "--trials", "4"]
    db = in_tmp / "results" / "dropsweep.db"
    proc = start(args, in_tmp)
    wait_for(db, proc, lambda t: len(completed(t)) >= 1
             and any(s == "RUNNING" for _, s, _, _ in t))
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert "Interrupted by SIGTERM" in out and "Resume with: dropsweep search" in out
    assert "RUNNING" not in [s for _, s, _, _ in rows(db)]
    # everything stored is in the file itself, the log folded in as the process ended
    assert trials_in_the_file_alone(db, in_tmp / "copy.db") == len(rows(db))


def test_sigterm_to_the_parent_of_workers_stops_them_all(in_tmp):
    args = ["search", SONAR_SWEEP, *SLOW, "--trials", "20", "--workers", "2"]
    db = in_tmp / "results" / "dropsweep.db"
    proc = start(args, in_tmp)
    SUITE["worker processes"] += 2
    wait_for(db, proc, lambda t: len(completed(t)) >= 1
             and sum(s == "RUNNING" for _, s, _, _ in t) >= 2)
    workers = worker_processes(proc.pid)
    assert len(workers) == 2, workers
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "Interrupted by SIGTERM" in out
    assert "RUNNING" not in [s for _, s, _, _ in rows(db)]
    # no orphan left behind: the parent waited for its own workers (a pgrep of the command
    # line would also find another test's workers running beside this one)
    assert not [pid for pid, started in workers.items() if alive(pid, started)]
    assert trials_in_the_file_alone(db, in_tmp / "copy.db") == len(rows(db))


def fold_accuracies(db: Path) -> dict[str, list[float]]:
    """config json -> fold accuracies of every COMPLETE trial."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        found = con.execute(
            "select c.value_json, f.value_json from trials t "
            "join trial_user_attributes c on c.trial_id = t.trial_id and c.key = 'config' "
            "join trial_user_attributes f on f.trial_id = t.trial_id "
            "and f.key = 'fold_accuracies' where t.state = 'COMPLETE'").fetchall()
    return {config: json.loads(folds) for config, folds in found}


def test_a_batch_killed_between_checkpoints_goes_on_from_the_last_one_to_the_same_results(
        in_tmp):
    """Checkpoints every 0.3 s; kill -9 after one was written, mid-batch; the same command
    again fails the killed trials as stale and trains their configurations on from the
    checkpoint, as new trials: each ends with exactly the folds' accuracies of an
    uninterrupted run (another storage, no checkpoints), and the files are gone."""
    common = ["search", SONAR_SWEEP, "--set", "train.epochs=3000", "--set",
              "train.eval_every=100", "--set", "cv.folds=3", "--set", "search.sampler=random",
              "--set", "search.pruner=none", "--set", "search.balance=none", "--batch", "3",
              "--threads", "1", "--trials", "3"]
    args = [*common, "--checkpoint-every", "0.3"]
    db = in_tmp / "results" / "dropsweep.db"
    saves = in_tmp / "results" / "checkpoints"
    proc = start(args, in_tmp)
    deadline = time.monotonic() + 120
    while not list(saves.rglob("*.ckpt")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    time.sleep(0.1)  # between checkpoints
    kill9(proc)
    assert not completed(rows(db))  # nothing finished: the whole batch was in flight
    [written] = list(saves.rglob("*.ckpt"))
    from dropsweep.train.checkpoints import read

    stopped_at = read(written)["state"]["epoch"]
    assert 0 < stopped_at < 3000

    again = start(args, in_tmp)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    table = rows(db)
    assert Counter(state for _, state, _, _ in table) == {"COMPLETE": 3, "FAIL": 3}, table
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        went_on = [json.loads(v) for (v,) in con.execute(
            "select value_json from trial_user_attributes where key = 'resumed'")]
    assert sorted(r["trial"] for r in went_on) == [0, 1, 2]
    assert {r["epoch"] for r in went_on} == {stopped_at}  # from the last checkpoint
    assert not list(saves.rglob("*.ckpt*"))  # recorded: the checkpoints are gone

    plain = start([*common, "--checkpoint-every", "0", "--storage",
                   f"sqlite:///{in_tmp}/plain.db"], in_tmp)
    out, err = plain.communicate(timeout=300)
    assert plain.returncode == 0, err
    assert fold_accuracies(db) == fold_accuracies(in_tmp / "plain.db")
    assert len(fold_accuracies(db)) == 3


def test_a_batch_killed_before_its_first_checkpoint_goes_on_from_its_start_once(in_tmp):
    """Issue 24, item 10, as issue 25 (prerequisite A) keeps it: kill -9 in the middle of a
    batch that wrote no checkpoint. The same command again fails its trials as stale with
    their reason ("interrupted: worker died", in the report) and goes on with the batch
    from its start, before anything new — each lost configuration once, in its place, with
    the batch's seed — and ends with exactly its target."""
    import optuna

    args = ["search", SONAR_SWEEP, "--set", "train.epochs=1500", "--set",
            "train.eval_every=100", "--set", "cv.folds=3", "--set", "search.sampler=random",
            "--set", "search.pruner=none", "--set", "search.balance=none", "--batch", "3",
            "--threads", "1", "--trials", "4", "--checkpoint-every", "0"]
    db = in_tmp / "results" / "dropsweep.db"
    proc = start(args, in_tmp)
    wait_for(db, proc, lambda t: sum(s == "RUNNING" and c is not None for _, s, _, c in t) == 3)
    time.sleep(0.3)
    kill9(proc)
    again = start(args, in_tmp)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    study = optuna.load_study(study_name="sonar", storage=f"sqlite:///{db}")
    trials = study.get_trials()
    killed = trials[:3]
    assert [t.state.name for t in killed] == ["FAIL"] * 3
    assert {t.user_attrs.get("fail_reason") for t in killed} == {"interrupted: worker died"}
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(done) == 4 and "4 of 4 trials finished" in out
    went_on = trials[3:6]
    assert [(t.user_attrs["resumed"]["trial"], t.user_attrs["resumed"]["epoch"])
            for t in went_on] == [(0, 0), (1, 0), (2, 0)]
    assert [t.params for t in went_on] == [t.params for t in killed]
    assert {t.user_attrs["seed"] for t in went_on} == {killed[0].user_attrs["seed"]}
    assert all(t.state.name == "COMPLETE" for t in went_on)
    assert sum(t.user_attrs.get("role") == "baseline" for t in done) == 1
    report = subprocess.run([sys.executable, "-m", "dropsweep", "report"], cwd=in_tmp,
                            env={**os.environ, **ENV}, capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    assert report.stdout.count("interrupted: worker died") == 3, report.stdout


def live_trials(db: Path, name: str) -> list[tuple]:
    """The trials that count, in order: parameters, state, value, fold accuracies and
    learning curve (what a run never stopped would hold, trial for trial)."""
    import optuna

    from dropsweep.study.liveness import counts_toward_target

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    return [(t.params, t.state.name, t.value, t.user_attrs.get("fold_accuracies"),
             t.intermediate_values) for t in study.get_trials(deepcopy=False)
            if counts_toward_target(t)]


def interrupt(proc: subprocess.Popen) -> None:
    """Ctrl-C, as a terminal sends it; the search stops and says how to resume."""
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Resume with: dropsweep search" in out


def running(count: int):
    """A table condition: ``count`` trials of a batch running with their configurations."""
    return lambda t: sum(s == "RUNNING" and c is not None for _, s, _, c in t) == count


def counted(db: Path) -> int:
    """Trials that count toward the target (complete, pruned, or failed for a reason of
    their own: diverged), read without writing."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return con.execute(
                "select count(*) from trials t where t.state in ('COMPLETE', 'PRUNED') or "
                "(t.state = 'FAIL' and exists (select 1 from trial_user_attributes a where "
                "a.trial_id = t.trial_id and a.key = 'fail_reason') and not exists (select 1 "
                "from trial_user_attributes a where a.trial_id = t.trial_id and "
                "a.key = 'interrupted' and a.value_json = 'true'))").fetchone()[0]
    except sqlite3.Error:
        return 0


# sonar.yaml shortened: TPE, balanced, the median pruner; 3 batches of 4 (~4 s each here)
PROOF = ["search", SONAR_SWEEP, "--set", "train.epochs=2000", "--set", "train.eval_every=100",
         "--set", "cv.folds=3", "--batch", "4", "--trials", "12", "--threads", "1"]


def test_a_search_killed_or_stopped_anywhere_ends_with_the_trials_of_one_never_stopped(
        in_tmp):
    """Issue 25 (item 6 and its prerequisites): one Sonar search killed with kill -9 in the
    middle of a batch before any checkpoint, rerun at once and killed again the moment a
    batch was recorded (between batches), rerun and stopped with Ctrl-C in the middle of a
    batch, then run to the end: its live trials are those of the same search never
    stopped, trial for trial in order — parameters (the sampler proposes by ordinal),
    state, value, every fold's accuracy and the learning curve. The killed batch went on
    from its start, the stopped one from the checkpoint the stop wrote."""
    from dropsweep.train.checkpoints import read

    db = in_tmp / "results" / "dropsweep.db"
    saves = in_tmp / "results" / "checkpoints"
    # 1. kill -9 mid-batch (the first: the baseline and three of TPE's), no checkpoint yet
    proc = start(PROOF, in_tmp)
    wait_for(db, proc, running(4))
    time.sleep(0.5)
    kill9(proc)
    assert not completed(rows(db)) and not list(saves.rglob("*.ckpt*"))
    # 2. the rerun waits for the killed trials to go stale, goes on with their batch, and is
    # killed the moment it is recorded: between two batches
    proc = start(PROOF, in_tmp)
    wait_for(db, proc, lambda t: counted(db) >= 4)
    kill9(proc)
    # 3. Ctrl-C in the middle of the next batch: a checkpoint is written where it stopped
    proc = start(PROOF, in_tmp)
    wait_for(db, proc, lambda t: counted(db) >= 8 and running(4)(t))
    time.sleep(0.5)
    interrupt(proc)
    [written] = list(saves.rglob("*.ckpt"))
    stop = read(written)["state"]
    assert "minibatch" in stop and 0 <= stop["epoch"] < 2000
    # 4. to the end
    proc = start(PROOF, in_tmp)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "12 of 12 trials finished" in out and not list(saves.rglob("*.ckpt*"))

    plain = start([*PROOF, "--storage", f"sqlite:///{in_tmp}/plain.db"], in_tmp)
    out, err = plain.communicate(timeout=300)
    assert plain.returncode == 0, err
    mine = live_trials(db, "sonar")
    assert mine == live_trials(in_tmp / "plain.db", "sonar")
    assert len(mine) == 12 and len({str(params) for params, *_ in mine}) == 12
    table = rows(db)
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        went_on = [json.loads(v) for (v,) in con.execute(
            "select value_json from trial_user_attributes where key = 'resumed'")]
    assert [r["epoch"] for r in went_on if r["claim"] is None] == [0] * 4  # the killed batch
    assert [r["epoch"] for r in went_on if r["claim"]] == [stop["epoch"]] * 4  # the stopped
    assert sum(state != "FAIL" for _, state, _, _ in table) <= 12


def test_ctrl_c_in_a_conv_net_batch_goes_on_from_where_it_stopped(in_tmp):
    """Issue 25, item 6: Ctrl-C in the middle of a digits conv-net batch (the default
    --checkpoint-every, 300 s, never reached) writes the batch's checkpoint where it
    stopped; the rerun goes on from it, not from the start, and ends with exactly the
    numbers of the same search never stopped. (The stopped batch was trained again from
    the start, as new trials, with a new seed.)"""
    from dropsweep.train.checkpoints import read

    args = ["search", str(REPO / "sweeps" / "digits-cnn.yaml"), "--set", "train.epochs=10",
            "--set", "train.eval_every=2", "--batch", "4", "--trials", "4", "--threads", "1"]
    db = in_tmp / "results" / "dropsweep.db"
    saves = in_tmp / "results" / "checkpoints"
    proc = start(args, in_tmp)
    with_a_curve = lambda t: running(4)(t) and _reported(db)  # noqa: E731
    wait_for(db, proc, with_a_curve)
    interrupt(proc)
    [written] = list(saves.rglob("*.ckpt"))
    stop = read(written)["state"]
    assert stop["epoch"] >= 2 and "minibatch" in stop  # from there, not from the start
    again = start(args, in_tmp)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        went_on = [json.loads(v) for (v,) in con.execute(
            "select value_json from trial_user_attributes where key = 'resumed'")]
    assert sorted(r["trial"] for r in went_on) == [0, 1, 2, 3]
    # the batch that was training, from where it stopped; a batch of the other optimizer
    # asked with it (the two train one after the other) and not begun, from its start
    assert {r["epoch"] for r in went_on if r["claim"]} == {stop["epoch"]}
    assert {r["epoch"] for r in went_on if not r["claim"]} <= {0}
    plain = start([*args, "--storage", f"sqlite:///{in_tmp}/plain.db"], in_tmp)
    out, err = plain.communicate(timeout=300)
    assert plain.returncode == 0, err
    mine = live_trials(db, "digits-cnn")
    assert mine == live_trials(in_tmp / "plain.db", "digits-cnn") and len(mine) == 4


def _reported(db: Path) -> bool:
    """Whether a running trial has reported a held-out accuracy (an epoch of it is done)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return bool(con.execute(
                "select count(*) from trial_intermediate_values v join trials t on "
                "t.trial_id = v.trial_id where t.state = 'RUNNING'").fetchone()[0])
    except sqlite3.Error:
        return False


def test_two_workers_never_train_one_parameter_set_twice(in_tmp):
    """Issue 25, prerequisite B: ``--workers 2`` on a random search, both workers joining
    the study at the same count: every trial a parameter set of its own (they proposed the
    same ones, and trained them twice)."""
    args = ["search", SONAR_SWEEP, "--set", "train.epochs=200", "--set", "cv.folds=3",
            "--set", "search.sampler=random", "--set", "search.pruner=none", "--batch", "4",
            "--trials", "24", "--workers", "2", "--threads", "1"]
    proc = start(args, in_tmp)
    SUITE["worker processes"] += 2
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    import optuna

    from dropsweep.study.liveness import counts_toward_target

    study = optuna.load_study(study_name="sonar",
                              storage=f"sqlite:///{in_tmp}/results/dropsweep.db")
    trained = [json.dumps(t.params, sort_keys=True) for t in study.get_trials()
               if counts_toward_target(t)]
    assert len(trained) == 24 and len(set(trained)) == 24, trained
