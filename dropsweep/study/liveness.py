"""What lets many workers share one study safely: heartbeats, stale trials, surplus trials.

A worker may die at any moment (kill -9, a reboot, a lost machine). Its running trials keep
beating (Optuna's heartbeat, recorded by one thread per batch) until it dies; any worker
then fails the stale ones ("interrupted: worker died"), which do not count and are run
again, once, as the batch they were: from its checkpoint if it left one, else from its start
(:func:`replays`: the same configurations in the same order with the same seed), so they end
with the numbers of a run never stopped. Workers that ask at the same moment could together
overshoot the target, or run one lost batch twice; trial numbers, which the storage hands
out atomically, decide which asks stand.
"""

from __future__ import annotations

import datetime
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Container, Mapping, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from dropsweep import records
from dropsweep.records import WORKER_DIED
from dropsweep.storage import optuna_private, trialio
from dropsweep.storage.rdb import TrialEnd


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


def lost(trial: FrozenTrial) -> bool:
    """A sampler's trial that trained in a batch and ended without a result (stopped, or
    its worker died): its configuration is owed a run. Planned ones are owed theirs by
    :func:`settles`; a trial dropped before it trained (surplus) had no batch."""
    return (trial.state == TrialState.FAIL and not counts_toward_target(trial)
            and trial.user_attrs.get(records.ROLE) == records.ROLE_SEARCH
            and records.BATCH in trial.user_attrs)


def retry_of(trial: FrozenTrial) -> int | None:
    """The lost trial whose configuration ``trial`` runs again from the start (Optuna's
    retry history), or None."""
    history = trial.system_attrs.get(records.RETRY_HISTORY)
    if isinstance(history, list) and history and type(history[-1]) is int:
        return history[-1]
    return None


def continued(trial: FrozenTrial) -> int | None:
    """The trial ``trial`` carries on: the lost one it runs again, or the one whose
    checkpoint it went on from; None for a trial of its own."""
    again = retry_of(trial)
    if again is not None:
        return again
    resumed = trial.user_attrs.get(records.RESUMED)
    if isinstance(resumed, dict) and type(resumed.get("trial")) is int:
        return resumed["trial"]
    return None


def carries(trial: FrozenTrial) -> bool:
    """Whether ``trial`` carries on the one it continues: running, queued, recorded for
    good, or lost in its turn (then it is owed a run itself); or dropped as surplus: the
    study's target, or its placement's share, was filled by others meanwhile, so the lost
    configuration is owed nothing more (asking it again would be dropped again, for ever)."""
    return (trial.state in (TrialState.RUNNING, TrialState.WAITING)
            or counts_toward_target(trial) or lost(trial)
            or trial.user_attrs.get(records.FAIL_REASON) == records.SURPLUS)


def _asked_afresh(trial: FrozenTrial) -> bool:
    """A trial of a batch asked afresh (not one that went on from another), recorded with
    what its batch needs to be trained again: its batch, its configuration and its seed."""
    attrs = trial.user_attrs
    return (records.RESUMED not in attrs and type(attrs.get(records.BATCH)) is int
            and type(attrs.get(records.SEED)) is int and isinstance(attrs.get(records.CONFIG),
                                                                     dict))


def goes_on(trial: FrozenTrial, by_number: Mapping[int, FrozenTrial],
            checkpointed: Container[int]) -> bool:
    """Whether ``trial``, ended without a result, goes on as part of its batch rather than
    alone: from a checkpoint, where its batch or the batch of a trial it went on from has a
    file (``checkpointed``: their numbers, written or claimed — a claim keeps the number);
    else from the start of the batch it was first asked in (:func:`replays`)."""
    seen: FrozenTrial | None = trial
    while seen is not None:
        batch = seen.user_attrs.get(records.BATCH)
        if type(batch) is int and batch in checkpointed:
            return True
        resumed = seen.user_attrs.get(records.RESUMED)
        if not isinstance(resumed, dict):
            return _asked_afresh(seen)
        before = resumed.get("trial")
        seen = by_number.get(before) if type(before) is int and before < seen.number else None
    return False


def root(trial: FrozenTrial, by_number: Mapping[int, FrozenTrial]) -> int:
    """The trial first asked in ``trial``'s place: ``trial``, or the one it went on from
    (from a checkpoint, or from its batch's start), followed back."""
    seen = trial
    while True:
        resumed = seen.user_attrs.get(records.RESUMED)
        before = resumed.get("trial") if isinstance(resumed, dict) else None
        if type(before) is not int or before >= seen.number or before not in by_number:
            return seen.number
        seen = by_number[before]


