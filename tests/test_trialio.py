"""Reads held and writes batched: what a search sees and stores is what Optuna's own calls give."""

from __future__ import annotations

import time
import uuid
import warnings

import optuna
import pytest
from optuna.trial import TrialState

from dropsweep.storage import ResilientRDBStorage, open_storage, trialio
from dropsweep.storage.trialio import SnapshotStorage

from test_postgres import SKIP as NO_POSTGRES, URL as POSTGRES


MADE: list[str] = []  # studies made on the shared PostgreSQL server, deleted after each test
OPENED: list = []  # storages opened by a test, their connections closed after it


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, storage: str):
    """A storage of each kind."""
    if request.param == "sqlite":
        yield storage
        return
    if NO_POSTGRES:
        pytest.skip(NO_POSTGRES)
    yield POSTGRES
    while MADE:
        optuna.delete_study(study_name=MADE.pop(), storage=POSTGRES)
    while OPENED:
        OPENED.pop().engine.dispose()


def new_study(url: str, snapshots: bool = True) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url, heartbeat=10)
    name = f"dropsweep-test-trialio-{uuid.uuid4().hex[:12]}"
    if url == POSTGRES:
        MADE.append(name)
        OPENED.append(storage)
    storage_ = SnapshotStorage(storage) if snapshots else storage
    return optuna.create_study(storage=storage_, study_name=name, direction="maximize")


@pytest.fixture
def study(url: str) -> optuna.Study:
    return new_study(url)


def ask(study: optuna.Study) -> optuna.Trial:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the heartbeat is meant for optimize()
        trial = study.ask()
    trial.suggest_float("x", 0, 1)
    return trial


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every read of trials from the storage behind the cache."""
    calls: list[int] = []
    real = ResilientRDBStorage._get_trials

    def counted(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ResilientRDBStorage, "_get_trials", counted)
    return calls


def test_reads_in_a_hold_share_one_read_and_see_trials_created_in_it(study, reads):
    ask(study)
    reads.clear()
    with trialio.holding(study):
        assert len(study.get_trials(deepcopy=False)) == 1
        study.enqueue_trial({"x": 0.5})  # created in the hold: seen without another read
        states = [t.state for t in study.get_trials(deepcopy=False)]
        assert states == [TrialState.RUNNING, TrialState.WAITING]
        assert len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,))) == 1
    assert len(reads) == 1
    study.get_trials(deepcopy=False)
    study.get_trials(deepcopy=False)
    assert len(reads) == 3  # outside a hold every call reads, as Optuna's cache does


def test_a_hold_sees_what_it_read_and_a_max_age_reads_again(study, reads):
    first = ask(study)
    with trialio.holding(study, max_age=0.05):
        assert study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) == []
        study.tell(first, 0.5)  # another moment's write: not seen by the hold...
        assert study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) == []
        time.sleep(0.1)  # ...until its read is older than max_age
        assert len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) == 1
    assert len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) == 1


def test_holds_are_per_thread_and_nest(study, reads):
    import threading

    ask(study)
    reads.clear()
    with trialio.holding(study), trialio.holding(study):
        study.get_trials(deepcopy=False)
        other = threading.Thread(target=lambda: study.get_trials(deepcopy=False))
        other.start()
        other.join()
        study.get_trials(deepcopy=False)
    assert len(reads) == 2  # one for the (nested) hold, one for the other thread


def stored(study: optuna.Study, url: str) -> list[tuple]:
    fresh = optuna.load_study(study_name=study.study_name, storage=url)
    return [(t.number, t.state, t.user_attrs, t.intermediate_values, t.value)
            for t in fresh.get_trials()]


def test_batched_writes_store_what_optunas_own_calls_store(url, study):
    other = new_study(url, snapshots=False)
    for s in (study, other):
        trials = [ask(s) for _ in range(3)]
        attrs = {"a": [1.5, 2.0], "b": "text", "c": None}
        for step, values in ((2, {0: 0.5, 2: float("nan")}), (4, {0: 0.7, 1: float("inf")})):
            if s is study:
                assert trialio.report_all(trials, values, step) == set()
            else:
                for i, v in values.items():
                    trials[i].report(v, step)
        for trial in trials:
            if s is study:
                trialio.set_user_attrs(trial, attrs)
                trialio.set_user_attrs(trial, {"b": "again"})  # an update, as set_user_attr
            else:
                for k, v in {**attrs, "b": "again"}.items():
                    trial.set_user_attr(k, v)
        # the trials' own copies too: what should_prune and tell read
        assert [t._cached_frozen_trial.intermediate_values for t in trials][0] == {2: 0.5, 4: 0.7}
        assert trials[1]._cached_frozen_trial.user_attrs == {**attrs, "b": "again"}
        s.tell(trials[0], 0.9)
        s.tell(trials[1], state=TrialState.PRUNED)
        s.tell(trials[2], state=TrialState.FAIL)

    def same(a, b):
        return str(a) == str(b)  # nan != nan

    assert same([t[:4] for t in stored(study, url)], [t[:4] for t in stored(other, url)])


def test_a_finished_trial_takes_no_batched_write(study):
    running, done = ask(study), ask(study)
    study.tell(done, state=TrialState.FAIL)  # as another worker fails a stale trial
    assert trialio.report_all([running, done], {0: 0.5, 1: 0.6}, 3) == {1}
    assert running._cached_frozen_trial.intermediate_values == {3: 0.5}
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        trialio.set_user_attrs(done, {"k": 1})
    trials = study.get_trials(deepcopy=False)
    assert trials[0].intermediate_values == {3: 0.5} and trials[1].intermediate_values == {}
    assert trials[1].user_attrs == {}
