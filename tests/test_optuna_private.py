"""Every use of Optuna's private API (dropsweep/storage/optuna_private.py), one test each:
the name it relies on exists and behaves as relied on, so that an Optuna release that renames
one fails here, naming it. And the Optuna installed is one the module was checked against."""

from __future__ import annotations

import copy
import inspect
import re
import time
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.search_space.group_decomposed import _GroupDecomposedSearchSpace
from optuna.storages import InMemoryStorage, RDBStorage
from optuna.trial import TrialState

from dropsweep.storage.rdb import ResilientRDBStorage
from dropsweep.storage import optuna_private as private

optuna.logging.set_verbosity(optuna.logging.WARNING)
REPO = Path(__file__).resolve().parents[1]


def quiet_study(**kwargs) -> optuna.Study:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.create_study(**kwargs)


# ----------------------------------------------------------------------------- the version


def test_the_installed_optuna_is_one_the_private_api_was_checked_against():
    problem = private.unchecked_version()
    assert problem is None, problem


def test_another_version_is_named_with_what_to_do():
    assert private.unchecked_version(private.CHECKED[0]) is None
    message = private.unchecked_version("5.99.0")
    assert message == (
        f"dropsweep's use of Optuna's private API was checked against "
        f"{', '.join(private.CHECKED)}; this is 5.99.0: run tests/test_optuna_private.py and "
        "update CHECKED in dropsweep/storage/optuna_private.py")


def test_no_other_module_touches_optunas_private_api():
    """The module's reason to exist: the rest of dropsweep calls it (no ``noqa: SLF001``, no
    import from ``optuna.*._*``, none of the private names the module wraps)."""
    pattern = re.compile(
        r"SLF001|optuna(\.\w+)*\._|from optuna\S* import .*\b_[A-Za-z]|_CachedStorage|"
        r"_GroupDecomposedSearchSpace|_cached_frozen_trial|\._trial_id\b|\._study_id\b|"
        r"\._storage\b|\._get_trials\b|_get_stale_trial_ids|\"_backend\"")
    found = []
    for path in sorted((REPO / "dropsweep").rglob("*.py")):
        if path.name == "optuna_private.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


# ----------------------------------------------------------------------------- study and trial


@pytest.fixture
def rdb_study(storage: str) -> optuna.Study:
    return quiet_study(storage=storage, study_name="private", direction="maximize")


def test_study_storage_and_id_are_the_studys_own(rdb_study: optuna.Study):
    storage = private.study_storage(rdb_study)  # Study._storage
    assert isinstance(storage, optuna.storages.BaseStorage)
    assert private.study_id(rdb_study) == storage.get_study_id_from_name("private")  # _study_id
    again = optuna.load_study(study_name="private", storage=storage)
    assert private.study_storage(again) is storage
    memory = quiet_study()
    assert isinstance(private.study_storage(memory), InMemoryStorage)
    assert private.study_id(memory) == private.study_storage(memory).get_all_studies()[0]._study_id


def test_trial_id_names_the_trial_in_its_storage(rdb_study: optuna.Study):
    trials = [rdb_study.ask() for _ in range(3)]
    storage = private.study_storage(rdb_study)
    for trial in trials:  # Trial._trial_id
        assert storage.get_trial(private.trial_id(trial)).number == trial.number
    frozen = rdb_study.get_trials(deepcopy=False)  # FrozenTrial._trial_id
    assert [private.trial_id(t) for t in frozen] == [private.trial_id(t) for t in trials]


def test_trial_record_is_the_copy_that_optunas_own_calls_read_and_keep(rdb_study: optuna.Study):
    trial = rdb_study.ask()
    record = private.trial_record(trial)  # Trial._cached_frozen_trial
    assert isinstance(record, optuna.trial.FrozenTrial)
    assert private.trial_record(trial) is record  # the object itself, not a copy
    trial.report(0.5, 1)
    trial.set_user_attr("a", 1)
    assert record.intermediate_values == {1: 0.5} and record.user_attrs["a"] == 1
    # what dropsweep writes into it is what Optuna's public reads then see...
    record.user_attrs["b"] = 2
    assert trial.user_attrs["b"] == 2
    # ...and a step in it is one report keeps (its first value): it is not written again
    record.intermediate_values[3] = 0.7
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trial.report(0.1, 3)
    stored = private.study_storage(rdb_study).get_trial(private.trial_id(trial))
    assert 3 not in stored.intermediate_values