@dataclass(frozen=True)
class Replay:
    """A lost batch with no checkpoint to go on from: it goes on from its start, as a
    checkpoint of epoch 0 would have it, with the trials it was asked as (its places, in
    their order), their configurations and its seed — so it trains what it trained."""

    batch: int
    trials: tuple[int, ...]
    configs: tuple[dict, ...]
    seed: int

    def payload(self) -> dict[str, Any]:
        """As a checkpoint's header names its batch (:mod:`dropsweep.train.checkpoints`)."""
        return {"batch": self.batch, "trials": list(self.trials),
                "configs": [dict(c) for c in self.configs], "seed": self.seed}


def carriers(trials: Sequence[FrozenTrial]) -> dict[int, FrozenTrial]:
    """Trial number -> the last trial that carries it on (:func:`continued`, :func:`carries`)."""
    return {continued(t): t for t in sorted(trials, key=lambda t: t.number) if carries(t)}


def replays(trials: Sequence[FrozenTrial], checkpointed: Container[int] = ()) -> list[Replay]:
    """The batches asked afresh that a stop or a dead worker left without a result for some
    place and with no checkpoint file (``checkpointed``, as :func:`goes_on`), oldest first:
    a place is lost when the last trial that went on with it (itself, or one that went on
    from its checkpoint) ended without one. A batch with a place still running or queued
    waits; a place whose lost trial a retry of an older dropsweep carries on is that
    retry's batch's (never both)."""
    after = carriers(trials)
    batches: dict[int, list[FrozenTrial]] = {}
    for t in trials:
        if _asked_afresh(t):
            batches.setdefault(t.user_attrs[records.BATCH], []).append(t)
    out = []
    for batch, places in sorted(batches.items()):
        places.sort(key=lambda t: t.number)
        pending = busy = False
        covered = batch in checkpointed
        for place in places:
            last, alone = place, True
            while last.number in after and after[last.number].number > last.number:
                last = after[last.number]
                alone = alone and retry_of(last) is None
                covered = covered or last.user_attrs.get(records.BATCH) in checkpointed
            busy = busy or last.state in (TrialState.RUNNING, TrialState.WAITING)
            pending = pending or (alone and last.state == TrialState.FAIL
                                  and not counts_toward_target(last))
        if pending and not busy and not covered:
            out.append(Replay(batch, tuple(t.number for t in places),
                              tuple(t.user_attrs[records.CONFIG] for t in places),
                              places[0].user_attrs[records.SEED]))
    return out


def replayed_twice(trials: Sequence[FrozenTrial], mine: set[int], continuing: Container[int]
                   ) -> bool:
    """Whether another worker goes on with the same lost places (``continuing``) from the
    start too, with trials that carry them and the first of which is numbered before all of
    ``mine``: two workers that see a batch lost at one moment both make its trials, and the
    lower trial number keeps it (there is no file whose rename decides it)."""
    first = min(mine)
    return any(t.number < first and continued(t) in continuing and carries(t)
               for t in trials)


def owed(trials: Sequence[FrozenTrial], checkpointed: Container[int] = ()
         ) -> list[FrozenTrial]:
    """The lost trials (:func:`lost`) that no trial carries on yet and that no checkpoint
    nor replay of their batch will (a trial of an older dropsweep, recorded without its
    batch's seed): each is owed a run from the start with its configuration, oldest first,
    before anything new is asked."""
    carried = {continued(t) for t in trials if carries(t)}
    by_number = {t.number: t for t in trials}
    return [t for t in trials if lost(t) and t.number not in carried
            and not goes_on(t, by_number, checkpointed)]


def run_again_twice(study: optuna.Study, trial: optuna.Trial, number: int) -> bool:
    """Whether a lower-numbered trial already carries lost trial ``number`` on: two workers
    that see it lost at one moment both queue it again, and the lower trial number keeps it
    (as :func:`planned_twice`)."""
    return any(t.number < trial.number and continued(t) == number and carries(t)
               for t in study.get_trials(deepcopy=False))


def retry_attrs(trial: FrozenTrial) -> dict[str, Any]:
    """The system attributes of the trial that runs lost ``trial`` again, as Optuna's
    ``RetryHeartbeatStaleTrialCallback`` writes them."""
    history = trial.system_attrs.get(records.RETRY_HISTORY)
    first = trial.system_attrs.get(records.FAILED_TRIAL, trial.number)
    return {records.FAILED_TRIAL: first,
            records.RETRY_HISTORY: [*(history if isinstance(history, list) else []),
                                    trial.number]}


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


