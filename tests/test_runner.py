"""The study runner: targets, resume, baseline, conditional params, refusal of changed sweeps."""

from __future__ import annotations

import math
import sqlite3

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from dropsweep import records
from dropsweep.sweep.config import build_sweep
from dropsweep.errors import StorageError, StudyMismatchError
from dropsweep.study.liveness import counts_toward_target
from dropsweep.study.runner import (
    AUTO_BATCH,
    SearchEvents,
    StopFlag,
    run_search,
)
from dropsweep.sweep.file import apply_overrides, parse_sweep_text

SMALL = """
name: small
model: {hidden: [8]}
train: {epochs: 4, batch_size: 16, eval_every: 2}
cv: {folds: 3, seed: 1}
search: {trials: 3, sampler: tpe, seed: 0, pruner: none}
space:
  placement: [none, input, hidden, both]
  input_rate: {low: 0.1, high: 0.5}
  hidden_rate: {low: 0.1, high: 0.5}
  learning_rate: {low: 0.001, high: 0.3}
  momentum: {low: 0.5, high: 0.95}
  max_norm: [off, 2, 4]
"""


def sweep_of(text: str = SMALL, *overrides: str):
    return build_sweep(apply_overrides(parse_sweep_text(text, "test.yaml"), list(overrides)))


def load(storage: str, name: str = "small") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage)


def test_trials_is_the_study_total_and_rerun_resumes(dataset, storage):
    first = run_search(sweep_of(), dataset, storage_url=storage, device="cpu")
    assert (first.finished_before, first.ran, first.finished) == (0, 3, 3)
    values = {t.number: t.value for t in load(storage).trials}

    again = run_search(sweep_of(), dataset, storage_url=storage, device="cpu")
    assert (again.finished_before, again.ran, again.finished) == (3, 0, 3)

    more = run_search(sweep_of(), dataset, storage_url=storage, trials=5, device="cpu")
    assert (more.finished_before, more.ran, more.finished) == (3, 2, 5)
    study = load(storage)
    assert len(study.trials) == 5
    # nothing finished was redone: the first three trials are untouched
    assert {n: v for n, v in ((t.number, t.value) for t in study.trials) if n < 3} == values


def test_baseline_is_trial_zero_with_brownlee_defaults(dataset, storage):
    run_search(sweep_of(), dataset, storage_url=storage, device="cpu")
    first = load(storage).trials[0]
    assert first.user_attrs[records.ROLE] == records.ROLE_BASELINE
    assert first.params == {"placement": "none", "learning_rate": 0.01, "momentum": 0.8,
                            "max_norm": None}
    assert [t.user_attrs[records.ROLE] for t in load(storage).trials[1:]] == ["search"] * 2


@pytest.mark.slow
def test_params_are_conditional_on_placement(dataset, storage):
    run_search(sweep_of(SMALL, "search.sampler=random"), dataset, storage_url=storage,
               trials=14, device="cpu")
    seen = set()
    for t in load(storage).trials:
        placement = t.params["placement"]
        seen.add(placement)
        assert ("input_rate" in t.params) == (placement in ("input", "both"))
        assert ("hidden_rate" in t.params) == (placement in ("hidden", "both"))
        config = t.user_attrs[records.CONFIG]
        if placement in ("none", "hidden"):
            assert config["input_rate"] == 0.0
    assert len(seen) >= 3


def test_trial_and_study_records(dataset, storage):
    run_search(sweep_of(), dataset, storage_url=storage, device="cpu")
    study = load(storage)
    assert study.user_attrs[records.STUDY_SWEEP]["train"]["epochs"] == 4
    assert study.user_attrs[records.STUDY_VERSION]
    assert study.user_attrs[records.STUDY_TORCH_VERSION].startswith("2.")
    for t in study.trials:
        a = t.user_attrs
        folds = a[records.FOLD_ACCURACIES]
        assert len(folds) == 3 and all(0.0 <= f <= 1.0 for f in folds)
        assert math.isclose(a[records.ACCURACY_MEAN], float(np.mean(folds)))
        assert math.isclose(t.value, a[records.ACCURACY_MEAN])
        assert math.isclose(a[records.ACCURACY_STD], float(np.std(folds)))
        assert a[records.TEST_LOG_LOSS] > 0
        assert 0.0 <= a[records.TRAIN_ACCURACY] <= 1.0
        assert a[records.EPOCHS] == 4
        assert a[records.WALL_TIME] > 0
        assert a[records.CONFIG]["placement"] == t.params["placement"]
        # held-out accuracy at every checkpoint, fed to the pruner
        assert sorted(t.intermediate_values) == [2, 4]


