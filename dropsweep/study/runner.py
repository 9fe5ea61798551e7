"""The study: storage, sampler, pruner, and the ask/tell loop that trains trials.

The loop is written around Optuna's ask/tell interface (not ``study.optimize``) so that it
can ask for several trials, train them as one batch and tell each its own result. A study
remembers the sweep it was made with: resuming with another experiment is refused, and
``--trials N`` always means the study's total number of finished trials.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from dropsweep import records

from dropsweep.study import balance

from dropsweep.train import checkpoints

from dropsweep.study import liveness

from dropsweep.train import memory

from dropsweep.train import retry
from dropsweep.study.ask import ask_next
from dropsweep.sweep.config import Sweep
from dropsweep.data.dataset import Dataset, rows_record
from dropsweep.train.devices import (oom_failure, out_of_memory, release_cached_memory,
                               resolve_device)
from dropsweep.errors import StorageFailure
from dropsweep.data.protocols import Folds, folds_of
from dropsweep.storage.results import record_batch
from dropsweep.answers.rows import best_first, better
from dropsweep.sweep.space import Config, is_exhaustive, planned_configs, space_of
from dropsweep.study.liveness import counts_toward_target
from dropsweep.storage.open import GRACE_BEATS, heartbeat_seconds
from dropsweep.storage.urls import mask_url, sqlite_path
from dropsweep.study.open import (PRUNE_STARTUP_TRIALS, ordinal, prepare_study, pruning_warmup,
                             study_uid, sweep_fingerprint, trial_seed)
from dropsweep.train.hooks import TrainHooks
from dropsweep.train.loop import TrialResult
from dropsweep.storage import optuna_private, trialio
from dropsweep.study.stop import (StopFlag, at_once, deferred,  # noqa: F401 - the CLI's too
                                  stop_on_signals)

# Trials trained together by default: measured with benchmarks/trial_speed.py (README).
AUTO_BATCH = 16


# ----------------------------------------------------------------------------- the search


@dataclass
class SearchSummary:
    """What one ``dropsweep search`` invocation did, for the CLI to print."""

    study_name: str
    storage: str  # masked
    target: int
    finished_before: int
    finished: int = 0  # finished trials in the study now
    ran: int = 0  # trials this invocation finished
    best_value: float | None = None
    best_number: int | None = None
    stopped_by: int | None = None  # signal number when interrupted
    states: dict[str, int] = field(default_factory=dict)


@dataclass
class SearchEvents:
    """Hooks the CLI uses to draw progress; all optional."""

    on_start: Callable[[SearchSummary], None] | None = None
    on_trial: Callable[[SearchSummary, FrozenTrial], None] | None = None
    on_notice: Callable[[str], None] | None = None  # one line the user should read
    # the training batch's progress: (epochs done, a float, of epochs; trials in the batch)
    on_epochs: Callable[[float, int, int], None] | None = None

    def notice(self, text: str) -> None:
        if self.on_notice:
            self.on_notice(text)


def _summarize(study: optuna.Study, summary: SearchSummary,
               trials: list[FrozenTrial] | None = None) -> None:
    """``summary`` counted from the storage (or from ``trials``, just read)."""
    if trials is None:
        trials = study.get_trials(deepcopy=False)
    summary.finished = sum(counts_toward_target(t) for t in trials)
    summary.states = {}
    for t in trials:
        summary.states[t.state.name] = summary.states.get(t.state.name, 0) + 1
    ranked = best_first(trials, study.direction)
    if ranked:
        summary.best_value, summary.best_number = ranked[0].value, ranked[0].number


def _tally(summary: SearchSummary, was: TrialState, told: FrozenTrial,
           direction: optuna.study.StudyDirection) -> None:
    """``summary`` after this worker told one of its trials: what :func:`_summarize` would
    count now, as far as this worker's trials go, without reading the study again."""
    summary.states[was.name] = summary.states.get(was.name, 0) - 1
    if summary.states[was.name] <= 0:
        del summary.states[was.name]
    summary.states[told.state.name] = summary.states.get(told.state.name, 0) + 1
    summary.finished += counts_toward_target(told)
    if best_first([told]) and (summary.best_number is None or better(
            (told.value, told.number), (summary.best_value, summary.best_number), direction)):
        summary.best_value, summary.best_number = told.value, told.number


def batch_that_fits(sweep: Sweep, dataset: Dataset, batch: int, device: torch.device,
                    workers: int = 1) -> int:
    """``batch``, or the fewer trials that fit in ``device``'s memory beside ``workers - 1``
    other workers on that device; a trial that cannot fit at all is a one-line error naming the key.
    Checked before anything is written to the storage."""
    need = sweep.family.need(sweep.sections, dataset, sweep.splits)
    free = memory.available(device)
    share = None if free is None else free // workers
    return memory.fit_batch(need, batch, share, file=sweep.file, device=str(device))


def worker_batches(sweep: Sweep, dataset: Dataset, batch: int, devices: Sequence[str]
                   ) -> list[int]:
    """Each worker's batch (one device name a worker): what fits in its device's free
    memory shared with the other workers on that device only, not with those on other GPUs."""
    sharing = Counter(devices)
    fits = {name: batch_that_fits(sweep, dataset, batch, torch.device(name), count)
            for name, count in sharing.items()}
    return [fits[name] for name in devices]


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
    _summarize(study, summary)
    summary.finished_before = summary.finished
    return study, summary