# ----------------------------------------------------------------------------- the RDB tables


COLUMNS = {
    "TrialModel": {"trial_id", "number", "study_id", "state", "datetime_start",
                   "datetime_complete"},
    "TrialValueModel": {"trial_id", "objective", "value", "value_type"},
    "TrialParamModel": {"param_id", "trial_id", "param_name", "param_value",
                        "distribution_json"},
    "TrialUserAttributeModel": {"trial_id", "key", "value_json"},
    "TrialSystemAttributeModel": {"trial_id", "key", "value_json"},
    "TrialIntermediateValueModel": {"trial_id", "step", "intermediate_value",
                                    "intermediate_value_type"},
    "TrialHeartbeatModel": {"trial_id", "heartbeat"},
}


@pytest.mark.parametrize("model", sorted(COLUMNS))
def test_rdb_models_have_the_tables_and_columns_written_and_read(model: str):
    models = private.rdb_models()  # optuna.storages._rdb.models
    assert hasattr(models, model), f"optuna.storages._rdb.models.{model} is gone"
    columns = set(getattr(models, model).__table__.c.keys())
    assert COLUMNS[model] <= columns, f"{model} lacks {sorted(COLUMNS[model] - columns)}"


def test_rdb_models_convert_values_as_the_writes_and_the_reader_rely_on():
    models = private.rdb_models()
    assert isinstance(models.NOT_FOUND_MSG, str)
    values, steps = models.TrialValueModel, models.TrialIntermediateValueModel
    for value in (0.25, float("inf"), float("-inf")):
        stored, kind = values.value_to_stored_repr(value)
        assert isinstance(kind, values.TrialValueType)
        assert values.stored_repr_to_value(stored, kind) == value
        stored, kind = steps.intermediate_value_to_stored_repr(value)
        assert isinstance(kind, steps.TrialIntermediateValueType)
        assert steps.stored_repr_to_intermediate_value(stored, kind) == value
    stored, kind = steps.intermediate_value_to_stored_repr(float("nan"))
    assert steps.stored_repr_to_intermediate_value(stored, kind) != 0  # nan
    # the reader passes a finite value through as stored, by its kind's name
    assert steps.intermediate_value_to_stored_repr(0.5) == (0.5, steps.TrialIntermediateValueType
                                                            .FINITE)


def test_rdb_cache_calls_are_every_private_method_the_cache_calls_and_are_wrapped():
    calls = private.rdb_cache_calls()
    for name in private.RDB_CACHE_CALLS:
        assert callable(getattr(RDBStorage, name, None)), f"RDBStorage.{name} is gone"
        assert calls[name] is getattr(RDBStorage, name)
        assert getattr(ResilientRDBStorage, name).__wrapped__ is calls[name], name
    source = inspect.getsource(optuna.storages._CachedStorage)
    called = set(re.findall(r"self\._backend\.(_\w+)\(", source))
    assert called == set(private.RDB_CACHE_CALLS), (
        f"Optuna's cache now calls the private {sorted(called)} of its RDB storage: "
        "update RDB_CACHE_CALLS")


# ----------------------------------------------------------------------------- the cache


def test_cached_storage_backend_is_the_rdb_storage_behind_optunas_cache(rdb_study: optuna.Study):
    storage = private.study_storage(rdb_study)
    assert isinstance(storage, optuna.storages._CachedStorage)
    assert isinstance(private.cached_storage_backend(storage), RDBStorage)
    memory = InMemoryStorage()
    assert private.cached_storage_backend(memory) is memory


