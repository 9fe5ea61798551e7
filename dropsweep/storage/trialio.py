"""How a worker reads and writes its trials: reads shared, writes batched.

**Reads.** Optuna puts a cache in front of an RDB storage
(:class:`~dropsweep.storage.optuna_private.CachedStorageBase`; dropsweep's
:class:`~dropsweep.storage.rdb.ResilientRDBStorage` is wrapped in it like any RDB storage): it
keeps finished trials, but every ``get_all_trials`` still re-reads every unfinished trial (a
whole batch of running ones, with their checkpoints) and sorts the study again. One TPE ask
calls it about five times, the median pruner once per trial at every checkpoint, the runner's
own checks a few more: measured on a 200-trial Sonar sweep, about nine reads a trial and the
largest part of the time the search was not training.

Inside :meth:`SnapshotStorage.holding`, the calls of one thread share a single read. What
the storage holds is then seen as it was at that read, except the trials created inside the
hold: this worker's own, kept as its writes leave them (parameters, attributes, an enqueued
trial's start), so that a batch's asks see each other as a fresh read would (TPE's constant
liar counts the running ones). A hold gives other workers' writes the same slack any read has
(they could have landed a moment after it); :meth:`SnapshotStorage.released` reads the
storage as it is now where that matters (a planned configuration asked twice).

**Writes.** Optuna writes every value in a transaction of its own: an ask about nine, a
checkpoint of a batch of 16 trials 16, a trial's result seven. What is set on the hold's own
trials is written in one transaction when the hold ends (``ResilientRDBStorage.write_trials``);
:func:`report_all` writes a checkpoint and ``finish_trials`` a batch's results in one, and
:func:`set_user_attrs` several attributes; each stores what Optuna's own calls would, is
refused where they would be, and keeps the trial's own copy as they do (``should_prune``
reads it).
"""

from __future__ import annotations

import copy
import datetime
import threading
import time
from contextlib import contextmanager
from typing import Any, Container, Iterator, Mapping, Sequence

import optuna
from optuna import distributions
from optuna.distributions import BaseDistribution
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from dropsweep.storage import optuna_private
from dropsweep.storage.optuna_private import CachedStorageBase
from dropsweep.storage.rdb import TrialEnd, TrialWrites


class _Read:
    """One thread's hold: when its read was made, and the study's trials in number order as
    of then (None once a trial was created since: listed again, without another read); the
    trials created inside it, and what was set on them, not yet written."""

    def __init__(self) -> None:
        self.at: dict[int, float] = {}
        self.listing: dict[int, list[FrozenTrial] | None] = {}
        self.created: set[int] = set()
        self.pending: dict[int, TrialWrites] = {}

    def writes(self, trial_id: int) -> TrialWrites:
        if trial_id not in self.pending:
            self.pending[trial_id] = TrialWrites(trial_id, [], {}, {}, [])
        return self.pending[trial_id]


