"""The baseline is never lost, and a worker whose trials were taken from it goes on
(issue 10, items 3 and 4): in process against a prepared study, and with real processes,
one of them paused (SIGSTOP) past the heartbeat grace while it trains the baseline."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from dropsweep import records
from dropsweep.config import build_sweep
from dropsweep.families.mlp import MLP
from dropsweep.families.mlp import config as mlp_config
from dropsweep.liveness import BASELINE_ATTEMPTS, counts_toward_target
from dropsweep.asking import next_planned as _next_planned
from dropsweep.runner import open_search, run_search
from dropsweep.space import config_values, fixed_distributions, planned_configs, space_of
from dropsweep.sweepfile import apply_overrides, parse_sweep_text

from helpers import SUITE, StopAfter

SWEEP = """
name: small
model: {hidden: [8]}
train: {epochs: 8, batch_size: 16, eval_every: 2}
cv: {folds: 3, seed: 1}
search: {trials: 14, sampler: random, seed: 0, pruner: median}
space:
  placement: [none, input]
  input_rate: {low: 0.1, high: 0.5}
  learning_rate: {low: 0.001, high: 0.3, log: true}
  momentum: {low: 0.5, high: 0.95}
  max_norm: [off, 3]
"""


def sweep_of(*overrides: str):
    return build_sweep(apply_overrides(parse_sweep_text(SWEEP, "test.yaml"), list(overrides)))


def prepared(sweep, storage: str, baseline_state: TrialState | None, others: int,
             **baseline_attrs) -> optuna.Study:
    """A study as a search left it: ``others`` complete search trials that reported 99% at
    every checkpoint (so the median pruner would stop anything worse), and the baseline in
    ``baseline_state`` (None: absent)."""
    study, _ = open_search(sweep, storage_url=storage)
    space = space_of(sweep)

    def add(config: mlp_config, state: TrialState, role: str, **attrs) -> None:
        study.add_trial(create_trial(
            state=state, value=0.99 if state == TrialState.COMPLETE else None,
            params=config_values(config, MLP.dimensions, space),
            distributions=fixed_distributions(config, MLP.dimensions, space),
            intermediate_values={} if state == TrialState.FAIL
            else {e: 0.99 for e in range(2, sweep.train.epochs, 2)},
            user_attrs={records.CONFIG: config.to_dict(), records.ROLE: role, **attrs}))

    if baseline_state is not None:
        add(sweep.baseline, baseline_state, records.ROLE_BASELINE, **baseline_attrs)
    for i in range(others):
        add(mlp_config(learning_rate=0.02 + 0.001 * i), TrialState.COMPLETE, records.ROLE_SEARCH)
    return study


def baselines(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False)
            if t.user_attrs.get(records.ROLE) == records.ROLE_BASELINE]


def test_a_baseline_failed_as_stale_runs_first_and_the_active_pruner_never_stops_it(
        dataset, storage):
    """The paused-worker path: the baseline failed as stale (no reason), and by now the
    median pruner has 12 complete trials at 99% to compare with. On the old code the re-run
    baseline was pruned at its first checkpoint, for good."""
    sweep = sweep_of()
    study = prepared(sweep, storage, TrialState.FAIL, others=12)
    run_search(sweep, dataset, storage_url=storage, device="cpu", batch=1)
    trials = study.get_trials(deepcopy=False)
    rerun = [t for t in baselines(study) if t.state != TrialState.FAIL]
    assert [t.state for t in rerun] == [TrialState.COMPLETE]
    assert rerun[0].number == 13  # the first trial this search asked for
    assert sorted(rerun[0].intermediate_values) == [2, 4, 6, 8]  # trained to the end
    # and the pruner was active: search trials of this run were pruned against 99%
    assert any(t.state == TrialState.PRUNED for t in trials if t.number > 13)
    assert sum(counts_toward_target(t) for t in trials) == 14


def test_a_pruned_baseline_does_not_count_and_is_run_again_on_resume(dataset, storage):
    """A study from before the baseline was exempt: target reached, baseline pruned."""
    sweep = sweep_of("search.trials=3")
    study = prepared(sweep, storage, TrialState.PRUNED, others=3)
    assert sum(counts_toward_target(t) for t in study.get_trials()) == 3  # the 3 others
    summary = run_search(sweep, dataset, storage_url=storage, device="cpu", trials=4)
    assert summary.ran == 1
    assert [t.state for t in baselines(study)] == [TrialState.PRUNED, TrialState.COMPLETE]


def test_a_baseline_that_keeps_diverging_is_tried_a_bounded_number_of_times(dataset, storage):
    sweep = sweep_of()
    planned = planned_configs(sweep)
    study = prepared(sweep, storage, None, others=0)
    for attempt in range(BASELINE_ATTEMPTS):
        assert _next_planned(study, planned) == sweep.baseline, attempt
        study.add_trial(create_trial(
            state=TrialState.FAIL, user_attrs={
                records.CONFIG: sweep.baseline.to_dict(), records.ROLE: records.ROLE_BASELINE,
                records.FAIL_REASON: "loss became NaN at epoch 3, fold 1"}))
    assert _next_planned(study, planned) is None  # gave up: the search goes on without it


def test_a_running_or_complete_baseline_is_not_planned_again(dataset, storage):
    sweep = sweep_of()
    planned = planned_configs(sweep)
    study = prepared(sweep, storage, TrialState.COMPLETE, others=1)
    assert _next_planned(study, planned) is None
    study = prepared(sweep_of("name=other"), storage, None, others=0)
    study.enqueue_trial(config_values(sweep.baseline, MLP.dimensions, space_of(sweep)),
                        user_attrs={records.CONFIG: sweep.baseline.to_dict()})
    assert _next_planned(study, planned) is None  # queued: in flight


# ----------------------------------------------------------------------------- lost trials




LOST = ("search.trials=5", "search.pruner=none", "train.epochs=40", "train.eval_every=5")


def stopped(dataset, storage: str, tmp_path: Path, every: float
            ) -> list[optuna.trial.FrozenTrial]:
    """A search of 5 stopped (Ctrl-C) in the middle of its first batch of 3 (the baseline
    and two sampler trials, checkpointed every epoch or never: ``every`` 0): its trials."""
    run_search(sweep_of(*LOST), dataset, storage_url=storage, device="cpu", batch=3,
               stop=StopAfter(20), checkpoint_dir=tmp_path / "saves", checkpoint_every=every)
    trials = optuna.load_study(study_name="small", storage=storage).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] * 3
    return trials


def retries(study: optuna.Study) -> dict[int, list[optuna.trial.FrozenTrial]]:
    """Lost trial number -> the trials that ran its configuration again (Optuna's retry
    history, as RetryFailedTrialCallback writes it)."""
    out: dict[int, list] = {}
    for t in study.trials:
        history = t.system_attrs.get("retry_history")
        if history:
            out.setdefault(history[-1], []).append(t)
    return out


def test_a_lost_trial_without_a_checkpoint_is_run_again_once_with_its_configuration(
        dataset, storage, tmp_path):
    """Issue 24, item 10: a batch stopped before it wrote any checkpoint; on resume each of
    its sampler trials' configurations is trained again (the same parameters, before any new
    one is asked), once; the baseline is planned again; the study ends with its target, and
    each lost trial says why it failed."""
    SUITE["hostile checkpoints"] += 1
    from dropsweep.rows import trial_row

    lost = stopped(dataset, storage, tmp_path, every=0)
    assert [trial_row(t).fail_reason for t in lost] == ["interrupted"] * 3
    run_search(sweep_of(*LOST), dataset, storage_url=storage, device="cpu", batch=3,
               checkpoint_dir=tmp_path / "saves")
    study = optuna.load_study(study_name="small", storage=storage)
    assert [t.state for t in study.trials].count(TrialState.COMPLETE) == 5
    again = retries(study)
    searched = [t for t in lost if t.user_attrs[records.ROLE] == records.ROLE_SEARCH]
    assert sorted(again) == [t.number for t in searched] and len(searched) == 2
    for old in searched:
        [new] = again[old.number]
        assert new.state == TrialState.COMPLETE and new.params == old.params
        assert new.user_attrs[records.CONFIG] == old.user_attrs[records.CONFIG]
        assert new.system_attrs["failed_trial"] == old.number
        assert new.number < 6  # in the first batch of the resume, before any new one
    assert len(baselines(study)) == 2 and baselines(study)[-1].state == TrialState.COMPLETE


def test_a_lost_trial_with_a_checkpoint_goes_on_from_it_and_is_not_run_again(
        dataset, storage, tmp_path):
    """The same stop after checkpoints were written: each lost trial goes on from the
    checkpoint, and none is also run again from the start."""
    SUITE["hostile checkpoints"] += 1
    lost = stopped(dataset, storage, tmp_path, every=1e-9)
    run_search(sweep_of(*LOST), dataset, storage_url=storage, device="cpu", batch=3,
               checkpoint_dir=tmp_path / "saves", checkpoint_every=1e-9)
    study = optuna.load_study(study_name="small", storage=storage)
    assert [t.state for t in study.trials].count(TrialState.COMPLETE) == 5
    assert retries(study) == {}
    went_on = sorted(t.user_attrs[records.RESUMED]["trial"] for t in study.trials
                     if records.RESUMED in t.user_attrs)
    assert went_on == [0, 1, 2]
    configs = [str(t.params) for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(configs) == len(set(configs))
    assert {str(t.params) for t in lost} <= set(configs)


def test_two_workers_that_run_one_lost_trial_again_at_once_keep_only_the_first(
        dataset, storage, tmp_path):
    """Two workers that both see a lost trial at the same moment both queue it; the lower
    trial number keeps it and the other is dropped before it trains (not a result, not
    run again), as for a planned configuration."""
    SUITE["hostile checkpoints"] += 1
    from dropsweep.asking import ask_next

    sweep = sweep_of(*LOST)
    lost = stopped(dataset, storage, tmp_path, every=0)
    study, _ = open_search(sweep, storage_url=storage)
    [first, second] = [t for t in lost
                       if t.user_attrs[records.ROLE] == records.ROLE_SEARCH]
    planned, space = planned_configs(sweep), space_of(sweep)
    assert ask_next(study, sweep, space, planned)[0].number == 3  # the baseline again
    for _ in range(2):  # both workers queue the first lost trial again
        study.add_trial(create_trial(
            state=TrialState.WAITING, params=first.params, distributions=first.distributions,
            user_attrs={records.CONFIG: first.user_attrs[records.CONFIG]},
            system_attrs={"failed_trial": first.number, "retry_history": [first.number]}))
    asked = [ask_next(study, sweep, space, planned)[0].number for _ in range(2)]
    trials = study.get_trials()
    assert asked[0] == 4 and trials[5].state == TrialState.FAIL  # the second: dropped
    assert trials[5].user_attrs[records.INTERRUPTED] is True
    # and then the second lost trial, queued by this worker itself, before anything new
    assert trials[asked[1]].system_attrs["retry_history"] == [second.number]
    assert [t.number for t in trials if t.system_attrs.get("retry_history") == [first.number]
            and t.state == TrialState.RUNNING] == [4]


# ----------------------------------------------------------------------------- real processes

REPO = Path(__file__).resolve().parents[1]
SONAR_SWEEP = str(REPO / "sweeps" / "sonar.yaml")
# ~0.3 s trials, one at a time, checkpoints every 500 epochs (pruning from epoch 500)
SLOW = ["--set", "train.epochs=1500", "--set", "train.eval_every=500", "--set", "cv.folds=3",
        "--batch", "1", "--threads", "1"]
BEAT = 2  # heartbeat seconds: the paused worker's trial is stale after 3 beats (6 s)


def _rows(db: Path) -> list[tuple]:
    """(number, state, role, checkpoints reported) of every trial, read-only."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return con.execute(
                "select t.number, t.state, a.value_json, (select count(*) from "
                "trial_intermediate_values v where v.trial_id = t.trial_id) from trials t "
                "left join trial_user_attributes a on a.trial_id = t.trial_id "
                "and a.key = 'role' order by t.number").fetchall()
    except sqlite3.Error:
        return []


