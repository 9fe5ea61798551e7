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
from dropsweep.study.stop import StopFlag
from dropsweep.sweep.config import build_sweep
from dropsweep.families.mlp import MLP
from dropsweep.families.mlp import config as mlp_config
from dropsweep.study.liveness import BASELINE_ATTEMPTS, counts_toward_target
from dropsweep.study.ask import next_planned as _next_planned
from dropsweep.study.runner import open_search, run_search
from dropsweep.sweep.space import config_values, fixed_distributions, planned_configs, space_of
from dropsweep.sweep.file import apply_overrides, parse_sweep_text

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


def live(study: optuna.Study) -> list[tuple]:
    """The trials that count, in order: (params, state, fold accuracies, learning curve,
    role)."""
    return [(t.params, t.state, t.user_attrs.get(records.FOLD_ACCURACIES),
             t.intermediate_values, t.user_attrs[records.ROLE])
            for t in optuna.load_study(study_name=study.study_name,
                                       storage=study._storage).get_trials(deepcopy=False)
            if counts_toward_target(t)]


@pytest.mark.slow
@pytest.mark.usefixtures("one_epoch_a_call")
def test_a_lost_batch_without_a_checkpoint_goes_on_from_its_start_exactly(
        dataset, storage, tmp_path):
    """Issue 25, prerequisite A (issue 24 item 10 kept): a batch stopped before it wrote any
    checkpoint goes on, before anything new is asked, as the batch it was — each lost
    trial's configuration once, in its place, with the batch's seed, from epoch 0 — so the
    study ends with exactly the trials of a run never stopped, trial for trial; the baseline
    runs again as the baseline, and each lost trial says why it failed. (It ran again in a
    new batch with a new seed: other numbers.)"""
    SUITE["hostile checkpoints"] += 1
    from dropsweep.answers.rows import trial_row

    lost = stopped(dataset, storage, tmp_path, every=0)
    assert [trial_row(t).fail_reason for t in lost] == ["interrupted"] * 3
    assert not list((tmp_path / "saves").rglob("*.ckpt*"))  # checkpoints off: no file
    run_search(sweep_of(*LOST), dataset, storage_url=storage, device="cpu", batch=3,
               checkpoint_dir=tmp_path / "saves")
    study = optuna.load_study(study_name="small", storage=storage)
    again = study.trials[3:6]  # the first batch of the resume
    assert [t.user_attrs[records.RESUMED] for t in again] == [
        {"trial": t.number, "epoch": 0, "claim": None} for t in lost]
    assert [t.params for t in again] == [t.params for t in lost]
    assert [t.user_attrs[records.ROLE] for t in again] == [t.user_attrs[records.ROLE]
                                                           for t in lost]
    assert {t.user_attrs[records.SEED] for t in again} == {lost[0].user_attrs[records.SEED]}
    assert {t.user_attrs[records.BATCH] for t in again} == {3}
    assert not [t for t in study.trials if "retry_history" in t.system_attrs]
    assert len(baselines(study)) == 2 and baselines(study)[-1].state == TrialState.COMPLETE
    plain = f"sqlite:///{tmp_path}/plain.db"
    run_search(sweep_of(*LOST), dataset, storage_url=plain, device="cpu", batch=3,
               checkpoint_dir=tmp_path / "plain-saves")
    assert live(study) == live(optuna.load_study(study_name="small", storage=plain))
    assert len(live(study)) == 5


