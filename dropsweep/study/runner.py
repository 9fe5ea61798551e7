"""The search: one worker's ask -> train -> record loop (``_Search``), and
:func:`run_search` and :func:`open_search`, which the CLI calls.

The loop is written around Optuna's ask/tell interface (not ``study.optimize``) so that it
can ask for several trials, train them as one batch and tell each its own result. A study
remembers the sweep it was made with: resuming with another experiment is refused, and
``--trials N`` always means the study's total number of finished trials.

What the loop leans on lives beside it, one concept a module: a batch trained and recorded
(:mod:`~dropsweep.study.batch`), lost batches gone on with (:mod:`~dropsweep.study.resume`),
the summary and its events (:mod:`~dropsweep.study.summary`), how many trials fit in memory
(:mod:`~dropsweep.study.memory_fit`) and where checkpoints live
(:mod:`~dropsweep.study.checkpoint_dirs`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from dropsweep import records
from dropsweep.data.dataset import Dataset, rows_record
from dropsweep.data.protocols import Folds, folds_of
from dropsweep.errors import StorageFailure
from dropsweep.storage import GRACE_BEATS, heartbeat_seconds, mask_url, trialio
from dropsweep.study import balance, liveness
from dropsweep.study.ask import ask_next
from dropsweep.study.batch import Batch, taken_notice
from dropsweep.study.checkpoint_dirs import checkpoint_root, storage_name
from dropsweep.study.memory_fit import batch_that_fits
from dropsweep.study.open import (ordinal, prepare_study, pruning_warmup, study_uid,
                                  sweep_fingerprint, trial_seed)
from dropsweep.study.resume import Resumed, Resuming
from dropsweep.study.stop import StopFlag, at_once, deferred
from dropsweep.study.summary import SearchEvents, SearchSummary, summarize
from dropsweep.sweep.config import Sweep
from dropsweep.sweep.space import Config, is_exhaustive, planned_configs, space_of
from dropsweep.train import checkpoints
from dropsweep.train.devices import resolve_device

# Trials trained together by default: measured with benchmarks/trial_speed.py (README).
AUTO_BATCH = 16


# ----------------------------------------------------------------------------- the search


def open_search(sweep: Sweep, *, storage_url: str, study_name: str | None = None,
                trials: int | None = None, rows: dict | None = None,
                notice: Callable[[str], None] | None = None
                ) -> tuple[optuna.Study, SearchSummary]:
    """Create the study or check that it holds this experiment, on these ``rows``
    (:func:`dropsweep.data.dataset.rows_record`); count what it has."""
    name = study_name or sweep.name
    target = trials if trials is not None else sweep.search.trials
    if is_exhaustive(sweep):
        target = min(target, len(planned_configs(sweep)))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = prepare_study(sweep, storage_url, name, rows, notice)
    summary = SearchSummary(study_name=name, storage=mask_url(storage_url), target=target,
                            finished_before=0)
    summarize(study, summary)
    summary.finished_before = summary.finished
    return study, summary


def run_search(
    sweep: Sweep,
    dataset: Dataset,
    *,
    storage_url: str,
    study_name: str | None = None,
    trials: int | None = None,
    device: str = "cpu",
    batch: int = 1,
    events: SearchEvents | None = None,
    stop: StopFlag | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: float = checkpoints.DEFAULT_EVERY,
) -> SearchSummary:
    """Run the study up to its target number of finished trials; resume if it exists.

    Up to ``batch`` trials are asked at once (TPE's constant liar keeps them apart) and
    trained together as one batched model, each pruned on its own. Other workers (processes
    or machines) may run the same study at the same time.

    A batch is checkpointed every ``checkpoint_every`` seconds of training (0: never) into
    the study's checkpoint directory (``checkpoint_dir``, else the one the study recorded
    when it was first written to, else :func:`~dropsweep.study.checkpoint_dirs.default_checkpoints`); batches whose trials
    were killed or stopped go on from their last checkpoint.
    """
    events = events or SearchEvents()
    stop = stop or StopFlag()
    dev = resolve_device(device)
    folds = folds_of(dataset, sweep, sweep.cv.seed, dev)
    fits = batch_that_fits(sweep, dataset, batch, dev)
    study, summary = open_search(sweep, storage_url=storage_url, study_name=study_name,
                                 trials=trials, rows=rows_record(dataset),
                                 notice=events.notice)
    if folds.k == 1 and records.VALIDATION_ROWS not in study.user_attrs:
        study.set_user_attr(records.VALIDATION_ROWS, int(folds.n_test[0]))
    saves = checkpoint_root(study, storage_url, checkpoint_dir)
    owner = checkpoints.Owner(study_uid(study), study.study_name, storage_name(storage_url),
                              sweep_fingerprint(study.user_attrs[records.STUDY_SWEEP]))
    if events.on_start:
        events.on_start(summary)
    if fits < batch:
        events.notice(f"training {fits} trials at a time, not {batch}: more would not fit "
                      "in memory")
    with at_once(stop):  # a second Ctrl-C: the trials held are given back, the rest kept
        _Search(study, summary, sweep, folds, fits, events, stop, saves,
                checkpoint_every, owner).run()
    summary.stopped_by = stop.signal
    summarize(study, summary)
    return summary


class _Search(Resuming):
    """The ask -> train -> record loop of one worker, with the trials it holds at any moment:
    those are what it must give back (marked interrupted) when it stops or fails, and what
    its heartbeat beats for, from their ask to their tell.

    Each round goes on with lost batches first (:class:`~dropsweep.study.resume.Resuming`,
    mixed in), else asks a new batch; each batch trains and is recorded as a
    :class:`~dropsweep.study.batch.Batch`."""

    def __init__(self, study: optuna.Study, summary: SearchSummary, sweep: Sweep,
                 folds: Folds, batch: int, events: SearchEvents, stop: StopFlag,
                 saves: Path | None = None,
                 every: float = checkpoints.DEFAULT_EVERY,
                 owner: checkpoints.Owner | None = None) -> None:
        self.study, self.summary, self.sweep, self.folds = study, summary, sweep, folds
        self.batch, self.events, self.stop = batch, events, stop
        # the study's checkpoint files (None: no checkpoints), under the recorded root
        self.root, self.every, self.owner = saves, every, owner
        self.saves = None
        if saves is not None:
            assert owner is not None, "checkpoints need their owner"
            self.saves = checkpoints.study_dir(saves, study.study_name, owner.study_uid)
        # checkpoint files this worker found to be another study's: never looked at again
        self.passed: set[str] = set()
        self.warmup = pruning_warmup(sweep.train.epochs, sweep.train.eval_every)
        self.space, self.planned = space_of(sweep), planned_configs(sweep)
        self.seconds = heartbeat_seconds()
        # the trials asked by this worker and not yet told, beating
        self.held = liveness.Heartbeat(study, [], self.seconds)
        self.settled: set[int] = set()  # planned configurations settled for good (by index)
        self.dropped = 0  # trials the last ask dropped as surplus
        self.asks_dropped = 0  # asks in a row whose every trial was dropped
        # the trials running (or queued) when this worker began, whose workers may have died
        # (None: not looked at yet); see _waits_for_the_dead
        self.suspects: set[int] | None = None
        self.started = time.monotonic()

    def run(self) -> None:
        """Batches until the study holds its target (or a stop). Any error gives back the
        trials held; a failing storage says how many it could give back."""
        with self.held:
            try:
                while not self.stop() and self.summary.finished < self.summary.target:
                    if not self._one_batch():
                        break
            except BaseException as exc:
                # No trial may stay RUNNING, or a resume would wait for it until it goes stale.
                held, marked = self.held.give_back()
                if isinstance(exc, StorageFailure) and held:
                    raise StorageFailure(exc.message + (
                        f"; {marked} of the {held} trials this worker was running are "
                        "marked interrupted" if marked else
                        f"; the {held} trials this worker was running could not be "
                        f"marked interrupted: they run again once they have gone "
                        f"{GRACE_BEATS * self.seconds} s without a heartbeat")) from exc
                raise
            # Stopped with trials asked and not trained (the rest of an ask): give them back,
            # as a stop gives back a batch in training.
            self.held.give_back()

    def _one_batch(self) -> bool:
        """Ask, train and record one batch; False when there is nothing left to plan."""
        study, summary = self.study, self.summary
        liveness.fail_stale(study, grace=GRACE_BEATS * self.seconds)
        trials = study.get_trials(deepcopy=False)
        summarize(study, summary, trials)  # others' progress too, once a batch
        if summary.finished >= summary.target:
            return False
        if self._waits_for_the_dead(trials):
            liveness.wait(self.stop, min(self.seconds, 1.0))
            return True
        # in flight: running, or queued by a planner (ours, another worker's, or a dead one's)
        running = sum(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)
        with deferred(self.stop):  # each trial made is held before a Ctrl-C lands
            going = self._resume(trials)
        summary.states["RUNNING"] = summary.states.get("RUNNING", 0) + sum(
            trial is not None for asked, _ in going for trial, _ in asked)
        for i, (asked, resumed) in enumerate(going):
            if i and self.stop():
                break  # the rest stay held: given back as a stopped batch is
            self._train(asked, resumed=resumed)
        if going:
            return True
        try:
            with deferred(self.stop):  # each trial asked is held before a Ctrl-C lands
                asked = self._ask_batch(min(self.batch,
                                            summary.target - summary.finished - running))
            summary.states["RUNNING"] = summary.states.get("RUNNING", 0) + len(asked)
        except optuna.exceptions.UpdateFinishedTrialError:
            # paused while asking: a trial being set up was failed as stale meanwhile
            self.held.give_back()
            self.events.notice(taken_notice("a trial this worker was setting up", 1,
                                             self.seconds))
            return True
        if not asked:
            # Counted afresh: the count above predates this ask, and another worker asking at
            # the same moment may have taken the last places (ours dropped as surplus) and be
            # training them now; stopping then would leave the study short of its target.
            running = len(study.get_trials(deepcopy=False,
                                           states=(TrialState.RUNNING, TrialState.WAITING)))
            if running == 0:
                if self.dropped and self.asks_dropped < self.DROPPED_ASKS:
                    self.asks_dropped += 1  # dropped trials settle what they asked: ask anew
                    return True
                if summary.finished < summary.target:  # never short of it without a word
                    self.events.notice(
                        f"the study stops at {summary.finished} of its {summary.target} "
                        "trials: nothing more could be asked (every trial asked was dropped "
                        "as surplus, or every planned configuration is settled)")
                return False
            # Other workers run the rest (or died: their trials go stale and come back).
            liveness.wait(self.stop, min(self.seconds, 2.0))
            summarize(study, summary)
            return True
        self.asks_dropped = 0
        for i, group in enumerate(self._groups(asked)):
            if i and self.stop():
                break  # the rest stay held: given back as a stopped batch is
            self._train(group)
        return True

    def _waits_for_the_dead(self, trials: list[FrozenTrial]) -> bool:
        """Whether to wait before anything else: trials were running when this worker began
        and still are, and it cannot yet tell whether their worker died (a rerun after kill
        -9) or is alive. Asking new trials meanwhile would propose, and train, other
        configurations than the run it replaces (the sampler sees them running, and they
        fill places); once they are failed as stale they go on as their batch, first. A
        live worker's trials beat: past the grace, those still running are its, and this
        worker goes on alongside (or as soon as they finish)."""
        unfinished = {t.number for t in trials
                      if t.state in (TrialState.RUNNING, TrialState.WAITING)}
        if self.suspects is None:
            self.suspects = unfinished
        self.suspects &= unfinished
        if time.monotonic() - self.started > (GRACE_BEATS + 1) * self.seconds:
            self.suspects.clear()
        return bool(self.suspects)

    # Asks in a row whose every trial is dropped as surplus before the search gives up: each
    # drop settles what it asked (liveness.carries), so the next ask differs; a bound keeps
    # a case no one foresaw from asking for ever.
    DROPPED_ASKS = 3

    def _ask_batch(self, wanted: int) -> list[tuple[optuna.Trial, Config]]:
        """Up to ``wanted`` new trials, held from their ask, each with the batch's seed."""
        asked: list[tuple[optuna.Trial, Config]] = []
        study, target = self.study, self.summary.target
        checkpointed = self._checkpointed() if wanted > 0 else frozenset()
        # One read of the study serves the batch's asks, which see their own trials as they
        # write them (trialio); others' asks of the moment are settled by drop_surplus.
        with trialio.holding(study):
            for _ in range(max(wanted, 0)):
                # other workers may have asked for the rest meanwhile
                full = (lambda: liveness.taken(study) >= target) if asked else None
                pair = ask_next(study, self.sweep, self.space, self.planned, self.settled,
                                full, self.held, checkpointed)
                if pair is None:
                    break
                asked.append(pair)
        kept = liveness.drop_surplus(self.study, asked, target)
        kept = balance.keep_shares(self.study, kept, target)  # balanced: shares settled alike
        self.dropped = len(asked) - len(kept)
        for trial, _ in asked:
            if all(trial is not k for k, _ in kept):
                self.held.discard(trial)  # abandoned: surplus
        # each batch's random stream (weights, masks, row order), from the ordinal of its
        # first trial that stands (what a run never stopped numbers it: a rerun after a stop
        # trains what it would have trained), read afresh (two workers' batches apart), and
        # its name (its checkpoint file's), that trial's number
        standing = study.get_trials(deepcopy=False) if kept else []
        with trialio.holding(study):
            for group in self._groups(kept):
                first = group[0][0].number
                seed = trial_seed(self.sweep.search.seed, ordinal(standing, first))
                for trial, _ in group:
                    trialio.set_user_attrs(trial, {records.SEED: seed, records.BATCH: first})
        return kept

    def _groups(self, asked: list[tuple[optuna.Trial, Config]]
                ) -> list[list[tuple[optuna.Trial, Config]]]:
        """The trials asked, as the batches they train in: one per ``Family.batch_key``
        (an optimizer's), in order of first ask (a batch mixing optimizers would run both
        update rules on every model)."""
        return [[asked[i] for i in group]
                for group in self.sweep.family.batches([config for _, config in asked])]

    def _train(self, asked: list[tuple[optuna.Trial | None, Config]],
               resumed: Resumed | None = None) -> None:
        """Train the batch and record its results (:class:`Batch`). ``resumed``: the
        batch goes on from that checkpoint; its places without a trial (None) were recorded
        before the stop: they train on, so that the batch computes what it computed, but
        nothing of them is reported or recorded again. A batch that runs out of device
        memory trains in halves (:mod:`dropsweep.train.retry`), each from the start with its
        own checkpoints."""
        Batch(self, asked, resumed).run()