class SnapshotStorage(CachedStorageBase):
    """Optuna's cache in front of an RDB storage, whose reads a thread can hold (its
    internals named by :class:`~dropsweep.storage.optuna_private.CachedStorageBase`)."""

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
        read = self._held.read = _Read()
        self._held.max_age = max_age
        try:
            yield
        finally:
            self._held.read = None
        self._write_pending(read)  # not after a failure: the trials are given back anyway

    @contextmanager
    def released(self) -> Iterator[None]:
        """Inside a hold, reads that see the storage as it is now (and this worker's pending
        writes written first); the hold then lists the trials again, without another read."""
        read: _Read | None = getattr(self._held, "read", None)
        if read is None:
            yield
            return
        self._write_pending(read)
        self._held.read = None
        try:
            yield
        finally:
            self._held.read = read
            read.listing.clear()

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
            self.read_trials(study_id)
            read.at[study_id], read.listing[study_id] = time.monotonic(), None
        trials = read.listing.get(study_id)
        if trials is None:
            trials = self.cached_trials(study_id)
            read.listing[study_id] = trials
        if states is not None:
            trials = [t for t in trials if t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        trial_id = super().create_new_trial(study_id, template_trial)
        read: _Read | None = getattr(self._held, "read", None)
        if read is not None:
            read.listing[study_id] = None  # the new trial is in the cache: list it
            read.created.add(trial_id)
        return trial_id

    # A trial created inside a hold is this worker's own: its copy in the cache is kept as
    # its writes leave it, and Optuna's ask (which writes each parameter and attribute in a
    # transaction of its own, then reads the trial back) neither writes nor reads each one:
    # what was set on the hold's trials is written in one transaction when the hold ends
    # (or before one of them is finished, or reads are released).

    def _own(self, trial_id: int) -> tuple[_Read, FrozenTrial] | None:
        read: _Read | None = getattr(self._held, "read", None)
        if read is None or trial_id not in read.created or not self.batches_writes():
            return None
        return read, self.cached_trial(trial_id)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        own = self._own(trial_id)
        if own is not None and own[1].state == TrialState.RUNNING:
            return copy.deepcopy(own[1])
        return super().get_trial(trial_id)

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: BaseDistribution) -> None:
        own = self._own(trial_id)
        if own is None:
            super().set_trial_param(trial_id, param_name, param_value_internal, distribution)
            return
        read, trial = own
        known = self.known_distributions(self.study_of(trial_id)).get(param_name)
        if known is not None:  # checked at once where it can be, as Optuna's write would
            distributions.check_distribution_compatibility(known, distribution)
        read.writes(trial_id).params.append((param_name, param_value_internal, distribution))
        trial.params[param_name] = distribution.to_external_repr(param_value_internal)
        trial.distributions[param_name] = distribution

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.set_trial_user_attrs(trial_id, {key: value})

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        # (TPE's constant liar reads a running trial's sampled point from its system attrs)
        own = self._own(trial_id)
        if own is None:
            super().set_trial_system_attr(trial_id, key, value)
            return
        own[0].writes(trial_id).system_attrs[key] = value
        own[1].system_attrs[key] = value

    def record_heartbeat(self, trial_id: int) -> None:
        # A trial's first beat lands with its role: a worker killed before both is failed
        # as one that never beat (liveness.fail_stale).
        own = self._own(trial_id)
        if own is None:
            super().record_heartbeat(trial_id)
        elif not own[0].writes(trial_id).beats:
            own[0].writes(trial_id).beats.append(True)

    def set_trial_state_values(self, trial_id: int, state: TrialState,
                               values: Sequence[float] | None = None) -> bool:
        own = self._own(trial_id)
        if own is not None and state.is_finished():
            self._write_pending(own[0], trial_id)  # what was set on it comes first
        done = super().set_trial_state_values(trial_id, state, values)
        if done and own is not None:  # the cache's copy as the write leaves the trial
            read, trial = own
            if state == TrialState.RUNNING:  # an enqueued trial this worker asked
                trial.datetime_start = datetime.datetime.now()
            else:  # (abandoned): no longer this hold's to keep
                trial.values = None if values is None else [float(v) for v in values]
                trial.datetime_complete = datetime.datetime.now()
                read.created.discard(trial_id)
            trial.state = state
        return done

    def _write_pending(self, read: _Read, trial_id: int | None = None) -> None:
        writes = ([read.pending.pop(trial_id)] if trial_id in read.pending else []
                  ) if trial_id is not None else list(read.pending.values())
        if not writes:
            return
        studies = {self.study_of(w.trial_id) for w in writes}
        known = {name: dist for study_id in studies
                 for name, dist in self.known_distributions(study_id).items()}
        if len(studies) > 1:  # (a hold's trials are one study's: the check needs it)
            raise ValueError("a hold's pending writes span several studies")
        self.backend.write_trials(writes, known)
        if trial_id is None:
            read.pending.clear()
        study_id = studies.pop()
        for w in writes:
            for name, _, distribution in w.params:
                self.learn_distribution(study_id, name, distribution)

    # Batched writes, where the storage behind has them (dropsweep's RDB storage does).

    def set_trial_user_attrs(self, trial_id: int, attrs: Mapping[str, Any]) -> None:
        own = self._own(trial_id)
        if own is None:
            if self.batches_writes():
                self.backend.set_trial_user_attrs(trial_id, attrs)
            else:
                for key, value in attrs.items():
                    super().set_trial_user_attr(trial_id, key, value)
            return
        own[0].writes(trial_id).user_attrs.update(attrs)
        own[1].user_attrs.update(attrs)

    def finish_trials(self, ends: Sequence[TrialEnd]) -> set[int]:
        return self.backend.finish_trials(ends)

    def set_intermediate_values(self, step: int, values: Mapping[int, float]) -> set[int]:
        return self.backend.set_intermediate_values(step, values)

    def forget_intermediate_values(self, trial_ids: Sequence[int]) -> set[int]:
        return self.backend.forget_intermediate_values(trial_ids)

    def batches_writes(self) -> bool:
        return hasattr(self.backend, "set_intermediate_values")

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        del state["_held"]
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._held = threading.local()