def _wait(db: Path, condition, proc: subprocess.Popen, timeout: float = 120) -> list[tuple]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = _rows(db)
        if condition(rows):
            return rows
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError(f"never happened: {_rows(db)}")


def test_a_lost_trial_whose_retry_was_dropped_as_surplus_is_owed_nothing_more():
    """A retry dropped because the target or its placement's share filled meanwhile would
    be asked first, and dropped, at every ask: the lost configuration is settled instead."""
    from dropsweep.liveness import owed

    def trial(number, reason=None, retries=None):
        trained = reason != records.SURPLUS  # one dropped as surplus had no batch
        t = create_trial(state=TrialState.FAIL, user_attrs={
            records.ROLE: records.ROLE_SEARCH, records.INTERRUPTED: True,
            **({records.BATCH: number} if trained else {}),
            **({records.FAIL_REASON: reason} if reason else {})},
            system_attrs={records.RETRY_HISTORY: [retries]} if retries is not None else {})
        t.number = number
        return t

    lost = trial(0, records.WORKER_DIED)
    assert owed([lost]) == [lost]
    assert owed([lost, trial(1, records.SURPLUS, retries=0)]) == []
    # a retry that was merely interrupted in its turn is lost itself, and owed a run
    retry = trial(1, records.WORKER_DIED, retries=0)
    assert owed([lost, retry]) == [retry]