def dropped(trial: FrozenTrial) -> bool:
    """Given up before it trained because another trial took its place first: a planned
    configuration, or a lost batch, that two workers went on with at once (dropped before
    its role was written), a lost trial queued again twice, a surplus trial."""
    attrs = trial.user_attrs
    return (trial.state == TrialState.FAIL and attrs.get(records.INTERRUPTED) is True
            and records.BATCH not in attrs and attrs.get(records.FAIL_REASON) != WORKER_DIED
            and (attrs.get(records.FAIL_REASON) == records.SURPLUS
                 or records.ROLE not in attrs or retry_of(trial) is not None))


def had_a_turn(trial: FrozenTrial) -> bool:
    """Whether ``trial`` counts toward the ordinals of the trials after it (a trial's place
    in a run never stopped: its sampler's and its batch's seeds): it fills a place, is
    queued to, or was dropped for another that did (it filled one when it was asked, and
    still does for a worker that looked then: two workers asking at once are told apart).
    A trial lost to a stop or a dead worker has no turn: the trial that goes on with it
    has, in its place."""
    return fills_a_place(trial) or trial.state == TrialState.WAITING or dropped(trial)


def planned_twice(study: optuna.Study, trial: optuna.Trial, config: dict) -> bool:
    """Whether a lower-numbered trial already settles this planned configuration: two
    workers that plan the same grid point at once both ask; the lower trial number keeps it."""
    return any(t.number < trial.number and settles(t)
               and t.user_attrs.get(records.CONFIG) == config
               for t in study.get_trials(deepcopy=False))


def abandon(study: optuna.Study, trial: optuna.Trial, reason: str | None = None) -> bool:
    """End a trial that will not be a result (interrupted, or surplus: ``reason``): FAIL,
    marked so. Whether it could be marked (not when already finished, or the storage itself
    failed)."""
    try:
        trial.set_user_attr(records.INTERRUPTED, True)
        if reason is not None:
            trial.set_user_attr(records.FAIL_REASON, reason)
        study.tell(trial, state=TrialState.FAIL)
        return True
    except Exception:
        return False


def beat(study: optuna.Study, trials: Sequence[optuna.Trial]) -> None:
    storage = optuna_private.study_storage(study)  # Optuna's heartbeat API lives on it
    if optuna_private.heartbeat_enabled(storage):
        for trial in trials:
            storage.record_heartbeat(optuna_private.trial_id(trial))


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
    queued. Each fails with its reason ("interrupted: worker died") and marked interrupted,
    in the one write that fails it (a paused worker that records its result at that moment
    records it, or finds it failed: never a result with that reason); they do not count,
    and their configurations run again."""
    storage = optuna_private.study_storage(study)
    stale: list[int] = []
    if optuna_private.heartbeat_enabled(storage):  # Optuna's check
        stale = optuna_private.stale_trial_ids(storage, optuna_private.study_id(study))
    cutoff = datetime.datetime.now() - datetime.timedelta(seconds=grace)  # Optuna: naive local
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        if t.state == TrialState.RUNNING:
            orphan = (records.ROLE not in t.user_attrs and t.datetime_start is not None
                      and t.datetime_start < cutoff)
        else:
            enqueued = t.user_attrs.get(records.ENQUEUED)
            orphan = (enqueued is not None and datetime.datetime.fromisoformat(enqueued)
                      < now_utc() - datetime.timedelta(seconds=grace))
        if orphan:
            stale.append(optuna_private.trial_id(t))
    _fail_died(study, list(dict.fromkeys(stale)))


def _fail_died(study: optuna.Study, trial_ids: list[int]) -> None:
    """FAIL these trials with the reason their worker died, each unless another worker
    failed (or its own recorded) it first."""
    if not trial_ids:
        return
    attrs = {records.INTERRUPTED: True, records.FAIL_REASON: records.WORKER_DIED}
    batched = trialio.finishes(study)
    if batched is not None:
        batched.finish_trials([TrialEnd(i, attrs, None, TrialState.FAIL, None)
                               for i in trial_ids])
        return
    storage = optuna_private.study_storage(study)
    for trial_id in trial_ids:
        try:
            for key, value in attrs.items():
                storage.set_trial_user_attr(trial_id, key, value)
            storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
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
            abandon(study, trial, records.SURPLUS)
    return kept


def wait(stop: Callable[[], bool], seconds: float) -> None:
    """Sleep up to ``seconds``, waking early when ``stop()`` turns true."""
    end = time.monotonic() + seconds
    while not stop() and time.monotonic() < end:
        time.sleep(0.1)