@pytest.mark.slow
def test_same_sweep_and_seed_give_identical_params_and_fold_scores(dataset, tmp_path):
    runs = []
    for i in range(2):
        url = f"sqlite:///{tmp_path}/run{i}.db"
        run_search(sweep_of(), dataset, storage_url=url, trials=4, device="cpu")
        runs.append([(t.params, t.user_attrs[records.FOLD_ACCURACIES]) for t in load(url).trials])
    assert runs[0] == runs[1]


def test_resume_with_a_changed_experiment_is_refused(dataset, storage):
    run_search(sweep_of(), dataset, storage_url=storage, device="cpu")
    with pytest.raises(StudyMismatchError) as err:
        run_search(sweep_of(SMALL, "train.epochs=5", "cv.folds=4"), dataset,
                   storage_url=storage, device="cpu")
    message = str(err.value)
    assert "train.epochs 4 -> 5" in message and "cv.folds 3 -> 4" in message
    assert "\n" not in message
    # the search section may change: more trials, another sampler
    summary = run_search(sweep_of(SMALL, "search.sampler=random"), dataset,
                         storage_url=storage, trials=4, device="cpu")
    assert summary.finished == 4


@pytest.mark.slow
def test_a_study_not_made_by_dropsweep_is_refused(dataset, storage):
    optuna.create_study(study_name="small", storage=storage)
    with pytest.raises(StorageError, match="not made by dropsweep"):
        run_search(sweep_of(), dataset, storage_url=storage, device="cpu")


def test_a_diverging_trial_fails_with_its_reason_and_the_sweep_goes_on(dataset, storage):
    listed = SMALL.split("space:")[0] + """space:
  - {placement: none, learning_rate: 0.01, momentum: 0.8}
  - {placement: none, learning_rate: 1.0e+30, momentum: 0.9}
  - {placement: hidden, hidden_rate: 0.2, learning_rate: 0.05, momentum: 0.9}
"""
    summary = run_search(sweep_of(listed), dataset, storage_url=storage, device="cpu")
    trials = load(storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs[records.FAIL_REASON].startswith("loss became")
    assert "epoch 1, fold 1" in trials[1].user_attrs[records.FAIL_REASON]
    assert summary.finished == 3  # a genuine failure is a result: it is not run again


def test_a_fixed_list_runs_each_configuration_once_baseline_included(dataset, storage):
    listed = SMALL.split("space:")[0] + """space:
  - {placement: none, learning_rate: 0.01, momentum: 0.8}
  - {placement: input, input_rate: 0.2, learning_rate: 0.1, momentum: 0.9, max_norm: 3}
"""
    summary = run_search(sweep_of(listed), dataset, storage_url=storage, trials=50, device="cpu")
    assert summary.target == 2 and summary.finished == 2
    roles = [t.user_attrs[records.ROLE] for t in load(storage).trials]
    assert roles == ["baseline", "fixed"]
    assert run_search(sweep_of(listed), dataset, storage_url=storage, device="cpu").ran == 0


def test_grid_evaluates_each_conditional_point_once(dataset, storage):
    grid = SMALL.split("search:")[0] + """search: {trials: 100, sampler: grid, seed: 0, pruner: none}
space:
  placement: [none, input]
  input_rate: [0.2, 0.4]
  learning_rate: [0.01, 0.05]
  momentum: 0.8
"""
    summary = run_search(sweep_of(grid), dataset, storage_url=storage, device="cpu")
    # none x 2 lr + input x 2 rates x 2 lr = 6 points; the baseline (none, .01, .8) is one
    assert summary.finished == 6
    points = [tuple(sorted(t.params.items())) for t in load(storage).trials]
    assert len(set(points)) == 6


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["random", "cmaes", "qmc"])
def test_every_sampler_runs_seeded(dataset, tmp_path, sampler):
    params = []
    for i in range(2):
        url = f"sqlite:///{tmp_path}/{sampler}{i}.db"
        summary = run_search(sweep_of(SMALL, f"search.sampler={sampler}"), dataset,
                             storage_url=url, trials=4, device="cpu")
        assert summary.finished == 4
        params.append([t.params for t in load(url).trials])
    assert params[0] == params[1]


@pytest.mark.slow
def test_median_pruner_prunes_hopeless_trials(dataset, storage):
    text = SMALL.replace("pruner: none", "pruner: median").replace("epochs: 4", "epochs: 40")
    run_search(sweep_of(text, "train.eval_every=5"), dataset, storage_url=storage, trials=30,
               device="cpu")
    states = [t.state for t in load(storage).trials]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 30
    assert TrialState.PRUNED in states