@pytest.mark.slow
def test_a_worker_paused_past_the_grace_drops_its_taken_trial_and_goes_on(tmp_path, sonar_dir):
    env = {**os.environ, "DROPSWEEP_HEARTBEAT_SECONDS": str(BEAT), "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-m", "dropsweep", "search", SONAR_SWEEP, *SLOW, "--trials", "12"]
    db = tmp_path / "results" / "dropsweep.db"

    def start() -> subprocess.Popen:
        SUITE["worker processes"] += 1
        return subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    paused = start()
    # paused mid-training the baseline: past its first checkpoint (epoch 500), with two
    # thirds of its epochs (~0.2 s) still to go
    _wait(db, lambda rows: any(n == 0 and s == "RUNNING" and role == '"baseline"' and steps
                               for n, s, role, steps in rows), paused)
    paused.send_signal(signal.SIGSTOP)
    SUITE["paused workers"] += 1
    try:
        other = start()
        # the other worker fails the stale baseline, runs it again first, then the rest
        out, err = other.communicate(timeout=300)
        assert other.returncode == 0, err
        assert "12 of 12 trials finished" in out and "Traceback" not in err
    finally:
        paused.send_signal(signal.SIGCONT)
    out, err = paused.communicate(timeout=120)
    assert paused.returncode == 0, err
    assert "Traceback" not in err and "UpdateFinishedTrialError" not in err
    lines = [line for line in err.splitlines() if line.startswith("note: ")]
    assert len(lines) == 1, (out, err, _rows(db))
    assert ("trial #0 of this worker" in lines[0]
            or "a trial this worker was setting up" in lines[0]), lines
    assert f"went {3 * BEAT} s without a heartbeat" in lines[0]
    assert "another worker failed it to run it again: its result here dropped" in lines[0]

    rows = _rows(db)
    states = [s for _, s, _, _ in rows]
    assert "RUNNING" not in states and "WAITING" not in states, rows
    base = [(n, s) for n, s, role, _ in rows if role == '"baseline"']
    assert base[0] == (0, "FAIL") and [s for _, s in base[1:]] == ["COMPLETE"], base
    study = optuna.load_study(study_name="sonar", storage=f"sqlite:///{db}")
    assert sum(counts_toward_target(t) for t in study.get_trials(deepcopy=False)) == 12
    # Whether the pruner was already awake when the baseline ran again depends on how many
    # trials the other worker finished within the grace: the first test of this module
    # holds that case exactly.


def test_a_failing_storage_gives_back_the_trials_it_still_can(dataset, storage, monkeypatch):
    """The storage fails while a batch is recorded (in the real world: a disk filled up, then
    freed a little). The error names it; the batch's trials are marked interrupted, so they
    run again on resume and are never counted."""
    from dropsweep.errors import StorageFailure
    from dropsweep.storage.trialio import SnapshotStorage

    def failing(storage, ends):
        raise StorageFailure("storage sqlite:///x.db failed: disk I/O error")

    monkeypatch.setattr(SnapshotStorage, "finish_trials", failing)
    with pytest.raises(StorageFailure) as err:
        run_search(sweep_of("search.pruner=none"), dataset, storage_url=storage, device="cpu",
                   batch=3, trials=3)
    assert str(err.value) == ("storage sqlite:///x.db failed: disk I/O error; 3 of the 3 "
                              "trials this worker was running are marked interrupted")
    trials = optuna.load_study(study_name="small", storage=storage).get_trials()
    assert [(t.state, t.user_attrs.get(records.INTERRUPTED)) for t in trials] == [
        (TrialState.FAIL, True)] * 3
    assert not any(counts_toward_target(t) for t in trials)
