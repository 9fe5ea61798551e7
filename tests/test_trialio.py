"""Reads held and writes batched: what a search sees and stores is what Optuna's own calls give."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
import warnings

import optuna
import pytest
from optuna.trial import TrialState

from dropsweep.study import liveness
from dropsweep.storage import trialio
from dropsweep.storage.open import open_storage
from dropsweep.storage.rdb import ResilientRDBStorage
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


def test_a_hold_sees_what_it_read_and_a_max_age_reads_again(study, reads, monkeypatch):
    # the hold's clock, stepped by hand: a loaded machine's real delays cannot age a read
    now = [1000.0]
    monkeypatch.setattr(trialio, "time", SimpleNamespace(monotonic=lambda: now[0]))
    first = ask(study)
    with trialio.holding(study, max_age=0.05):
        assert study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) == []
        study.tell(first, 0.5)  # another moment's write: not seen by the hold...
        assert study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) == []
        now[0] += 0.1  # ...until its read is older than max_age
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


@pytest.mark.slow
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

    def same(a, b):  # nan != nan; a database may return a table's rows in any order
        def plain(rows):
            return str([(n, state, sorted(attrs.items()), sorted(steps.items()))
                        for n, state, attrs, steps in rows])
        return plain(a) == plain(b)

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


def fields(trial: optuna.trial.FrozenTrial) -> tuple:
    """All a sampler or the runner reads of a trial (datetimes to the second: stamped twice)."""
    return (trial.number, trial.state, trial.values, trial.params, trial.distributions,
            trial.user_attrs, trial.system_attrs, trial.intermediate_values,
            trial.datetime_start.replace(microsecond=0) if trial.datetime_start else None)


def test_own_trials_in_a_hold_read_as_the_storage_then_holds_them(url, study, reads):
    """One read serves a whole batch of asks: the hold keeps the trials this worker creates
    in it current with its own writes (parameters, attributes, an enqueued trial's start), so
    each ask sees exactly what a fresh read would show, and the parameters of each trial
    are written in one transaction when the hold ends."""
    ask(study)
    from dropsweep.storage.rdb import ResilientRDBStorage
    writes: list[int] = []
    real = ResilientRDBStorage.write_trials
    writes_of = lambda self, pending, known: (  # noqa: E731
        writes.append([len(w.params) + len(w.user_attrs) + len(w.system_attrs) + len(w.beats)
                       for w in pending]), real(self, pending, known))
    mp = pytest.MonkeyPatch()
    mp.setattr(ResilientRDBStorage, "write_trials", writes_of)
    try:
        reads.clear()
        with trialio.holding(study):
            for i in range(2):
                trial = ask(study)
                liveness.beat(study, [trial])
                trial.suggest_categorical("kind", ["a", "b"])
                trial.suggest_int("n", 1, 9)
                trial.set_user_attr("role", "search")
                trialio.set_user_attrs(trial, {"config": {"i": i}})
                study._storage.set_trial_system_attr(trial._trial_id, "tpe:seen", [i])
            study.enqueue_trial({"x": 0.25, "kind": "b", "n": 3}, user_attrs={"planned": 1})
            queued = ask(study)
            assert queued.params == {"x": 0.25}
            queued.suggest_categorical("kind", ["a", "b"])
            queued.suggest_int("n", 1, 9)
            liveness.abandon(study, trial)  # surplus: what was set on it is written first
            assert study._storage.get_trial(trial._trial_id).state == TrialState.FAIL
            held = [fields(t) for t in study.get_trials(deepcopy=False)]
            assert writes == [[8]]  # the rest wait for the hold's end...
            other = optuna.load_study(study_name=study.study_name, storage=url)
            assert other.get_trials()[3].params == {}  # ...as another worker sees
        assert len(reads) == 1
        assert writes == [[8], [7, 3]]  # the abandoned trial's, then one write for the rest
    finally:
        mp.undo()
    fresh = optuna.load_study(study_name=study.study_name, storage=url).get_trials()
    assert held == [fields(t) for t in fresh]
    backend = study._storage._backend  # the beats: Optuna's own stale check sees them
    assert backend._get_stale_trial_ids(study._study_id) == []
    ids = [t._trial_id for t in fresh]
    with backend.engine.connect() as conn:
        beating = {row[0] for row in conn.exec_driver_sql("select trial_id from trial_heartbeats")}
    assert [i in beating for i in ids] == [False, True, True, False]  # the two that beat
    assert fresh[3].params == {"x": 0.25, "kind": "b", "n": 3}


def asked(study: optuna.Study) -> optuna.Trial:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the heartbeat is meant for optimize()
        return study.ask()


def test_parameters_written_at_a_holds_end_are_refused_as_optunas_writes_are(study):
    ask(study)  # x: a float in [0, 1] in the storage
    backend = study._storage._backend
    with pytest.raises(ValueError, match="Cannot set different distribution kind"):
        with trialio.holding(study):  # a distribution this cache knows: refused at once
            asked(study).suggest_categorical("x", ["a", "b"])
    other = optuna.create_study(storage=SnapshotStorage(backend), load_if_exists=True,
                                study_name=study.study_name, direction="maximize")
    with pytest.raises(ValueError, match="Cannot set different distribution kind"):
        with trialio.holding(other):  # one it never saw: refused when written
            asked(other).suggest_categorical("x", ["a", "b"])
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        with trialio.holding(study):
            mine = asked(study)
            mine.suggest_float("x", 0, 1)
            backend.set_trial_state_values(mine._trial_id, TrialState.FAIL)  # failed as stale
    assert [list(t.params) for t in study.get_trials()] == [["x"], [], [], []]  # none stored


def test_released_reads_see_the_storage_now(url, study, reads):
    ask(study)
    other = optuna.load_study(study_name=study.study_name, storage=url)
    with trialio.holding(study):
        assert len(study.get_trials(deepcopy=False)) == 1
        ask(other)  # another worker's ask
        assert len(study.get_trials(deepcopy=False)) == 1
        with trialio.released(study):
            assert len(study.get_trials(deepcopy=False)) == 2
        assert len(study.get_trials(deepcopy=False)) == 2  # listed again from the cache


@pytest.mark.slow
def test_a_batch_recorded_in_one_write_stores_what_telling_each_stores(url, study):
    """``record_batch``'s one write (``finish_trials``) against Optuna's own calls, trial by
    trial (a storage that does not batch): a complete trial with its final report, one whose
    last step was already reported, a pruned one (its value: its last report), a diverged
    and an interrupted one; and the trials it hands back are those a fresh read returns."""
    from dropsweep.storage.results import record_batch
    from dropsweep.train.loop import TrialResult

    def results() -> list[TrialResult]:
        curve = [(2, 0.5), (4, 0.75)]
        return [TrialResult([0.5, 1.0], 0.3, 0.9, epochs=4, wall_time=2.0, curve=curve),
                TrialResult([0.25, 0.5], 0.4, 0.8, epochs=2, wall_time=2.0, curve=curve[:1]),
                TrialResult([0.5], epochs=2, wall_time=2.0, pruned=True, curve=curve[:1]),
                TrialResult(epochs=1, wall_time=2.0, failure="loss became NaN at epoch 1"),
                TrialResult(epochs=1, wall_time=2.0, interrupted=True)]

    stores = []
    for s in (study, new_study(url, snapshots=False)):
        trials = [ask(s) for _ in range(5)]
        assert trialio.report_all(trials, {1: 0.1, 2: 0.6}, 2) == set()
        returned = [frozen for _, frozen in record_batch(s, trials, results())]
        fresh = optuna.load_study(study_name=s.study_name, storage=url).get_trials()
        assert [fields(t)[:8] for t in returned] == [fields(t)[:8] for t in fresh]
        assert all(t.datetime_complete is not None for t in returned)
        stores.append([(t.state, t.values, t.user_attrs, t.intermediate_values) for t in fresh])
    assert stores[0] == stores[1]
    assert [(state, values) for state, values, _, _ in stores[0]] == [
        (TrialState.COMPLETE, [0.75]), (TrialState.COMPLETE, [0.375]),
        (TrialState.PRUNED, [0.6]), (TrialState.FAIL, None), (TrialState.FAIL, None)]
    assert stores[0][0][3] == {4: 0.75} and stores[0][1][3] == {2: 0.1}
    assert stores[0][0][2]["wall_time"] == 0.4  # its share of the batch's time


def test_a_trial_finished_meanwhile_is_lost_not_overwritten(study):
    from dropsweep.storage.results import record_batch
    from dropsweep.train.loop import TrialResult

    trials = [ask(study) for _ in range(2)]
    study._storage._backend.set_trial_state_values(trials[1]._trial_id, TrialState.FAIL)
    lost: set[int] = set()
    recorded = list(record_batch(study, trials, [TrialResult([1.0], epochs=1)] * 2, lost))
    assert lost == {1} and recorded[1] == (1, None) and recorded[0][1].value == 1.0
    stored_ = optuna.load_study(study_name=study.study_name, storage=study._storage._backend)
    assert [(t.state, t.user_attrs) for t in stored_.get_trials()][1] == (TrialState.FAIL, {})


def test_an_ordinal_from_the_light_read_is_the_whole_reads(url, study, monkeypatch):
    """A trial's ordinal (its place: its sampler's and batch's seeds, issue 25) counts the
    trials before it that had a turn, as stored now. One light read of states serves while
    the copies at hand are current (running and waiting trials count whatever they hold; a
    finished one never changes); a trial another worker finished since they were read makes
    it read the trials whole. Either way the count is the whole read's."""
    from optuna.trial import create_trial

    from dropsweep import records
    from dropsweep.study.open import ordinal, trial_ordinal

    whole_reads = []
    real = trialio.released

    def counted(s):
        whole_reads.append(1)
        return real(s)

    monkeypatch.setattr(trialio, "released", counted)
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.5))
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={  # dropped: a surplus
        records.INTERRUPTED: True, records.FAIL_REASON: records.SURPLUS}))
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={  # lost: no turn
        records.INTERRUPTED: True, records.ROLE: records.ROLE_SEARCH, records.BATCH: "b"}))
    study.enqueue_trial({"x": 0.5})
    other = optuna.load_study(study_name=study.study_name, storage=SnapshotStorage(
        study._storage._backend))

    def truth(number: int) -> int:
        fresh = optuna.load_study(study_name=study.study_name, storage=url)
        return ordinal(fresh.get_trials(deepcopy=False), number)

    with trialio.holding(study):
        first = asked(study)  # takes the waiting trial
        theirs = asked(other)  # another worker's, running
        mine = asked(study)
        frozen = study._storage.get_trial(mine._trial_id)
        assert trial_ordinal(study, frozen) == truth(mine.number) == 4
        assert whole_reads == []
        other.tell(theirs, 0.1)  # finished by the other worker: our copy is out of date
        assert trial_ordinal(study, frozen) == truth(mine.number) == 4
        assert whole_reads == [1]
        assert trial_ordinal(study, study._storage.get_trial(first._trial_id)) == truth(
            first.number) == 2