def watcher(study: optuna.Study, summary: SearchSummary, events: SearchEvents
            ) -> Callable[[], None]:
    """A callable that refreshes ``summary`` from the storage and reports trials that other
    processes finished since the last call (the parent of ``--workers`` draws with it)."""
    seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}

    def watch() -> None:
        _summarize(study, summary)
        summary.ran = summary.finished - summary.finished_before
        for t in study.get_trials(deepcopy=False):
            if t.state.is_finished() and t.number not in seen:
                seen.add(t.number)
                if events.on_trial:
                    events.on_trial(summary, t)

    return watch


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
    when it was first written to, else :func:`default_checkpoints`); batches whose trials
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
    _summarize(study, summary)
    return summary


def default_checkpoints(storage_url: str) -> Path:
    """Beside an SQLite file (``results/checkpoints``); for a server, ``results/checkpoints``
    here: workers on other machines need a shared directory (``--checkpoints``)."""
    from dropsweep.storage.urls import sqlite_path

    path = sqlite_path(storage_url)
    return (path.parent if path is not None else Path("results")).resolve() / "checkpoints"


def storage_name(url: str) -> str:
    """The storage as a checkpoint names its owner's: the masked URL, an SQLite file by its
    absolute path (one file, whatever directory a worker runs in). Workers of one study give
    it one URL (the same command): a file written under another spelling is refused."""
    path = sqlite_path(url)
    return mask_url(url) if path is None else f"sqlite:///{path.resolve()}"


def checkpoint_root(study: optuna.Study, storage_url: str, given: str | Path | None) -> Path:
    """The study's checkpoint directory: ``given``, else the one it recorded, else the
    default. It is recorded when a checkpoint is first written there
    (:func:`record_checkpoints`): a study whose batches are short records nothing."""
    recorded = study.user_attrs.get(records.CHECKPOINTS)
    if given is not None:
        return Path(given).resolve()
    return Path(recorded) if recorded else default_checkpoints(storage_url)


def record_checkpoints(study: optuna.Study, root: Path) -> None:
    """Record ``root`` with the study, where every worker that resumes will look."""
    if study.user_attrs.get(records.CHECKPOINTS) != str(root):
        study.set_user_attr(records.CHECKPOINTS, str(root))


@dataclass(frozen=True)
class _Lost:
    """A lost batch a worker could go on with: from its checkpoint file (``item``), else
    from its start (``replay``); ``roots``, in order: the trials first asked in its places
    (whose order its new trials keep)."""

    roots: tuple[int, ...]
    item: checkpoints.Found | None = None
    replay: liveness.Replay | None = None


@dataclass
class _Plan:
    """How a lost batch goes on: its header and state (a checkpoint's ``payload``, or a
    replay's header), its claimed file (None: from its start), whether it trains from the
    start (``fresh``) and whether its file is retired by the batch's own."""

    payload: dict[str, Any]
    claim: checkpoints.Found | None
    fresh: bool
    retire: bool


@dataclass
class _Resumed:
    """A batch going on: claimed from a checkpoint (its file, renamed to the claim, and
    state), or lost with none and gone on with from its start (no claim, no state)."""

    claim: checkpoints.Found | None
    state: dict[str, Any]
    seed: int
    fresh: bool = False  # its state cannot be gone on from: the batch trains from the start
    retire: bool = True  # the file is superseded by the batch's own (not one set aside)
    # its places recorded for good before the stop (by index): they train along, and one
    # that was pruned stops where it was pruned, so the batch computes what it computed
    recorded: dict[int, FrozenTrial] = field(default_factory=dict)


