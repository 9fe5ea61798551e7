"""Every use of Optuna's private API, in one place (issue 26).

dropsweep reaches past Optuna's public API where the public one has no call for what it
needs, or where it measured a gain. Every such reach is here, as a small named function or
class whose docstring says why the public API does not serve and what was gained (the
figure and where it was measured, or "not measured"); the rest of dropsweep calls these and
touches no private name of Optuna's (no ``optuna.<x>._<y>`` import, no ``obj._attr`` of an
Optuna object). An Optuna release that renames one of them then fails in
``tests/test_optuna_private.py``, which tests each use by name, not somewhere unpredictable.

:data:`CHECKED` names the Optuna releases this module was checked against. On another one it
still works wherever the names it relies on exist (nothing here refuses a version); the test
file fails until someone runs it there and adds the release (:func:`unchecked_version`).
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Container

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.search_space.group_decomposed import _GroupDecomposedSearchSpace, _SearchSpaceGroup
from optuna.storages import BaseStorage, RDBStorage, _CachedStorage
from optuna.trial import FrozenTrial, TrialState

# The Optuna releases whose private API this module was checked against: on each,
# tests/test_optuna_private.py passed, and so did the tests of the modules that call it
# (storage, trial I/O, liveness, report, balance, golden, PostgreSQL, space, runner, ...).
CHECKED = ("5.1.0",)


def unchecked_version(version: str | None = None) -> str | None:
    """None when ``version`` (default: the installed Optuna's) is in :data:`CHECKED`; else
    what to do about it, in one line."""
    version = optuna.__version__ if version is None else version
    if version in CHECKED:
        return None
    return (f"dropsweep's use of Optuna's private API was checked against "
            f"{', '.join(CHECKED)}; this is {version}: run tests/test_optuna_private.py "
            f"and update CHECKED in dropsweep/storage/optuna_private.py")


# ----------------------------------------------------------------------------- study and trial


def study_storage(study: optuna.Study) -> BaseStorage:
    """The storage object a study reads and writes (``Study._storage``).

    Why private: ``optuna.Study`` exposes no storage. dropsweep needs the object itself to open
    a companion study (``NAME:confirm``, ``NAME:test``) in the same storage, already open
    (read-only for ``report``), to list the storage's studies once, to write through its
    batched calls (:mod:`.trialio`), to beat for running trials (Optuna's heartbeat API lives
    on the storage) and to create a RUNNING trial from a template (Optuna's public
    ``enqueue_trial`` queues a WAITING one for any worker's next ask). Gain: not measured
    (it is what the public API lacks, not a speed-up)."""
    return study._storage  # noqa: SLF001


def study_id(study: optuna.Study) -> int:
    """The study's id in its storage (``Study._study_id``).

    Why private: the storage's calls take the id, and ``optuna.Study`` exposes only the name
    (``storage.get_study_id_from_name`` would be one more read for what the study holds).
    Gain: not measured."""
    return study._study_id  # noqa: SLF001


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """A trial's id in its storage (``Trial._trial_id``, ``FrozenTrial._trial_id``).

    Why private: the storage's calls (and dropsweep's batched writes) take the id; Optuna
    exposes a trial's number only. Gain: not measured."""
    return trial._trial_id  # noqa: SLF001


def trial_record(trial: optuna.Trial) -> FrozenTrial:
    """The running trial's own copy of itself (``Trial._cached_frozen_trial``), the object,
    not a copy: what ``report``, ``set_user_attr`` and ``should_prune`` read and update.

    Why private: the public properties (``user_attrs``, ``params``) are deep copies and there
    is none for the intermediate values. dropsweep reads it where Optuna's ``report`` and
    ``tell`` would (a step already reported, the value a pruned trial ends with, the seed a
    batch was given, a retried trial's history) and keeps it as Optuna's own calls would
    where it writes several values in one transaction (:mod:`.trialio`); reading the
    storage instead would be one more read per use. Gain: not measured on its own (it is
    part of the batched writes: see :func:`rdb_models`)."""
    return trial._cached_frozen_trial  # noqa: SLF001


# ----------------------------------------------------------------------------- the RDB tables


def rdb_models() -> Any:
    """Optuna's RDB table models (``optuna.storages._rdb.models``).

    Why private: the public ``RDBStorage`` writes every value in a transaction of its own,
    through an ORM object per row, and reads a study through an ORM object per stored value.
    dropsweep's storage (``ResilientRDBStorage``) writes what Optuna's own calls would, many
    at once, with a statement per table: an ask was about nine transactions, a checkpoint of
    a batch of 16 trials 16, a trial's result seven; now a batch's asks are one, its
    checkpoint one, its results one (the counts of trialio.py's docstring and docs/speed.md;
    each tested to store exactly what Optuna's calls store, tests/test_trialio.py). The time of
    that change alone was not measured; with the shared reads (:class:`CachedStorageBase`)
    and the rest of issue 11, the time not training fell from 224 ms to 52-60 ms a trial
    (docs/speed.md, "The time that is not training"). The fast reader
    (``storage/read.py``) reads a study through a few SELECTs of these tables: Optuna's
    reader takes about 10 s for 10,000 trials of 30 intermediate values each, this one over
    ten times less (docs/speed.md, "Scale of reporting": the whole ``report`` 2.13 s)."""
    from optuna.storages._rdb import models

    return models


# The private methods of RDBStorage that Optuna's cache in front of it (``_CachedStorage``)
# calls instead of the public ones (checked against _CachedStorage's source by the tests).
RDB_CACHE_CALLS = ("_create_new_trial", "_set_trial_param", "_get_trials",
                   "_get_best_trial_id", "_get_stale_trial_ids")


def rdb_cache_calls() -> dict[str, Callable[..., Any]]:
    """``RDBStorage``'s private methods that its cache calls, by name: dropsweep's storage
    wraps each like the public ones, so that a transient failure is retried whichever way the
    call came in.

    Why private: Optuna's cache in front of an RDB storage calls these, not the public
    methods; wrapping the public ones alone would leave the calls the cache makes (a new
    trial, a parameter, the study's trials, the stale check) unretried.
    Gain: not a speed matter (a search rides out a restarted database server); not
    measured."""
    return {name: getattr(RDBStorage, name) for name in RDB_CACHE_CALLS}


# ----------------------------------------------------------------------------- the cache


def cached_storage_backend(storage: object) -> object:
    """The storage behind Optuna's cache (``_CachedStorage._backend``, which every study on an
    RDB storage reads through); any other storage as it is.

    Why private: the cache has no public way to reach the RDB storage it wraps, and the fast
    reader (``storage/read.py``) reads that storage's tables. Gain: that of the fast reader
    (see :func:`rdb_models`)."""
    return getattr(storage, "_backend", storage)


class CachedStorageBase(_CachedStorage):
    """Optuna's cache in front of an RDB storage (``optuna.storages._CachedStorage``), with
    the internals a subclass uses named: the storage behind, a fresh read into the cache,
    the cached trials and the study's known distributions. (``trialio.SnapshotStorage``
    builds its shared reads and batched writes on it.)

    Why private: Optuna wraps an RDB storage in this cache for every study, and it re-reads
    every unfinished trial and sorts the study again at every ``get_all_trials``; one TPE
    ask calls it about five times, the median pruner once per trial at every checkpoint:
    9.1 reads a trial on a 200-trial Sonar sweep (``python -m cProfile``, docs/speed.md).
    The public storage API has no way to share one read or to keep a worker's own trials in
    the cache as its writes leave them. Gain: one read now serves a batch's asks and all of
    its pruning; the time of that change alone was not measured; with the batched writes
    (:func:`rdb_models`) and the rest of issue 11, the time not training fell from 224 ms to
    52-60 ms a trial (docs/speed.md, "The time that is not training").

    Each method takes the cache's lock itself (a ``threading.Lock``: not reentrant)."""

    @property
    def backend(self) -> Any:
        """The storage behind the cache (``_backend``)."""
        return self._backend

    def read_trials(self, study_id: int) -> None:
        """Read the study's new and unfinished trials into the cache, as ``get_all_trials``
        does before it answers (``_read_trials_from_remote_storage``)."""
        self._read_trials_from_remote_storage(study_id)

    def cached_trials(self, study_id: int) -> list[FrozenTrial]:
        """The cache's own trial objects of the study (not copies), in number order."""
        with self._lock:
            return sorted(self._studies[study_id].trials.values(), key=_number)

    def cached_trial(self, trial_id: int) -> FrozenTrial:
        """The cache's own object of a trial it holds (not a copy)."""
        with self._lock:
            study, number = self._trial_id_to_study_id_and_number[trial_id]
            return self._studies[study].trials[number]

    def study_of(self, trial_id: int) -> int:
        """The id of the study of a trial the cache holds."""
        with self._lock:
            return self._trial_id_to_study_id_and_number[trial_id][0]

    def known_distributions(self, study_id: int) -> dict[str, BaseDistribution]:
        """The distributions the cache knows for the study's parameters (a copy), against
        which Optuna's ``set_trial_param`` checks a new one."""
        with self._lock:
            return dict(self._studies[study_id].param_distribution)

    def learn_distribution(self, study_id: int, name: str,
                           distribution: BaseDistribution) -> None:
        """Record a parameter's distribution as the cache's ``set_trial_param`` does (the first
        one seen stays)."""
        with self._lock:
            self._studies[study_id].param_distribution.setdefault(name, distribution)


def _number(trial: FrozenTrial) -> int:
    return trial.number


# ----------------------------------------------------------------------------- heartbeats


def heartbeat_enabled(storage: BaseStorage) -> bool:
    """Whether the storage has Optuna's heartbeat on
    (``optuna.storages._heartbeat.is_heartbeat_enabled``).

    Why private: Optuna has the check only in its private module (it uses it inside
    ``study.optimize``, its heartbeat thread and ``fail_stale_trials``, none of which
    dropsweep uses: a worker beats for a whole batch from one thread, and fails stale trials
    with its own reason, :func:`stale_trial_ids`). Gain: not measured."""
    return optuna.storages._heartbeat.is_heartbeat_enabled(storage)  # noqa: SLF001


def stale_trial_ids(storage: BaseStorage, study_id: int) -> list[int]:
    """The study's RUNNING trials whose heartbeat is older than the grace period: Optuna's
    own check (``BaseHeartbeat._get_stale_trial_ids``).

    Why private: the public ``optuna.storages.fail_stale_trials`` fails them itself, a write
    each and without a reason; dropsweep fails each with its reason ("interrupted: worker
    died") and marked interrupted, in the one write that fails it, so that a paused worker
    recording its result at that moment records it or finds it failed, never a result with
    that reason (``study/liveness.py``). Gain: not measured (correctness, not speed)."""
    return list(storage._get_stale_trial_ids(study_id))  # noqa: SLF001


# ----------------------------------------------------------------------------- samplers


class GroupsSoFar(_GroupDecomposedSearchSpace):
    """Optuna's decomposition of the space into groups of parameters sampled together (TPE's
    ``group=True``), given each complete trial once.

    Why private: TPE's groups are its private ``_GroupDecomposedSearchSpace``, with no public
    way to replace them. Optuna's keeps its groups from ask to ask and adds every complete
    trial's distributions again at each: a no-op for a trial already added (groups only ever
    split, each one inside or outside a trial's distributions, and TPE sorts the names in a
    group), but a pass over the whole study at every ask, the largest part of TPE's ask that
    grows with the study (benchmarks/sweep_overhead.py (b)). The same groups, so the same
    proposals (tests/test_space.py, tests/test_golden.py). Gain: not isolated. Measured
    around it (docs/speed.md, "The time that is not training"): a 200-trial search's
    wall-clock over its training 1.18x and 1.16x before this change, 1.17x and 1.18x after;
    after it, from trial 100 to trial 1,000, dropsweep's own time per trial not training
    0.89x / 0.71x while TPE's own computation grows (12.0 -> 23.6 ms)."""

    def __init__(self, include_pruned: bool = False) -> None:
        super().__init__(include_pruned)
        self._added: set[int] = set()

    def calculate(self, study: optuna.Study, use_cache: bool = False) -> _SearchSpaceGroup:
        if self._study_id is None:
            self._study_id = study_id(study)
        elif self._study_id != study_id(study):
            raise ValueError("`_GroupDecomposedSearchSpace` cannot handle multiple studies.")
        states = ((TrialState.COMPLETE, TrialState.PRUNED) if self._include_pruned
                  else (TrialState.COMPLETE,))
        for trial in study._get_trials(deepcopy=False, states=states,  # noqa: SLF001
                                       use_cache=use_cache):
            if trial.number not in self._added:  # finished: its distributions are final
                self._search_space.add_distributions(trial.distributions)
                self._added.add(trial.number)
        return copy.deepcopy(self._search_space)


def group_once_per_trial(sampler: BaseSampler) -> None:
    """Give a grouped TPE sampler :class:`GroupsSoFar` in place of Optuna's groups; a sampler
    without them (or a newer Optuna that no longer has them: tests/test_space.py says so) is
    left as it is. Why and gain: :class:`GroupsSoFar`."""
    groups = getattr(sampler, "_group_decomposed_search_space", None)
    if isinstance(groups, _GroupDecomposedSearchSpace):
        sampler._group_decomposed_search_space = GroupsSoFar(  # noqa: SLF001
            groups._include_pruned)  # noqa: SLF001


def reseed_sampler(sampler: BaseSampler, seed: int) -> None:
    """``sampler`` as if made afresh with ``seed``: its random streams seeded again, what it
    learnt kept (``_rng``, TPE's ``_random_sampler`` for its start-up trials, and a
    ``PartialFixedSampler``'s ``_base_sampler``).

    Why private: Optuna has no public call for it (``reseed_rng`` draws a random seed), and a
    study stopped or killed and resumed must propose what it would have proposed, workers
    asking at once must propose apart (issue 25). Gain: not measured (reproducibility, not
    speed)."""
    if isinstance(sampler, optuna.samplers.PartialFixedSampler):
        reseed_sampler(sampler._base_sampler, seed)  # noqa: SLF001
    elif isinstance(sampler, optuna.samplers.TPESampler):
        sampler._rng.rng.seed(seed)  # noqa: SLF001
        sampler._random_sampler._rng.rng.seed(seed)  # noqa: SLF001
    elif isinstance(sampler, optuna.samplers.RandomSampler):
        sampler._rng.rng.seed(seed)  # noqa: SLF001
    else:
        raise TypeError(f"{type(sampler).__name__} cannot be reseeded for each trial")


# ----------------------------------------------------------------------------- a study's view


class StudyView(optuna.Study):
    """The study as a sampler or pruner sees it, with only the trials :meth:`keeps` keeps (and
    the same storage, study id and thread-local cache, to write as the study would); its
    best trial the one :meth:`best_of` picks.

    Why private: Optuna's samplers read a study's trials through the private
    ``Study._get_trials`` (with ``use_cache``), not the public ``get_trials``, and the public
    ``best_trial`` asks the private ``Study._get_best_trial``; a view must override those (as
    Optuna's own Hyperband pruner views one bracket), and copy the study's private state to
    share its storage and cache. Used by ``search.balance`` (one sampler and pruner per
    placement). Gain: none sought (it is what balancing needs); its cost was measured as
    nothing visible: the 200-trial search's wall-clock over its training 1.16x and 1.16x
    balanced, 1.18x and 1.22x unbalanced (docs/speed.md, "The time that is not
    training")."""

    def __init__(self, study: optuna.Study) -> None:
        self.__dict__.update(study.__dict__)  # the same storage, study id, thread-local cache

    def keeps(self, trial: FrozenTrial) -> bool:
        """Whether the view shows this trial (all of them unless overridden)."""
        return True

    def best_of(self, complete: list[FrozenTrial]) -> FrozenTrial | None:
        """The best of the view's complete trials (None when there are none): the view's
        ``best_trial``, and what a sampler or pruner asks for as the study's best."""
        raise NotImplementedError

    def _get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None,
                    use_cache: bool = False) -> list[FrozenTrial]:
        trials = [t for t in super()._get_trials(False, states, use_cache)
                  if self.keeps(t)]
        return copy.deepcopy(trials) if deepcopy else trials

    def get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None
                   ) -> list[FrozenTrial]:
        return self._get_trials(deepcopy, states, use_cache=False)

    def _get_best_trial(self, deepcopy: bool) -> FrozenTrial:
        best = self.best_of(self._get_trials(False, (TrialState.COMPLETE,)))
        if best is None:
            raise ValueError("No trials are completed yet.")
        return copy.deepcopy(best) if deepcopy else best