def test_stop_flag_interrupts_without_losing_or_counting_trials(dataset, storage):
    stop = StopFlag()

    def on_trial(summary, trial):
        if summary.finished == 2:
            stop.signal = 2  # as SIGINT would, between trials

    events = SearchEvents(on_trial=on_trial)
    summary = run_search(sweep_of(), dataset, storage_url=storage, trials=5, device="cpu",
                         events=events, stop=stop)
    assert summary.stopped_by == 2 and summary.finished == 2

    calls = {"n": 0}

    def should_stop() -> bool:  # a stop in the middle of a trial
        calls["n"] += 1
        return calls["n"] > 2

    class MidTrial(StopFlag):
        def __call__(self) -> bool:
            return should_stop()

    mid = MidTrial()
    mid.signal = None
    interrupted = run_search(sweep_of(), dataset, storage_url=storage, trials=5, device="cpu",
                             stop=mid)
    trials = load(storage).trials
    assert trials[-1].state == TrialState.FAIL and trials[-1].user_attrs[records.INTERRUPTED]
    assert not counts_toward_target(trials[-1])
    assert interrupted.finished == 2
    assert not [t for t in trials if t.state == TrialState.RUNNING]

    done = run_search(sweep_of(), dataset, storage_url=storage, trials=5, device="cpu")
    assert done.finished == 5 and done.ran == 3


def test_nothing_is_written_when_the_storage_path_is_not_a_database(dataset, tmp_path):
    bad = tmp_path / "notadb.db"
    bad.write_text("this is not sqlite\n" * 100)
    with pytest.raises(StorageError) as err:
        run_search(sweep_of(), dataset, storage_url=f"sqlite:///{bad}", device="cpu")
    assert "\n" not in str(err.value)
    assert bad.read_text() == "this is not sqlite\n" * 100
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(bad).execute("select * from sqlite_master").fetchall()


@pytest.mark.slow
def test_a_batch_of_trials_gives_the_same_kind_of_results_as_one_at_a_time(dataset, tmp_path):
    studies = {}
    for batch in (1, AUTO_BATCH):
        url = f"sqlite:///{tmp_path}/b{batch}.db"
        summary = run_search(sweep_of(), dataset, storage_url=url, trials=10, batch=batch,
                             device="cpu")
        assert summary.finished == summary.ran == 10
        studies[batch] = load(url).trials
    for batch, trials in studies.items():
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 10
        assert trials[0].user_attrs[records.ROLE] == records.ROLE_BASELINE
        assert all(len(t.user_attrs[records.FOLD_ACCURACIES]) == 3 for t in trials)
        assert len({tuple(sorted(t.params.items())) for t in trials}) == 10  # no collapse
    # the baseline is the same configuration; its score differs only by its random stream
    assert studies[1][0].params == studies[AUTO_BATCH][0].params
    mean = {b: np.mean([t.value for t in trials]) for b, trials in studies.items()}
    assert abs(mean[1] - mean[AUTO_BATCH]) < 0.15


@pytest.mark.slow
def test_batched_trials_are_deterministic_and_pruned_one_by_one(dataset, tmp_path):
    text = SMALL.replace("pruner: none", "pruner: median").replace("epochs: 4", "epochs: 40")
    runs = []
    for i in range(2):
        url = f"sqlite:///{tmp_path}/p{i}.db"
        run_search(sweep_of(text, "train.eval_every=5"), dataset, storage_url=url, trials=24,
                   batch=8, device="cpu")
        runs.append(load(url).trials)
    assert [(t.params, t.state, t.value) for t in runs[0]] == \
        [(t.params, t.state, t.value) for t in runs[1]]
    states = [t.state for t in runs[0]]
    assert TrialState.PRUNED in states and TrialState.COMPLETE in states
    # a pruned trial stopped early while its batch mates went on
    pruned = [t for t in runs[0] if t.state == TrialState.PRUNED]
    assert all(t.user_attrs[records.EPOCHS] < 40 for t in pruned)
    seeds = {t.user_attrs[records.SEED] for t in runs[0]}
    assert len(seeds) == 3  # one random stream per batch of 8