def test_cached_storage_base_names_the_caches_internals(storage: str):
    backend = RDBStorage(storage)
    cache = private.CachedStorageBase(backend)
    assert cache.backend is backend  # _backend
    study = optuna.create_study(storage=cache, study_name="cached")
    sid = private.study_id(study)
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    tid = private.trial_id(trial)
    # _trial_id_to_study_id_and_number, _studies[...].trials: the cache's own objects
    assert cache.study_of(tid) == sid
    own = cache.cached_trial(tid)
    assert own.number == trial.number and own.state == TrialState.RUNNING
    assert cache.cached_trial(tid) is own
    assert [t.number for t in cache.cached_trials(sid)] == [0]
    # _studies[...].param_distribution: known, learnt, the first one kept
    assert cache.known_distributions(sid) == {"x": FloatDistribution(0, 1)}
    cache.learn_distribution(sid, "y", FloatDistribution(0, 2))
    cache.learn_distribution(sid, "y", FloatDistribution(0, 3))
    assert cache.known_distributions(sid)["y"] == FloatDistribution(0, 2)
    # _read_trials_from_remote_storage: another writer's trial, seen after a read
    other = RDBStorage(storage)
    other.create_new_trial(sid)
    assert len(cache.cached_trials(sid)) == 1
    cache.read_trials(sid)
    assert [t.number for t in cache.cached_trials(sid)] == [0, 1]
    # __getstate__ drops the lock (trialio.SnapshotStorage drops its own state beside it)
    state = cache.__getstate__()
    assert "_lock" not in state
    again = private.CachedStorageBase.__new__(private.CachedStorageBase)
    again.__setstate__(copy.copy(state))
    assert again.study_of(tid) == sid  # the lock is back: the accessors take it


# ----------------------------------------------------------------------------- heartbeats


def test_heartbeat_enabled_and_stale_trials_are_optunas(storage: str):
    assert private.heartbeat_enabled(InMemoryStorage()) is False
    assert private.heartbeat_enabled(RDBStorage(storage)) is False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        beating = RDBStorage(storage, heartbeat_interval=1, grace_period=1)
    assert private.heartbeat_enabled(beating) is True
    study = optuna.create_study(storage=beating, study_name="beats")
    sid = private.study_id(study)
    old, new = beating.create_new_trial(sid), beating.create_new_trial(sid)
    beating.record_heartbeat(old)
    time.sleep(2.2)
    beating.record_heartbeat(new)
    assert private.stale_trial_ids(beating, sid) == [old]


# ----------------------------------------------------------------------------- samplers


def test_group_once_per_trial_replaces_tpes_groups_which_keep_their_names():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        tpe = optuna.samplers.TPESampler(seed=0, multivariate=True, group=True)
    groups = getattr(tpe, "_group_decomposed_search_space", None)
    assert isinstance(groups, _GroupDecomposedSearchSpace), \
        "TPESampler._group_decomposed_search_space is gone"
    assert hasattr(groups, "_include_pruned") and hasattr(groups, "_study_id")
    assert hasattr(groups, "_search_space") and hasattr(groups._search_space, "add_distributions")
    private.group_once_per_trial(tpe)
    ours = tpe._group_decomposed_search_space
    assert isinstance(ours, private.GroupsSoFar)
    assert ours._include_pruned == groups._include_pruned
    random = optuna.samplers.RandomSampler(seed=0)
    private.group_once_per_trial(random)  # nothing to replace: left alone
    assert not hasattr(random, "_group_decomposed_search_space")
    # the same groups as Optuna's own, on a study it reads through Study._get_trials
    study = quiet_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for i in range(8):
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        if i % 2:
            trial.suggest_float(f"y{i % 3}", 0, 1)
        study.tell(trial, 0.5)
    fresh = _GroupDecomposedSearchSpace(False).calculate(study)
    assert ({frozenset(g) for g in ours.calculate(study).search_spaces}
            == {frozenset(g) for g in fresh.search_spaces})