def holding(study: optuna.Study, max_age: float | None = None):
    """``SnapshotStorage.holding`` for the study's storage; where it cannot hold, nothing."""
    storage = optuna_private.study_storage(study)
    if isinstance(storage, SnapshotStorage):
        return storage.holding(max_age)
    return _nothing()


def released(study: optuna.Study):
    """``SnapshotStorage.released`` for the study's storage; where it cannot hold, nothing."""
    storage = optuna_private.study_storage(study)
    if isinstance(storage, SnapshotStorage):
        return storage.released()
    return _nothing()


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def trial_states(study: optuna.Study) -> dict[int, TrialState] | None:
    """Every trial's number and state as the storage holds them now, in one light read; None
    where the storage has no such read (then read the trials themselves)."""
    storage = optuna_private.study_storage(study)
    backend = storage.backend if isinstance(storage, SnapshotStorage) else storage
    read = getattr(backend, "trial_states", None)
    return None if read is None else read(optuna_private.study_id(study))


def _batching(storage: object) -> SnapshotStorage | None:
    return storage if isinstance(storage, SnapshotStorage) and storage.batches_writes() else None


def _batched(trial: optuna.Trial) -> SnapshotStorage | None:
    return _batching(trial.storage)


def finishes(study: optuna.Study) -> SnapshotStorage | None:
    """The study's storage where it writes a batch's ends at once (``finish_trials``)."""
    return _batching(optuna_private.study_storage(study))


def set_user_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """``trial.set_user_attr(key, value)`` for each, in one write."""
    storage = _batched(trial)
    if storage is None:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    storage.set_trial_user_attrs(optuna_private.trial_id(trial), attrs)
    optuna_private.trial_record(trial).user_attrs.update(attrs)  # as set_user_attr does


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
    ids = {optuna_private.trial_id(trials[i]): i for i in values}
    finished_ids = storage.set_intermediate_values(
        step, {trial_id: float(values[i]) for trial_id, i in ids.items()})
    finished = {ids[trial_id] for trial_id in finished_ids}
    for i, value in values.items():
        if i not in finished:  # the trial's own copy, as report keeps it
            optuna_private.trial_record(trials[i]).intermediate_values[step] = float(value)
    return finished


def forget_reports(trials: Sequence[optuna.Trial]) -> None:
    """Forget every step these trials reported: they train again from the start (a batch
    that ran out of memory, in halves), and Optuna's ``report`` would keep a step's first
    value, and a pruned trial's value is its last report. Where the storage cannot delete
    (not an RDB storage), the steps are forgotten by the trials' own copies only, so that
    the new attempt's reports overwrite them (steps it does not reach stay)."""
    if not trials:
        return
    storage = _batched(trials[0])
    if storage is not None:
        storage.forget_intermediate_values([optuna_private.trial_id(t) for t in trials])
    for trial in trials:
        optuna_private.trial_record(trial).intermediate_values.clear()