def test_a_listed_sweep_can_run_in_one_batch(dataset, storage):
    listed = SMALL.split("space:")[0] + """space:
  - {placement: none, learning_rate: 0.01, momentum: 0.8}
  - {placement: input, input_rate: 0.2, learning_rate: 0.1, momentum: 0.9, max_norm: 3}
  - {placement: hidden, hidden_rate: 0.2, learning_rate: 0.1, momentum: 0.9, max_norm: 3}
"""
    summary = run_search(sweep_of(listed), dataset, storage_url=storage, batch=16, device="cpu")
    assert summary.finished == 3
    trials = load(storage).trials
    assert [t.params["placement"] for t in trials] == ["none", "input", "hidden"]
    assert [t.user_attrs[records.ROLE] for t in trials] == ["baseline", "fixed", "fixed"]


def test_an_error_mid_batch_leaves_no_trial_running(dataset, storage, monkeypatch):
    from dropsweep.families.mlp import MLP

    def broken(self, *args, **kwargs):
        raise KeyboardInterrupt  # as a second Ctrl-C would, in the middle of training

    # on the class: an instance attribute would outlive the test (monkeypatch sets the old
    # bound method back on the instance, shadowing later patches of the class)
    monkeypatch.setattr(type(MLP), "train", broken)
    with pytest.raises(KeyboardInterrupt):
        run_search(sweep_of(), dataset, storage_url=storage, trials=3, batch=3, device="cpu")
    trials = load(storage).trials
    assert len(trials) == 3 and all(t.state == TrialState.FAIL for t in trials)
    assert all(t.user_attrs[records.INTERRUPTED] for t in trials)
    monkeypatch.undo()
    done = run_search(sweep_of(), dataset, storage_url=storage, trials=3, device="cpu")
    assert done.finished == 3
    assert load(storage).trials[3].user_attrs[records.ROLE] == records.ROLE_BASELINE


def test_a_resumed_random_search_proposes_new_points(dataset, storage):
    sweep = sweep_of(SMALL, "search.sampler=random")
    run_search(sweep, dataset, storage_url=storage, trials=4, device="cpu")
    run_search(sweep, dataset, storage_url=storage, trials=8, device="cpu")
    rates = [t.params["learning_rate"] for t in load(storage).trials[1:]]
    assert len(set(rates)) == len(rates)  # no point of the first run proposed again


# ----------------------------------------------------------------------------- not training


@pytest.mark.slow
def test_a_search_reads_its_trials_a_bounded_number_of_times_per_trial(
        dataset, storage, monkeypatch):
    """Optuna's cache reads every running trial again at each call; a TPE ask used to read
    the study about nine times, the median pruner once per trial and checkpoint."""
    from dropsweep.storage.rdb import ResilientRDBStorage

    reads = []
    real = ResilientRDBStorage._get_trials
    monkeypatch.setattr(ResilientRDBStorage, "_get_trials",
                        lambda self, *a, **k: (reads.append(1), real(self, *a, **k))[1])
    text = SMALL.replace("pruner: none", "pruner: median").replace("epochs: 4", "epochs: 40")
    run_search(sweep_of(text, "train.eval_every=2"), dataset, storage_url=storage, trials=48,
               batch=8, device="cpu")
    assert len(reads) <= 2 * 48, len(reads)


def test_trials_asked_together_train_in_one_batch_per_optimizer(dataset, storage, monkeypatch):
    """A batch mixing optimizers would run both update rules on every model: the runner
    trains each optimizer's trials as a batch of their own, each with its own seed and
    checkpoint name."""
    from dropsweep.families.mlp import MLP, optimizer_of

    adam = SMALL.replace("search: {trials: 3, sampler: tpe", "search: {trials: 8, sampler: random"
                         ).replace("  learning_rate:", "  optimizer: [sgd, adam]\n  learning_rate:")
    seen: list[list[str]] = []
    train = MLP.train

    def recording(self, configs, *args, **kwargs):
        seen.append([optimizer_of(c) for c in configs])
        return train(configs, *args, **kwargs)

    monkeypatch.setattr(type(MLP), "train", recording)
    summary = run_search(sweep_of(adam), dataset, storage_url=storage, batch=8, device="cpu")
    assert summary.finished == 8
    assert all(len(set(batch)) == 1 for batch in seen)  # never mixed
    trials = load(storage).trials
    kinds = [t.params["optimizer"] for t in trials]
    assert {"sgd", "adam"} <= set(kinds) and len(seen) >= 2
    assert all("momentum" not in t.params for t in trials if t.params["optimizer"] == "adam")
    for kind in ("sgd", "adam"):  # one batch of each here: named by its first trial
        batch = {t.user_attrs[records.BATCH] for t in trials if t.params["optimizer"] == kind}
        first = min(t.number for t in trials if t.params["optimizer"] == kind)
        assert batch == {first}
