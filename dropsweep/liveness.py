"""What lets many workers share one study safely: heartbeats, stale trials, surplus trials.

A worker may die at any moment (kill -9, a reboot, a lost machine). Its running trials keep
beating (Optuna's heartbeat, recorded by one thread per batch) until it dies; any worker
then fails the stale ones, which do not count and are run again. Workers that ask at the
same moment could together overshoot the target; trial numbers, which the storage hands out
atomically, decide which asks stand.
"""

from __future__ import annotations

import datetime
import threading
import time
import warnings
from typing import Callable, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from dropsweep import records


# A baseline that diverges (a failure of its own) is tried this many times, each with its
# own seed, before the study goes on without one; any other lost baseline is always re-run.
BASELINE_ATTEMPTS = 3


def _is_baseline(trial: FrozenTrial) -> bool:
    return trial.user_attrs.get(records.ROLE) == records.ROLE_BASELINE


def _diverged(trial: FrozenTrial) -> bool:
    return (trial.state == TrialState.FAIL and records.FAIL_REASON in trial.user_attrs
            and not trial.user_attrs.get(records.INTERRUPTED, False))


def counts_toward_target(trial: FrozenTrial) -> bool:
    """Finished for good: complete, pruned, or failed for a reason of its own (diverged).

    A trial stopped by Ctrl-C or a kill is not a result and will be run again. Nor is a
    pruned baseline (studies made before the baseline was exempt from pruning): it is run
    again, since every comparison needs it.
    """
    if trial.state == TrialState.COMPLETE:
        return True
    if trial.state == TrialState.PRUNED:
        return not _is_baseline(trial)
    return _diverged(trial)


def settles(trial: FrozenTrial) -> bool:
    """Whether this trial settles its planned configuration (baseline, listed, grid point),
    so that it is not planned again: running or queued, or finished for good — for the
    baseline, only complete (see :func:`baseline_gave_up` for one that keeps diverging)."""
    if trial.state in (TrialState.RUNNING, TrialState.WAITING):
        return True
    if _is_baseline(trial):
        return trial.state == TrialState.COMPLETE
    return counts_toward_target(trial)


def baseline_gave_up(trials: Sequence[FrozenTrial]) -> bool:
    """The baseline diverged on every one of its attempts: go on without it (the report
    says why) rather than retry for ever."""
    return sum(_is_baseline(t) and _diverged(t) for t in trials) >= BASELINE_ATTEMPTS


def now_utc() -> datetime.datetime:
    """Enqueue stamps are compared across machines: UTC, with its zone."""
    return datetime.datetime.now(datetime.timezone.utc)


def fills_a_place(trial: FrozenTrial) -> bool:
    """Counts toward the target, or is running and may."""
    return counts_toward_target(trial) or trial.state == TrialState.RUNNING


def planned_twice(study: optuna.Study, trial: optuna.Trial, config: dict) -> bool:
    """Whether a lower-numbered trial already settles this planned configuration: two
    workers that plan the same grid point at once both ask; the lower trial number keeps it."""
    return any(t.number < trial.number and settles(t)
               and t.user_attrs.get(records.CONFIG) == config
               for t in study.get_trials(deepcopy=False))


def abandon(study: optuna.Study, trial: optuna.Trial) -> bool:
    """End a trial that will not be a result (interrupted, or surplus): FAIL, marked so.
    Whether it could be marked (not when already finished, or the storage itself failed)."""
    try:
        trial.set_user_attr(records.INTERRUPTED, True)
        study.tell(trial, state=TrialState.FAIL)
        return True
    except Exception:
        return False


def beat(study: optuna.Study, trials: Sequence[optuna.Trial]) -> None:
    storage = study._storage  # noqa: SLF001 - Optuna's heartbeat API lives on the storage
    if optuna.storages._heartbeat.is_heartbeat_enabled(storage):  # noqa: SLF001
        for trial in trials:
            storage.record_heartbeat(trial._trial_id)  # noqa: SLF001


class Heartbeat:
    """The trials a worker holds — asked, not yet told — and one thread that beats for them
    all (Optuna's own ``HeartbeatThread`` is one thread per trial, made for
    ``study.optimize``). A trial is added at its ask and discarded once its result is
    recorded; whatever is still held when the worker stops or fails is given back
    (:meth:`give_back`), so no trial stays RUNNING. Search and confirm both hold this way."""

    def __init__(self, study: optuna.Study, trials: Sequence[optuna.Trial], seconds: int) -> None:
        self.study, self.trials, self.seconds = study, list(trials), seconds
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="dropsweep-heartbeat", daemon=True)

    def add(self, trials: Sequence[optuna.Trial]) -> None:
        with self.lock:
            self.trials.extend(trials)

    def discard(self, trial: optuna.Trial) -> None:
        with self.lock:
            if trial in self.trials:
                self.trials.remove(trial)

    def give_back(self) -> tuple[int, int]:
        """Mark every trial still held interrupted (:func:`abandon`) and hold none: (held,
        marked) — fewer marked than held when the storage refused."""
        with self.lock:
            held, self.trials = self.trials, []
        return len(held), sum(abandon(self.study, trial) for trial in held)

    def _run(self) -> None:
        while not self.done.wait(self.seconds):
            with self.lock:
                trials = list(self.trials)
            try:
                beat(self.study, trials)
            except Exception:  # a busy or flaky storage: beat again next time
                pass

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()


def fail_stale(study: optuna.Study, grace: float) -> None:
    """Fail the trials of workers that died: RUNNING without a heartbeat for ``grace``
    seconds (Optuna's check); RUNNING, started more than ``grace`` ago and never given its
    role (killed before its first beat); planned and still WAITING ``grace`` after it was
    queued. Failed without a reason, they do not count and their configurations run again."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    cutoff = datetime.datetime.now() - datetime.timedelta(seconds=grace)  # Optuna: naive local
    storage = study._storage  # noqa: SLF001
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        if t.state == TrialState.RUNNING:
            orphan = (records.ROLE not in t.user_attrs and t.datetime_start is not None
                      and t.datetime_start < cutoff)
        else:
            enqueued = t.user_attrs.get(records.ENQUEUED)
            orphan = (enqueued is not None and datetime.datetime.fromisoformat(enqueued)
                      < now_utc() - datetime.timedelta(seconds=grace))
        if orphan:
            try:
                storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)  # noqa: SLF001
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # another worker got there first


def taken(study: optuna.Study) -> int:
    """Trials that fill a place toward the target: finished for good, or running."""
    return sum(fills_a_place(t) for t in study.get_trials(deepcopy=False))


def drop_surplus(study: optuna.Study, asked: list[tuple[optuna.Trial, object]],
                 target: int) -> list[tuple[optuna.Trial, object]]:
    """Workers that ask at the same moment can together ask for more than the target. The
    trial numbers settle it: of all finished and running trials, the first ``target`` by
    number stay; a later one of ours is abandoned (not a result) before it costs anything."""
    if not asked:
        return asked
    slots = sorted(t.number for t in study.get_trials(deepcopy=False)
                   if fills_a_place(t))[:target]
    keep = set(slots)
    kept = []
    for trial, config in asked:
        if trial.number in keep:
            kept.append((trial, config))
        else:
            abandon(study, trial)
    return kept


def wait(stop: Callable[[], bool], seconds: float) -> None:
    """Sleep up to ``seconds``, waking early when ``stop()`` turns true."""
    end = time.monotonic() + seconds
    while not stop() and time.monotonic() < end:
        time.sleep(0.1)