class _Search:
    """The ask -> train -> record loop of one worker, with the trials it holds at any moment:
    those are what it must give back (marked interrupted) when it stops or fails, and what
    its heartbeat beats for, from their ask to their tell.

    Where the next batch cannot depend on the results of the one training (see
    :meth:`_asks_ahead`), it can be asked in a background thread meanwhile (``ASK_AHEAD``):
    the C kernel and torch release the GIL while they compute."""

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
        # the trials asked by this worker and not yet told, beating (a batch asked ahead adds to it)
        self.held = liveness.Heartbeat(study, [], self.seconds)
        self.settled: set[int] = set()  # planned configurations settled for good (by index)
        self.ahead: _Ahead | None = None  # the next batch, being asked
        self.cancelled = threading.Event()  # stop asking ahead: an error ends the search
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
                self.cancelled.set()
                self._finish_ahead()
                held, marked = self.held.give_back()
                if isinstance(exc, StorageFailure) and held:
                    raise StorageFailure(exc.message + (
                        f"; {marked} of the {held} trials this worker was running are "
                        "marked interrupted" if marked else
                        f"; the {held} trials this worker was running could not be "
                        f"marked interrupted: they run again once they have gone "
                        f"{GRACE_BEATS * self.seconds} s without a heartbeat")) from exc
                raise
            # Stopped (or done) with a batch asked ahead: give it back, as a stop gives back
            # a batch in training.
            self._finish_ahead()
            self.held.give_back()

    def _one_batch(self) -> bool:
        """Ask, train and record one batch; False when there is nothing left to plan."""
        study, summary = self.study, self.summary
        liveness.fail_stale(study, grace=GRACE_BEATS * self.seconds)
        trials = study.get_trials(deepcopy=False)
        _summarize(study, summary, trials)  # others' progress too, once a batch
        if summary.finished >= summary.target:
            return False
        if self._waits_for_the_dead(trials):
            liveness.wait(self.stop, min(self.seconds, 1.0))
            return True
        # in flight: running, or queued by a planner (ours, another worker's, or a dead one's)
        running = sum(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)
        if self.ahead is None:
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
            if self.ahead is not None:  # asked while the last batch trained: in `running`
                ahead, self.ahead = self.ahead, None
                asked = ahead.take()
            else:
                with deferred(self.stop):  # each trial asked is held before a Ctrl-C lands
                    asked = self._ask_batch(min(self.batch,
                                                summary.target - summary.finished - running))
                running += len(asked)
                summary.states["RUNNING"] = summary.states.get("RUNNING", 0) + len(asked)
        except optuna.exceptions.UpdateFinishedTrialError:
            # paused while asking: a trial being set up was failed as stale meanwhile
            self.held.give_back()
            self.events.notice(_taken_notice("a trial this worker was setting up", 1,
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
            _summarize(study, summary)
            return True
        self.asks_dropped = 0
        wanted = min(self.batch, summary.target - summary.finished - running)
        ask_ahead: Callable[[], None] | None = None
        if wanted > 0 and self._asks_ahead():
            def start_asking() -> None:
                self.ahead = _Ahead(lambda: self._ask_batch(wanted, ahead=True))
            ask_ahead = start_asking
        groups = self._groups(asked)
        for i, group in enumerate(groups):
            if i and self.stop():
                break  # the rest stay held: given back as a stopped batch is
            self._train(group, ask_ahead if i == len(groups) - 1 else None)
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

    # Asking ahead works (tests/test_runner.py) but, measured on this project's 2-core CPU,
    # makes a sweep slower: the training loop takes the GIL back several times an epoch
    # (torch's small operations, the kernel's thread dispatch) and a thread asking Optuna
    # delays it each time, so training slows by more than the asking it hides (README,
    # "Speed"; benchmarks/sweep_overhead.py --parts c). Off until a machine where it pays.
    ASK_AHEAD = False

    # Asks in a row whose every trial is dropped as surplus before the search gives up: each
    # drop settles what it asked (liveness.carries), so the next ask differs; a bound keeps
    # a case no one foresaw from asking for ever.
    DROPPED_ASKS = 3

    def _asks_ahead(self) -> bool:
        """Whether to ask the next batch now: only where that proposes exactly what asking
        it after this one would. A random sampler draws its points in order whatever the
        results, and planned configurations (lists, grids) come in order, a running trial
        settling its own; but not while the baseline could fail and have to run again first.
        Samplers that learn from results (TPE, CMA-ES, QMC's first point) would propose
        other points."""
        order_only = self.sweep.search.sampler == "random" or is_exhaustive(self.sweep)
        return self.ASK_AHEAD and order_only and 0 in self.settled

    def _ask_batch(self, wanted: int, ahead: bool = False
                   ) -> list[tuple[optuna.Trial, Config]]:
        """Up to ``wanted`` new trials, held from their ask, each with the batch's seed;
        ``ahead``: asked while another batch trains, so a stop ends the asking."""
        asked: list[tuple[optuna.Trial, Config]] = []
        study, target = self.study, self.summary.target
        checkpointed = self._checkpointed() if wanted > 0 else frozenset()
        # One read of the study serves the batch's asks, which see their own trials as they
        # write them (trialio); others' asks of the moment are settled by drop_surplus.
        with trialio.holding(study):
            for _ in range(max(wanted, 0)):
                if ahead and (self.stop() or self.cancelled.is_set()):
                    break
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

    def _checkpointed(self) -> frozenset[int]:
        """The batches with a checkpoint file to go on from, written or claimed (not one
        found to be another study's): their trials go on from it, and are not run again
        from the start."""
        if self.saves is None:
            return frozenset()
        return frozenset(item.batch for item in checkpoints.found(self.saves)
                         if item.path.name not in self.passed)

    def _groups(self, asked: list[tuple[optuna.Trial, Config]]
                ) -> list[list[tuple[optuna.Trial, Config]]]:
        """The trials asked, as the batches they train in: one per ``Family.batch_key``
        (an optimizer's), in order of first ask (a batch mixing optimizers would run both
        update rules on every model)."""
        return [[asked[i] for i in group]
                for group in self.sweep.family.batches([config for _, config in asked])]

    def _resume(self, trials: list[FrozenTrial]
                ) -> list[tuple[list[tuple[optuna.Trial | None, Config]], _Resumed]]:
        """The batches whose trials were killed or stopped that this worker goes on with
        now, each with new trials (None in the places of trials already recorded for good:
        pruned or diverged before the stop): from its last checkpoint, claimed; else, with
        none, from its start (:func:`liveness.replays`). The oldest such batch, with those
        asked together with it (one ask's batches, one per optimizer): their new trials
        are numbered in the order of the trials they go on with, as a run never stopped
        numbered them. Empty when there is none. A file whose batch was recorded after all
        is deleted, once it is known to be this study's."""
        by_number = {t.number: t for t in trials}
        for _ in range(3):  # a file refused or set aside: its batch goes on from its start
            refused = len(self.passed)
            lost = sorted(self._lost(trials, by_number), key=lambda lost: lost.roots[0])
            if not lost:
                return []
            chosen, last = [lost[0]], lost[0].roots[-1]
            for other in lost[1:]:  # asked with it: their trials interleave
                if other.roots[0] < last:
                    chosen.append(other)
                    last = max(last, other.roots[-1])
            plans, spoilt = [], False
            for each in chosen:
                plan = self._plan(each, by_number)
                spoilt = spoilt or plan is None
                if plan is not None:
                    plans.append(plan)
            going = self._go_on(plans, by_number) if plans else []
            if going or not (spoilt or len(self.passed) > refused):
                return going
        return []

    def _lost(self, trials: list[FrozenTrial], by_number: dict[int, FrozenTrial]
              ) -> list[_Lost]:
        """The lost batches this worker could go on with now: those with a checkpoint file
        (not one running somewhere, nor a fresh claim whose claimant may still be making its
        trials), then those with none."""
        out: list[_Lost] = []
        if self.saves is not None:
            by_batch: dict[int, list[FrozenTrial]] = {}
            by_claim: dict[str, list[FrozenTrial]] = {}
            for t in trials:
                if records.BATCH in t.user_attrs:
                    by_batch.setdefault(int(t.user_attrs[records.BATCH]), []).append(t)
                went_on = t.user_attrs.get(records.RESUMED)
                if isinstance(went_on, dict) and went_on.get("claim"):
                    by_claim.setdefault(str(went_on["claim"]), []).append(t)
            grace = GRACE_BEATS * self.seconds
            for item in checkpoints.found(self.saves):
                if item.path.name in self.passed:
                    continue  # another study's
                members = (by_claim.get(item.token, []) if item.token
                           else by_batch.get(item.batch, []))
                recorded = bool(members) and all(counts_toward_target(t) for t in members)
                if not recorded and any(not t.state.is_finished() for t in members):
                    continue  # still training somewhere
                if not members and (item.token is None or checkpoints.age(item) < grace):
                    continue  # a claimant that may still be making its trials
                if recorded:
                    taken = self._take(item, by_number)
                    if taken is not None:  # all recorded after all: nothing to go on from
                        checkpoints.remove(taken[0].path)
                    continue
                roots = sorted({liveness.root(t, by_number) for t in members}) or [item.batch]
                out.append(_Lost(tuple(roots), item=item))
        for replay in liveness.replays(trials, self._checkpointed()):
            out.append(_Lost(replay.trials, replay=replay))
        return out

    def _plan(self, lost: _Lost, by_number: dict[int, FrozenTrial]) -> _Plan | None:
        """How ``lost`` goes on: its file claimed, read and checked (None when another worker
        took it first, or it is another study's or unreadable), or its start."""
        if lost.replay is not None:
            return _Plan(lost.replay.payload(), None, fresh=True, retire=False)
        assert lost.item is not None
        taken = self._take(lost.item, by_number)
        if taken is None:
            return None
        mine, payload = taken
        sound = self._sound(lost.item, mine, payload)
        return _Plan(payload, mine, fresh=sound != "sound", retire=sound != "aside")

    def _sound(self, item: checkpoints.Found, mine: checkpoints.Found,
               payload: dict[str, Any]) -> str:
        """Whether the batch can go on from the state in ``payload`` (the study's own,
        :meth:`_take`), every field checked against the batch it names before any trial is
        made for it: "sound"; "elsewhere", made by another engine, device or form; "aside",
        not what the batch would hold (the file is set aside). If not sound, one line says
        why and the batch trains from the start, with its seed: to the numbers it would
        have had."""
        configs = [Config(values) for values in payload["configs"]]
        try:
            self.sweep.family.check_resume(configs, self.folds, self.sweep.sections,
                                           int(payload["seed"]),
                                           TrainHooks(resume=payload["state"],
                                                      on_notice=self.events.notice))
        except checkpoints.Elsewhere as exc:
            self.events.notice(f"checkpoint {item.path} cannot continue here ({exc}): its "
                               "configurations train from the start")
            return "elsewhere"
        except checkpoints.Unusable as exc:
            aside = checkpoints.set_aside(mine, item)
            self.events.notice(f"checkpoint {item.path} cannot be used ({exc}): set aside "
                               f"as {aside.name}; its configurations train from the start")
            return "aside"
        return "sound"

    def _take(self, item: checkpoints.Found, by_number: dict[int, FrozenTrial]
              ) -> tuple[checkpoints.Found, dict[str, Any]] | None:
        """``item`` claimed and read: (the claim, what it holds) when it is this study's.
        None when another worker took it first; when it cannot be read (dropped, with one
        line); or when it is another study's: given back its name, left alone and passed
        over from now on, with one line naming the file and what is not this study's."""
        assert self.owner is not None
        mine = checkpoints.claim(item)
        if mine is None:
            return None  # another worker took it a moment ago
        try:
            payload = checkpoints.read(mine.path)
        except checkpoints.Unusable as exc:
            aside = checkpoints.set_aside(mine, item)
            self.events.notice(f"checkpoint {item.path} cannot be used ({exc}): set aside "
                               f"as {aside.name}; its configurations train from the start")
            return None
        differ = [*self.owner.differences(payload),
                  *_header_differences(payload, item.batch, by_number)]
        if differ:
            checkpoints.give_back(mine, item)
            self.passed.add(item.path.name)
            words = ", ".join(differ[:-1]) + (" and " if len(differ) > 1 else "") + differ[-1]
            self.events.notice(
                f"checkpoint {item.path} is not this study's: it differs in its {words} "
                f"from study '{self.owner.study}' in {self.owner.storage}; left where it "
                "is, and nothing goes on from it")
            return None
        return mine, payload

    def _go_on(self, plans: list[_Plan], old: dict[int, FrozenTrial]
               ) -> list[tuple[list[tuple[optuna.Trial | None, Config]], _Resumed]]:
        """New RUNNING trials for the batches of ``plans``, each in its order, all numbered in
        the order of the trials first asked in their places: each with its predecessor's
        parameters, role and configuration, the learning curve up to the checkpoint (the
        pruner sees the whole curve; a fresh plan: none, the batch trains from the start),
        and where it went on from; None where the predecessor was recorded for good. A batch
        gone on with from its start that another worker went on with at the same moment,
        and keeps, is left out. Any failure gives back what it made."""
        made: list[tuple[optuna.Trial, FrozenTrial]] = []
        try:
            return self._make_trials(plans, old, made)
        except BaseException:
            for trial, _ in made:  # none may stay RUNNING with no one training it
                self.held.discard(trial)
                liveness.abandon(self.study, trial)
            raise

    def _make_trials(self, plans: list[_Plan], old: dict[int, FrozenTrial],
                     made: list[tuple[optuna.Trial, FrozenTrial]]
                     ) -> list[tuple[list[tuple[optuna.Trial | None, Config]], _Resumed]]:
        study = self.study
        storage = optuna_private.study_storage(study)  # a RUNNING trial from a template
        # the last trial that carries each place on: the trial the file names, or (a claim
        # whose claimant died) the one that went on from it
        after = liveness.carriers(list(old.values()))
        asked: list[list[tuple[optuna.Trial | None, Config]]] = []
        recorded: list[dict[int, FrozenTrial]] = []
        todo = []  # (the trial first asked in the place, plan, place, predecessor, its curve)
        for p, plan in enumerate(plans):
            payload = plan.payload
            results = ([{"curve": []}] * len(payload["trials"]) if plan.fresh
                       else payload["state"]["results"])
            asked.append([(None, Config(values)) for values in payload["configs"]])
            recorded.append({})
            for i, (number, result) in enumerate(zip(payload["trials"], results)):
                before = old[number]
                while before.number in after and after[before.number].number > before.number:
                    before = after[before.number]
                if before.state != TrialState.FAIL or counts_toward_target(before):
                    recorded[p][i] = before  # recorded for good before the stop
                    continue
                todo.append((liveness.root(before, old), p, i, before, result["curve"]))
        mine: list[list[tuple[optuna.Trial, FrozenTrial]]] = [[] for _ in plans]
        for _, p, i, before, curve in sorted(todo, key=lambda item: item[:3]):
            plan = plans[p]
            # No role yet: a trial killed before its first beat has none, and liveness
            # fails such a trial once it is older than the grace (Optuna's own stale check
            # skips a trial that never beat). Role and beat come together below.
            attrs = {records.CONFIG: before.user_attrs[records.CONFIG],
                     records.SEED: int(plan.payload["seed"]),
                     records.RESUMED: {
                         "trial": before.number,
                         "epoch": 0 if plan.fresh else int(plan.payload["state"]["epoch"]),
                         "claim": None if plan.claim is None else plan.claim.token}}
            template = FrozenTrial(
                number=-1, state=TrialState.RUNNING, value=None,
                datetime_start=datetime.datetime.now(), datetime_complete=None,
                params=before.params, distributions=before.distributions, user_attrs=attrs,
                system_attrs={}, intermediate_values={int(e): float(v) for e, v in curve},
                trial_id=-1)
            trial_id = storage.create_new_trial(optuna_private.study_id(study),
                                                template_trial=template)
            trial = optuna.Trial(study, trial_id)
            self.held.add([trial])
            made.append((trial, before))
            mine[p].append((trial, before))
            asked[p][i] = (trial, asked[p][i][1])
        going = []
        for p, plan in enumerate(plans):
            if not mine[p]:
                if plan.claim is not None and plan.retire:
                    checkpoints.remove(plan.claim.path)  # every place recorded: nothing left
                continue
            if plan.claim is None and self._replayed_twice(mine[p]):
                for trial, _ in mine[p]:  # before their role and batch: they carry nothing
                    self.held.discard(trial)
                    liveness.abandon(study, trial)
                continue
            liveness.beat(study, [t for t, _ in mine[p]])
            first = mine[p][0][0].number
            with trialio.holding(study):
                for trial, before in mine[p]:
                    trialio.set_user_attrs(trial, {
                        records.BATCH: first, records.ROLE: before.user_attrs[records.ROLE]})
            going.append((asked[p], _Resumed(plan.claim, plan.payload,
                                             int(plan.payload["seed"]), plan.fresh,
                                             plan.retire, recorded[p])))
        return going

    def _replayed_twice(self, made: list[tuple[optuna.Trial, FrozenTrial]]) -> bool:
        """Whether another worker went on with this lost batch from its start at the same
        moment, and keeps it (:func:`liveness.replayed_twice`), read afresh."""
        with trialio.released(self.study):
            now = self.study.get_trials(deepcopy=False)
        return liveness.replayed_twice(now, {t.number for t, _ in made},
                                       {before.number for _, before in made})

    def _finish_ahead(self) -> None:
        """Wait for a batch being asked ahead (it stops asking at a stop); its trials stay
        held, to be given back."""
        if self.ahead is not None:
            ahead, self.ahead = self.ahead, None
            ahead.wait()

    def half_saver(self, trials: list[optuna.Trial],
                    configs: list[Config], seed: int) -> checkpoints.Saver:
        """The checkpointer of a half of a batch that ran out of memory: a file named after
        its first trial, with the half's trials alone, and those trials marked as that batch,
        so that a worker resuming it goes on with them (not with the whole batch's)."""
        first = trials[0].number
        with trialio.holding(self.study):
            for trial in trials:
                trialio.set_user_attrs(trial, {records.BATCH: first})
        assert self.saves is not None and self.owner is not None
        return checkpoints.Saver(
            self.saves / f"{first}{checkpoints.SUFFIX}",
            {**self.owner.header(), "batch": first, "trials": [t.number for t in trials],
             "configs": [dict(c) for c in configs], "seed": seed},
            self.every, first=lambda: record_checkpoints(self.study, self.root),
            on_error=self.events.notice)

    def _train(self, asked: list[tuple[optuna.Trial | None, Config]],
               ask_ahead: Callable[[], None] | None = None,
               resumed: _Resumed | None = None) -> None:
        """Train the batch and record its results (:class:`_Batch`); ``ask_ahead`` is called
        once training runs (not while it sets up: torch's small parallel operations slow
        down many times over when another thread competes for the cores). ``resumed``: the
        batch goes on from that checkpoint; its places without a trial (None) were recorded
        before the stop: they train on, so that the batch computes what it computed, but
        nothing of them is reported or recorded again. A batch that runs out of device
        memory trains in halves (:mod:`dropsweep.train.retry`), each from the start with its
        own checkpoints."""
        _Batch(self, asked, ask_ahead, resumed).run()


class _Batch:
    """One batch in training: its trials and configurations, its checkpointers (the batch's,
    then, out of memory, each half's own), the places it may no longer record (``lost``),
    and what the family's engine calls back as it trains (:meth:`on_checkpoint`,
    :meth:`should_stop`, :meth:`on_progress`)."""

    def __init__(self, search: _Search, asked: list[tuple[optuna.Trial | None, Config]],
                 ask_ahead: Callable[[], None] | None, resumed: _Resumed | None) -> None:
        self.search, self.asked, self.resumed = search, asked, resumed
        self.study, self.sweep = search.study, search.sweep
        self.ask_ahead = ask_ahead
        self.trials = [trial for trial, _ in asked]
        self.configs = [config for _, config in asked]
        self.done_before = {i for i, t in enumerate(self.trials) if t is None}
        self.first = next(t for t in self.trials if t is not None).number
        # as _ask_batch stored it (a resumed batch: the stream it continues)
        self.seed = resumed.seed if resumed else int(
            optuna_private.trial_record(self.trials[0]).user_attrs[records.SEED])  # as set
        saver = self._saver()
        # the checkpointers of the attempts: the batch's, then (out of memory) each half's own
        self.saving: list[checkpoints.Saver] = [] if saver is None else [saver]
        # Asking the pruner costs two storage reads a trial; skip it where its answer is
        # known to be no (no pruner, too few complete trials, still warming up). The
        # baseline is never pruned: every comparison the report makes is against it.
        self.may_prune = (self.sweep.search.pruner != "none"
                          and search.summary.states.get("COMPLETE", 0) >= PRUNE_STARTUP_TRIALS)
        self.prunable = [config != self.sweep.baseline for config in self.configs]
        # a place pruned before the stop, trained along from an earlier state, is stopped at
        # the epoch it was pruned at (as the pruner stopped it then)
        self.pruned_at = {i: max(t.intermediate_values) for i, t in
                          (resumed.recorded.items() if resumed else ())
                          if t.state == TrialState.PRUNED and t.intermediate_values}
        # Trials another worker failed as stale while this one was paused (SIGSTOP, a
        # suspended laptop, a stalled disk): they are no longer ours to record (nor are the
        # places of a resumed batch recorded before its stop).
        self.lost: set[int] = set(self.done_before)

    def _saver(self) -> checkpoints.Saver | None:
        """The batch's checkpointer (None: no checkpoints), a file named after its first
        trial; a resumed batch's supersedes the file it went on from."""
        search, resumed = self.search, self.resumed
        if search.saves is None or search.owner is None:
            return None
        numbers = [resumed.state["trials"][i] if t is None else t.number  # type: ignore[union-attr]
                   for i, t in enumerate(self.trials)]
        return checkpoints.Saver(
            search.saves / f"{self.first}{checkpoints.SUFFIX}",
            {**search.owner.header(), "batch": self.first, "trials": numbers,
             "configs": [dict(config) for config in self.configs], "seed": self.seed},
            search.every,
            resumed=resumed.claim.path if resumed and resumed.retire else None,
            first=lambda: record_checkpoints(self.study, search.root),
            on_error=search.events.notice)

    # ------------------------------------------------------------ what the engine calls

    def on_checkpoint(self, epoch: int, accuracies: list[float | None]) -> list[int]:
        """Report the batch's accuracies at ``epoch``; the places to stop training: taken
        by another worker (their results cannot be recorded), pruned before a stop, or
        pruned now."""
        ask_pruner = self.may_prune and epoch >= self.search.warmup
        values = {i: value for i, value in enumerate(accuracies)
                  if value is not None and i not in self.lost}
        taken = trialio.report_all(self.trials, values, epoch)
        if taken and self.saving:
            self.saving[-1].every = 0.0  # the batch is another worker's to go on with now
        self.lost.update(taken)
        stopped = sorted(taken)  # stop training them: their results cannot be recorded
        stopped += [i for i, at in self.pruned_at.items() if at == epoch]
        for i in values:
            if i in taken:
                continue
            try:
                if ask_pruner and self.prunable[i] and self.trials[i].should_prune():
                    stopped.append(i)
            except optuna.exceptions.UpdateFinishedTrialError:
                self.lost.add(i)
                stopped.append(i)
        return stopped

    def should_stop(self) -> bool:
        """Whether to stop; at the first call (the first epoch begins) the next batch
        starts being asked, if it is asked ahead."""
        if self.ask_ahead is not None:
            start, self.ask_ahead = self.ask_ahead, None
            start()
        return self.search.stop()

    def on_progress(self, epochs: float) -> None:
        events = self.search.events
        if events.on_epochs:
            events.on_epochs(epochs, self.sweep.train.epochs, len(self.asked))

    def _on_part_checkpoint(self, todo: list[int], epoch: int,
                            accuracies: list[float | None]) -> list[int]:
        """:meth:`on_checkpoint` for the places ``todo`` of the batch, indexed as they are."""
        where = {i: j for j, i in enumerate(todo)}
        spread: list[float | None] = [None] * len(self.asked)
        for i, value in zip(todo, accuracies):
            spread[i] = value
        return [where[i] for i in self.on_checkpoint(epoch, spread) if i in where]

    # ------------------------------------------------------------ training and retrying

    def _go(self, todo: list[int], resume: dict[str, Any] | None) -> list[TrialResult]:
        """The family's engine trains the places ``todo``, from ``resume`` if given."""
        return self.sweep.family.train(
            [self.configs[i] for i in todo], self.search.folds, self.sweep.sections, self.seed,
            TrainHooks(on_checkpoint=partial(self._on_part_checkpoint, todo),
                       should_stop=self.should_stop, on_progress=self.on_progress,
                       save=self.saving[-1] if self.saving else None, resume=resume,
                       on_notice=self.search.events.notice))

    def train(self, part: Sequence[int]) -> list[TrialResult]:
        """The places ``part`` of the batch: all of them at first (from the checkpoint it
        resumed, if any); after running out of memory, a half from the start, with its own
        checkpoints, leaving out the places recorded already."""
        whole = len(part) == len(self.asked)
        todo = list(part) if whole else [i for i in part if i not in self.lost]
        if not todo:
            return [TrialResult() for _ in part]  # nothing of them is recorded
        if not whole:
            return self._train_half(part, todo)
        resumed = self.resumed
        if resumed is None or resumed.fresh:
            return self._go(todo, None)
        try:
            return self._go(todo, resumed.state["state"])
        except checkpoints.Unusable as exc:
            # made by another engine (no C compiler here, another device): from epoch 0
            self.search.events.notice(f"batch {resumed.claim.batch}'s checkpoint cannot be "
                                      f"used here ({exc}): its configurations train from the "
                                      "start")
            return self._go(todo, None)

    def _train_half(self, part: Sequence[int], todo: list[int]) -> list[TrialResult]:
        """A half of a batch that ran out of memory: from the start, with its own
        checkpoints; each place's share of the time as the whole batch's would be."""
        if self.saving:
            self.saving.append(self.search.half_saver(
                [self.trials[i] for i in todo], [self.configs[i] for i in todo], self.seed))
        trained = dict(zip(todo, self._go(todo, None)))
        for result in trained.values():  # record_batch gives each 1/len(asked)
            result.wall_time *= len(self.asked) / len(todo)
        return [trained.get(i, TrialResult()) for i in part]  # lost: not recorded

    def before_retry(self, part: Sequence[int], error: BaseException) -> None:
        """A part ran out of memory: its checkpointer is done, memory released, its reports
        forgotten; it trains again in halves."""
        if self.saving:  # it covers the failed attempt, not the halves
            self.saving[-1].every = 0.0
            self.saving[-1].done()
        release_cached_memory()
        trialio.forget_reports([self.trials[i] for i in part if i not in self.lost])
        if len(part) > 1:
            a, b = retry.halves(len(part))
            self.search.events.notice(f"{len(part)} trials ran out of memory on "
                                      f"{self.search.folds.rows.device} trained together: "
                                      f"they train again in halves of {a} and {b}")

    def fail(self, i: int, error: BaseException) -> TrialResult:
        return TrialResult(failure=oom_failure(self.search.folds.rows.device, error))

    # ------------------------------------------------------------ the batch, recorded

    def run(self) -> None:
        """Train (in halves if memory runs out), record, and say which trials were lost."""
        # The pruner compares with the complete trials of one read (renewed once a
        # heartbeat period), not of a read for every trial at every checkpoint.
        with trialio.holding(self.study, max_age=self.search.seconds):
            results = retry.train_in_halves(list(range(len(self.asked))), self.train,
                                            out_of_memory, self.fail, self.before_retry)
        if any(r.interrupted for r in results) and len(self.saving) <= 1:
            # Stopped: the batch goes on as a whole, each place a new trial numbered in its
            # order (what a run never stopped would hold, trial for trial), so what it ended
            # before the stop (pruned, diverged) goes on with it, from its checkpoint or
            # again from its start, and is recorded then, not here.
            for result in results:
                result.interrupted = True
        self._record(results)
        if not any(r.interrupted for r in results):
            for each in self.saving:
                each.done()  # recorded: a stopped batch keeps its checkpoint to go on from
        lost = self.lost - self.done_before
        if lost:
            numbers = ", ".join(f"#{self.trials[i].number}" for i in sorted(lost))
            self.search.events.notice(_taken_notice(
                f"trial{'s' if len(lost) > 1 else ''} {numbers} of this worker", len(lost),
                self.search.seconds))

    def _record(self, results: list[TrialResult]) -> None:
        """Each trial's result, told; each beats until its result is recorded: a worker
        slowed by a locked storage must not see its finished trials failed as stale by
        another."""
        study, summary, events = self.study, self.search.summary, self.search.events
        for i, frozen in record_batch(study, self.trials, results, self.lost):
            self.search.held.discard(self.trials[i])
            if frozen is None:
                continue
            _tally(summary, TrialState.RUNNING, frozen, study.direction)
            if not results[i].interrupted:
                summary.ran += 1
            if events.on_trial:
                events.on_trial(summary, frozen)


class _Ahead:
    """A batch being asked in a background thread while the current one trains."""

    def __init__(self, ask: Callable[[], list[tuple[optuna.Trial, Config]]]) -> None:
        self.asked: list[tuple[optuna.Trial, Config]] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(ask,), daemon=True,
                                       name="dropsweep-ask-ahead")
        self.thread.start()

    def _run(self, ask: Callable[[], list[tuple[optuna.Trial, Config]]]) -> None:
        try:
            self.asked = ask()
        except BaseException as exc:  # raised again where the batch is taken
            self.error = exc

    def wait(self) -> None:
        self.thread.join()

    def take(self) -> list[tuple[optuna.Trial, Config]]:
        """The batch asked (once asking ends), or what went wrong asking it."""
        self.wait()
        if self.error is not None:
            raise self.error
        return self.asked


def _header_differences(payload: dict[str, Any], batch: int,
                        by_number: dict[int, FrozenTrial]) -> list[str]:
    """What of a checkpoint's batch, trials, configurations and seed the study does not
    hold, in words: its batch is the file's (``batch``), and each trial it names exists,
    with that seed, that configuration and that batch — or, a place recorded for good
    before the batch went on from a checkpoint, an earlier trial."""
    trials, configs, seed = payload.get("trials"), payload.get("configs"), payload.get("seed")
    if payload.get("batch") != batch or not isinstance(trials, list) or not trials:
        return ["batch"]
    if not all(type(n) is int and n in by_number for n in trials):
        return ["trials"]
    if (not isinstance(configs, list) or len(configs) != len(trials)
            or not all(isinstance(c, dict) for c in configs)):
        return ["configurations"]
    out = []
    for number, config in zip(trials, configs):
        t = by_number[number]
        if t.user_attrs.get(records.CONFIG) != config and "configurations" not in out:
            out.append("configurations")
        if (type(seed) is not int or t.user_attrs.get(records.SEED) != seed) \
                and "seed" not in out:
            out.append("seed")
        if t.user_attrs.get(records.BATCH) != batch and not (
                number < batch and counts_toward_target(t)) and "batch" not in out:
            out.append("batch")
    return out


def _taken_notice(what: str, count: int, seconds: int) -> str:
    it, its = ("them", "their results") if count > 1 else ("it", "its result")
    return (f"{what} went {GRACE_BEATS * seconds} s without a heartbeat (the process was "
            f"paused or stalled), so another worker failed {it} to run {it} again: {its} "
            "here dropped, this worker goes on")