__all__ = ["CHECKED", "RDB_CACHE_CALLS", "CachedStorageBase", "GroupsSoFar", "StudyView",
           "cached_storage_backend", "group_once_per_trial", "heartbeat_enabled",
           "rdb_cache_calls", "rdb_models", "reseed_sampler", "stale_trial_ids",
           "study_id", "study_storage", "trial_id", "trial_record", "unchecked_version"]


def param_importances(study: optuna.Study, params: list[str] | None = None,
                      normalize: bool = False) -> dict[str, float]:
    """``optuna.importance.get_param_importances`` (PED-ANOVA, Optuna's default evaluator)
    without importing scikit-learn: ``optuna.importance``'s package init imports its fANOVA
    evaluator, which imports ``sklearn.ensemble`` whenever scikit-learn is installed (and
    dropsweep installs it for the digits set) — 1.2 s of a ``dropsweep report``, measured
    with ``python -X importtime`` on a 200-trial Sonar study here (1.47 s median report, with
    scipy and Optuna's own imports the rest). ``sklearn.ensemble`` is held absent
    (``sys.modules[name] = None``: Python's documented way to make an import fail, which
    Optuna's ``try_import`` catches) only while ``optuna.importance`` is first imported, so
    fANOVA is unavailable in this process (dropsweep never uses it) and scikit-learn
    itself imports as ever afterwards. Relies on Optuna importing scikit-learn optionally."""
    import sys

    importance = sys.modules.get("optuna.importance")
    if importance is None:
        held = "sklearn.ensemble" not in sys.modules
        if held:
            sys.modules["sklearn.ensemble"] = None  # type: ignore[assignment]
        try:
            import optuna.importance as importance
        finally:
            if held and sys.modules.get("sklearn.ensemble", False) is None:
                del sys.modules["sklearn.ensemble"]
    return importance.get_param_importances(study, params=params, normalize=normalize)