def _proposals(sampler: optuna.samplers.BaseSampler, n: int = 4) -> list[float]:
    study = quiet_study(sampler=sampler)
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(trial.suggest_float("x", 0, 1))
        study.tell(trial, out[-1])
    return out


@pytest.mark.parametrize("kind", ["random", "tpe", "partial-fixed"])
def test_reseed_sampler_makes_a_sampler_propose_as_one_made_with_the_seed(kind: str):
    def make(seed: int) -> optuna.samplers.BaseSampler:
        if kind == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        tpe = optuna.samplers.TPESampler(seed=seed, n_startup_trials=2)
        if kind == "tpe":
            return tpe
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.PartialFixedSampler({}, tpe)

    reseeded = make(99)
    private.reseed_sampler(reseeded, 7)  # _rng.rng, _random_sampler, _base_sampler
    assert _proposals(reseeded) == _proposals(make(7))
    assert _proposals(make(99)) != _proposals(make(7))


def test_reseed_sampler_refuses_a_sampler_it_does_not_know():
    with pytest.raises(TypeError, match="GridSampler cannot be reseeded"):
        private.reseed_sampler(optuna.samplers.GridSampler({"x": [0.0]}), 1)


# ----------------------------------------------------------------------------- a study's view


class EvenView(private.StudyView):
    def keeps(self, trial) -> bool:
        return trial.number % 2 == 0

    def best_of(self, complete):
        return min(complete, key=lambda t: t.number, default=None)


def test_study_view_overrides_what_samplers_and_pruners_read(rdb_study: optuna.Study):
    for name, parameters in (("_get_trials", ["self", "deepcopy", "states", "use_cache"]),
                             ("_get_best_trial", ["self", "deepcopy"])):
        method = getattr(optuna.Study, name, None)
        assert method is not None, f"optuna.Study.{name} is gone"
        assert list(inspect.signature(method).parameters) == parameters, name
    for i in range(5):
        rdb_study.add_trial(optuna.trial.create_trial(value=float(i), params={},
                                                      distributions={}))
    view = EvenView(rdb_study)
    assert private.study_storage(view) is private.study_storage(rdb_study)
    assert private.study_id(view) == private.study_id(rdb_study)
    assert [t.number for t in view.trials] == [0, 2, 4]
    assert [t.number for t in view.get_trials(deepcopy=False)] == [0, 2, 4]
    assert [t.number for t in view._get_trials(False, None, use_cache=True)] == [0, 2, 4]
    assert view.best_trial.number == 0  # Study.best_trial asks _get_best_trial
    assert rdb_study.best_trial.number == 4  # the study itself unchanged
    empty = EvenView(quiet_study())
    with pytest.raises(ValueError, match="No trials are completed yet"):
        empty.best_trial


def test_param_importances_are_optunas_own_without_importing_scikit_learn(tmp_path):
    """The same PED-ANOVA figures as ``optuna.importance.get_param_importances``, computed in a
    fresh process that never imports scikit-learn for them; scikit-learn still imports there
    afterwards (the digits set needs it)."""
    import json
    import subprocess
    import sys

    code = r'''
import json, sys, warnings
import optuna
warnings.simplefilter("ignore")
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
study.optimize(lambda t: t.suggest_float("x", 0, 1) + 0.1 * t.suggest_float("y", 0, 1)
               + t.suggest_categorical("z", ["a", "b"]).count("a"), n_trials=40)
from dropsweep.storage import optuna_private
mine = optuna_private.param_importances(study)
before = "sklearn" in sys.modules
import optuna.importance
theirs = optuna.importance.get_param_importances(study, normalize=False)
import sklearn.ensemble  # a real import still works
print(json.dumps({"mine": mine, "theirs": theirs, "sklearn_before": before,
                  "ensemble": sklearn.ensemble.RandomForestRegressor.__name__}))
'''
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["mine"] == out["theirs"] and set(out["mine"]) == {"x", "y", "z"}
    assert out["sklearn_before"] is False
    assert out["ensemble"] == "RandomForestRegressor"