@pytest.mark.slow
@pytest.mark.usefixtures("one_epoch_a_call")
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
    assert not [t for t in study.trials if "retry_history" in t.system_attrs]
    went_on = sorted(t.user_attrs[records.RESUMED]["trial"] for t in study.trials
                     if records.RESUMED in t.user_attrs)
    assert went_on == [0, 1, 2]
    configs = [str(t.params) for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(configs) == len(set(configs))
    assert {str(t.params) for t in lost} <= set(configs)


class StopWhen(StopFlag):
    """A stop flag raised (as Ctrl-C raises it) once ``condition()`` holds, looked at
    between slices of training."""

    def __init__(self, condition) -> None:
        super().__init__()
        self.condition = condition

    def __call__(self) -> bool:
        if self.signal is None and self.condition():
            self.signal = signal.SIGINT
        return self.signal is not None


@pytest.mark.slow
@pytest.mark.parametrize("every", [0, 1e-9], ids=["no checkpoint", "checkpointed"])
@pytest.mark.usefixtures("one_epoch_a_call")
def test_an_ask_of_two_batches_stopped_in_the_first_goes_on_in_the_order_it_was_asked(
        dataset, storage, tmp_path, monkeypatch, every):
    """Issue 25: trials asked together train as one batch per optimizer, one after the
    other. Stopped in the first (checkpointed where it stopped, or with checkpoints off),
    the second not begun: both go on, their new trials numbered in the order of the trials
    they go on with (as a run never stopped numbered those: the report's ties, TPE's
    weights by age), and the study ends with exactly the trials of a run never stopped."""
    from dropsweep.families.mlp import MLP as family

    sweep = sweep_of(*LOST, "search.trials=6", "space.optimizer=[sgd, adam]")
    sizes: list[int] = []
    train = type(family).train

    def recording(self, configs, *args, **kwargs):
        sizes.append(len(configs))
        return train(self, configs, *args, **kwargs)

    monkeypatch.setattr(type(family), "train", recording)
    looks = {"n": 0}

    def mid_first_batch() -> bool:
        looks["n"] += 1
        return len(sizes) == 1 and looks["n"] > 12

    run_search(sweep, dataset, storage_url=storage, device="cpu", batch=6,
               stop=StopWhen(mid_first_batch), checkpoint_dir=tmp_path / "saves",
               checkpoint_every=every)
    lost = optuna.load_study(study_name="small", storage=storage).get_trials()
    assert len(sizes) == 1 and 0 < sizes[0] < 6  # the first of two batches, stopped
    run_search(sweep, dataset, storage_url=storage, device="cpu", batch=6,
               checkpoint_dir=tmp_path / "saves", checkpoint_every=every)
    study = optuna.load_study(study_name="small", storage=storage)
    again = study.trials[len(lost):len(lost) + 6]
    assert [t.user_attrs[records.RESUMED]["trial"] for t in again] == [t.number for t in lost]
    plain = f"sqlite:///{tmp_path}/plain.db"
    run_search(sweep, dataset, storage_url=plain, device="cpu", batch=6, checkpoint_every=0,
               checkpoint_dir=tmp_path / "plain-saves")
    assert live(study) == live(optuna.load_study(study_name="small", storage=plain))


@pytest.mark.slow
@pytest.mark.parametrize("every", [0, 1e-9], ids=["no checkpoint", "checkpointed"])
def test_a_batch_stopped_after_a_pruning_goes_on_as_a_whole_to_the_same_trials(
        dataset, storage, tmp_path, every):
    """A batch stopped after the median pruner stopped some of its trials, while the
    baseline (never pruned) trains on: nothing of it is recorded at the stop; it goes on as
    a whole — from the checkpoint the stop wrote, the pruned ones out of it, or from its
    start, pruned again where they were — its new trials numbered in its order, and the
    study ends with exactly the trials of a run never stopped, trial for trial. (Recorded
    at the stop, the pruned trials kept their numbers and the baseline took a later one:
    another order; trained along from the start to the end, they drew other row orders
    and masks for the baseline.)"""
    sweep = sweep_of("train.epochs=40", "train.eval_every=5", "search.pruner=median",
                     "search.trials=15")
    plain = f"sqlite:///{tmp_path}/plain.db"
    prepared(sweep, storage, None, others=12)  # 12 at 99%: the pruner stops the others
    prepared(sweep, plain, None, others=12)

    def late_in_the_batch() -> bool:
        study = optuna.load_study(study_name="small", storage=storage)
        return any(t.number >= 12 and t.intermediate_values and max(t.intermediate_values) >= 35
                   for t in study.get_trials(deepcopy=False))

    run_search(sweep, dataset, storage_url=storage, device="cpu", batch=3,
               stop=StopWhen(late_in_the_batch), checkpoint_dir=tmp_path / "saves",
               checkpoint_every=every)
    study = optuna.load_study(study_name="small", storage=storage)
    stopped = study.trials[12:]
    assert [t.state for t in stopped] == [TrialState.FAIL] * 3
    assert sum(max(t.intermediate_values, default=0) < 35 for t in stopped) >= 1  # pruned
    run_search(sweep, dataset, storage_url=storage, device="cpu", batch=3,
               checkpoint_dir=tmp_path / "saves", checkpoint_every=every)
    run_search(sweep, dataset, storage_url=plain, device="cpu", batch=3,
               checkpoint_dir=tmp_path / "plain-saves", checkpoint_every=0)
    mine = live(study)
    assert mine == live(optuna.load_study(study_name="small", storage=plain))
    assert TrialState.PRUNED in [state for _, state, *_ in mine]


@pytest.mark.usefixtures("one_epoch_a_call")
def test_two_workers_that_go_on_with_one_lost_batch_at_once_keep_only_the_first(
        dataset, storage, tmp_path):
    """Two workers that both see a batch lost with no checkpoint at the same moment both
    make its trials (there is no file whose rename decides it): the one whose first trial
    is numbered lower keeps it; the other's are dropped before they train, carry nothing
    on and count for nothing, and nothing is left to go on with (never twice)."""
    SUITE["hostile checkpoints"] += 1
    import torch

    from dropsweep.study.liveness import carries, replays
    from dropsweep.data.protocols import folds_of
    from dropsweep.study.runner import _Search
    from dropsweep.study.stop import StopFlag
    from dropsweep.study.summary import SearchEvents

    sweep = sweep_of(*LOST)
    lost = stopped(dataset, storage, tmp_path, every=0)
    study, summary = open_search(sweep, storage_url=storage)
    folds = folds_of(dataset, sweep, sweep.cv.seed, torch.device("cpu"))

    def worker() -> _Search:
        return _Search(study, summary, sweep, folds, 3, SearchEvents(), StopFlag())

    seen = study.get_trials()  # both look at the same moment
    first, second = worker(), worker()
    [(asked, resumed)] = first._resume(seen)
    assert [t.number for t, _ in asked] == [3, 4, 5] and resumed.claim is None
    assert second._resume(seen) == []  # made 6, 7, 8 and dropped them: 3 is lower
    trials = study.get_trials()
    assert [t.state for t in trials[6:]] == [TrialState.FAIL] * 3
    assert all(t.user_attrs[records.INTERRUPTED] and not carries(t) for t in trials[6:])
    assert not any(counts_toward_target(t) for t in trials[6:])
    assert [t.user_attrs[records.RESUMED]["trial"] for t in trials[3:6]] == [
        t.number for t in lost]
    assert replays(trials) == []  # the first worker's trials carry the batch on
    first.held.give_back()


def test_lost_trials_of_an_older_dropsweep_run_again_once_each(dataset, storage, tmp_path):
    """A lost trial recorded without its batch's seed (an older dropsweep's) cannot go on as
    its batch: it is queued again alone with its parameters and Optuna's retry history;
    two workers that queue one at the same moment keep the lower trial number."""
    SUITE["hostile checkpoints"] += 1
    from dropsweep.study.ask import ask_next

    sweep = sweep_of(*LOST)
    study, _ = open_search(sweep, storage_url=storage)
    space, planned = space_of(sweep), planned_configs(sweep)
    study.add_trial(create_trial(  # the baseline, done
        state=TrialState.COMPLETE, value=0.5,
        params=config_values(sweep.baseline, MLP.dimensions, space),
        distributions=fixed_distributions(sweep.baseline, MLP.dimensions, space),
        user_attrs={records.CONFIG: sweep.baseline.to_dict(),
                    records.ROLE: records.ROLE_BASELINE}))
    older = []
    for rate in (0.02, 0.03):
        config = mlp_config("input", 0.2, learning_rate=rate)
        study.add_trial(create_trial(
            state=TrialState.FAIL, params=config_values(config, MLP.dimensions, space),
            distributions=fixed_distributions(config, MLP.dimensions, space),
            user_attrs={records.CONFIG: config.to_dict(), records.ROLE: records.ROLE_SEARCH,
                        records.BATCH: 1, records.INTERRUPTED: True}))
        older.append(study.trials[-1])
    first, second = older
    for _ in range(2):  # both workers queue the first lost trial again
        study.add_trial(create_trial(
            state=TrialState.WAITING, params=first.params, distributions=first.distributions,
            user_attrs={records.CONFIG: first.user_attrs[records.CONFIG]},
            system_attrs={"failed_trial": first.number, "retry_history": [first.number]}))
    asked = [ask_next(study, sweep, space, planned)[0].number for _ in range(2)]
    trials = study.get_trials()
    assert asked[0] == 3 and trials[4].state == TrialState.FAIL  # the second: dropped
    assert trials[4].user_attrs[records.INTERRUPTED] is True
    # and then the second lost trial, queued by this worker itself, before anything new
    assert trials[asked[1]].system_attrs["retry_history"] == [second.number]
    assert [t.number for t in trials if t.system_attrs.get("retry_history") == [first.number]
            and t.state == TrialState.RUNNING] == [3]


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
    from dropsweep.study.liveness import owed

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
