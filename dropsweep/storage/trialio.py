"""How a worker reads and writes its trials: reads shared, writes batched.

**Reads.** Optuna puts a cache in front of an RDB storage (``_CachedStorage``; dropsweep's
:class:`~dropsweep.storage.ResilientRDBStorage` is wrapped in it like any RDB storage): it
keeps finished trials, but every ``get_all_trials`` still re-reads every unfinished trial (a
whole batch of running ones, with their checkpoints) and sorts the study again. One TPE ask
calls it about five times, the median pruner once per trial at every checkpoint, the runner's
own checks a few more: measured on a 200-trial Sonar sweep, about nine reads a trial and the
largest part of the time the search was not training.

Inside :meth:`SnapshotStorage.holding`, the calls of one thread share a single read. What
the storage holds is then seen as it was at that read, except trials created inside the hold
(an enqueued baseline must be found by the ``ask`` that follows): a hold spans only callers
that do not need this worker's own writes made inside it, and gives other workers' writes the
same slack any read has (they could have landed a moment after it).

**Writes.** Optuna writes every value in a transaction of its own; a checkpoint of a batch of
16 trials is 16 of them, a trial's results 7 more. :func:`report_all` and
:func:`set_user_attrs` write what ``Trial.report`` and ``Trial.set_user_attr`` would, many
in one (see ``ResilientRDBStorage.set_intermediate_values``), and keep the trial's own copy
as those do (``should_prune`` reads it).
"""

from __future__ import annotations

import copy
import threading
import time
from contextlib import contextmanager
from typing import Any, Container, Iterator, Mapping, Sequence

import optuna
from optuna.storages import RDBStorage, _CachedStorage
from optuna.trial import FrozenTrial, TrialState


class _Read:
    """One thread's hold: when its read was made, and the study's trials in number order as
    of then (None once a trial was created since: listed again, without another read)."""

    def __init__(self) -> None:
        self.at: dict[int, float] = {}
        self.listing: dict[int, list[FrozenTrial] | None] = {}


class SnapshotStorage(_CachedStorage):
    """Optuna's cache in front of an RDB storage, whose reads a thread can hold."""

    def __init__(self, backend: RDBStorage) -> None:
        super().__init__(backend)
        self._held = threading.local()

    @contextmanager
    def holding(self, max_age: float | None = None) -> Iterator[None]:
        """This thread's reads of all trials share one read of the storage until the block
        ends; with ``max_age``, one read at most that many seconds old (a long block still
        sees other workers' trials within that bound). A nested hold joins the outer one."""
        if getattr(self._held, "read", None) is not None:
            yield
            return
        self._held.read, self._held.max_age = _Read(), max_age
        try:
            yield
        finally:
            self._held.read = None

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        read: _Read | None = getattr(self._held, "read", None)
        if read is None:
            return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)
        at = read.at.get(study_id)
        if at is None or (self._held.max_age is not None
                          and time.monotonic() - at > self._held.max_age):
            self._read_trials_from_remote_storage(study_id)
            read.at[study_id], read.listing[study_id] = time.monotonic(), None
        trials = read.listing.get(study_id)
        if trials is None:
            with self._lock:
                trials = sorted(self._studies[study_id].trials.values(), key=_number)
            read.listing[study_id] = trials
        if states is not None:
            trials = [t for t in trials if t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        trial_id = super().create_new_trial(study_id, template_trial)
        read: _Read | None = getattr(self._held, "read", None)
        if read is not None:
            read.listing[study_id] = None  # the new trial is in the cache: list it
        return trial_id

    # Batched writes, where the storage behind has them (dropsweep's RDB storage does).

    def set_trial_user_attrs(self, trial_id: int, attrs: Mapping[str, Any]) -> None:
        self._backend.set_trial_user_attrs(trial_id, attrs)

    def set_intermediate_values(self, step: int, values: Mapping[int, float]) -> set[int]:
        return self._backend.set_intermediate_values(step, values)

    def batches_writes(self) -> bool:
        return hasattr(self._backend, "set_intermediate_values")

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        del state["_held"]
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._held = threading.local()


def _number(trial: FrozenTrial) -> int:
    return trial.number


def holding(study: optuna.Study, max_age: float | None = None):
    """``SnapshotStorage.holding`` for the study's storage; where it cannot hold, nothing."""
    storage = study._storage  # noqa: SLF001
    if isinstance(storage, SnapshotStorage):
        return storage.holding(max_age)
    return _nothing()


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _batched(trial: optuna.Trial) -> SnapshotStorage | None:
    storage = trial.storage
    return storage if isinstance(storage, SnapshotStorage) and storage.batches_writes() else None


def set_user_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """``trial.set_user_attr(key, value)`` for each, in one write."""
    storage = _batched(trial)
    if storage is None:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    storage.set_trial_user_attrs(trial._trial_id, attrs)  # noqa: SLF001
    trial._cached_frozen_trial.user_attrs.update(attrs)  # noqa: SLF001 - as set_user_attr does


def report_all(trials: Sequence[optuna.Trial], values: Mapping[int, float], step: int
               ) -> set[int]:
    """``trials[i].report(value, step)`` for each ``i: value``, in one write; the indexes of
    the trials that were finished meanwhile (another worker failed them as stale), which
    ``report`` would refuse with UpdateFinishedTrialError."""
    if not values:
        return set()
    storage = _batched(trials[next(iter(values))])
    if storage is None:
        finished = set()
        for i, value in values.items():
            try:
                trials[i].report(value, step=step)
            except optuna.exceptions.UpdateFinishedTrialError:
                finished.add(i)
        return finished
    ids = {trials[i]._trial_id: i for i in values}  # noqa: SLF001
    finished_ids = storage.set_intermediate_values(
        step, {trial_id: float(values[i]) for trial_id, i in ids.items()})
    finished = {ids[trial_id] for trial_id in finished_ids}
    for i, value in values.items():
        if i not in finished:  # the trial's own copy, as report keeps it
            trials[i]._cached_frozen_trial.intermediate_values[step] = float(value)  # noqa: SLF001
    return finished
