"""The study: storage, sampler, pruner, and the ask/tell loop that trains trials.

The loop is written around Optuna's ask/tell interface (not ``study.optimize``) so that it
can ask for several trials, train them as one batch and tell each its own result. A study
remembers the sweep it was made with: resuming with another experiment is refused, and
``--trials N`` always means the study's total number of finished trials.
"""

from __future__ import annotations

import math
import signal
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

import dropsweep
from dropsweep import liveness, memory, records
from dropsweep.config import Sweep
from dropsweep.data import Dataset
from dropsweep.errors import StorageError, StorageFailure, StudyMismatchError
from dropsweep.space import (
    Config,
    Space,
    config_values,
    fixed_distributions,
    is_exhaustive,
    planned_configs,
    space_of,
    suggest,
)
from dropsweep.liveness import counts_toward_target
from dropsweep.rows import best_first
from dropsweep.study import check_schema, sweep_differences
from dropsweep.storage import (GRACE_BEATS, describe_failure, heartbeat_seconds, mask_url,
                               open_storage, study_names)
from dropsweep.train import TrialResult
from dropsweep.devices import resolve_device
from dropsweep.protocols import Folds, make_folds

# Trials trained together by default: measured with benchmarks/trial_speed.py (README).
AUTO_BATCH = 16


# ----------------------------------------------------------------------------- samplers


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """Each sampler seeded; TPE is multivariate and grouped, which suits a conditional space."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                              constant_liar=True)
        if name == "cmaes":
            return optuna.samplers.CmaEsSampler(
                seed=seed, warn_independent_sampling=False,
                independent_sampler=optuna.samplers.TPESampler(seed=seed))
        if name == "qmc":
            return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    # "random", and "grid", whose points are planned in advance (see space.grid_points).
    return optuna.samplers.RandomSampler(seed=seed)


PRUNE_STARTUP_TRIALS = 10  # complete trials before the median means anything


def pruning_warmup(train_epochs: int, eval_every: int) -> int:
    """No pruning before a quarter of the epochs: early accuracy is mostly noise."""
    return max(eval_every, train_epochs // 4)


def make_pruner(name: str, train_epochs: int, eval_every: int) -> optuna.pruners.BasePruner:
    if name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=PRUNE_STARTUP_TRIALS,
                                       n_warmup_steps=pruning_warmup(train_epochs, eval_every))


# ----------------------------------------------------------------------------- counting


def trial_seed(search_seed: int, number: int) -> int:
    """A trial's seed depends only on the sweep's seed and the trial's number."""
    return int(np.random.SeedSequence([search_seed, number]).generate_state(1)[0] & 0x7FFFFFFF)


# ----------------------------------------------------------------------------- stopping


class StopFlag:
    """Set by SIGINT/SIGTERM; the loop and the trainer check it at safe points."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self) -> bool:
        return self.signal is not None


@contextmanager
def stop_on_signals(flag: StopFlag) -> Iterator[StopFlag]:
    """First Ctrl-C/SIGTERM asks for a clean stop; a second Ctrl-C stops at once."""

    def handler(signum: int, frame: Any) -> None:
        if flag.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.signal = signum

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for s in previous:
            signal.signal(s, handler)
    except ValueError:  # not the main thread (e.g. some test runners): no handlers
        previous = {}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


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

    def notice(self, text: str) -> None:
        if self.on_notice:
            self.on_notice(text)


def _prepare_study(sweep: Sweep, storage_url: str, study_name: str) -> optuna.Study:
    storage = open_storage(storage_url, heartbeat=heartbeat_seconds())
    new_sweep = sweep.to_dict()
    try:
        if study_name not in study_names(storage):
            try:
                return _create_study(sweep, storage, study_name)
            except optuna.exceptions.DuplicatedStudyError:
                pass  # another worker created it a moment ago: join it
        # Re-seeded by how far the study has come: the same seed again would propose the
        # points it proposed at the start (random, QMC and TPE's start-up trials).
        resumed_seed = trial_seed(sweep.search.seed, len(storage.get_all_trials(
            storage.get_study_id_from_name(study_name), deepcopy=False)))
        study = optuna.load_study(study_name=study_name, storage=storage,
                                  sampler=make_sampler(sweep.search.sampler, resumed_seed),
                                  pruner=make_pruner(sweep.search.pruner, sweep.train.epochs,
                                                     sweep.train.eval_every))
        old = study.user_attrs.get(records.STUDY_SWEEP)
        for _ in range(50):  # a study another worker is creating gets its attributes next
            if old is not None or study.get_trials(deepcopy=False):
                break
            time.sleep(0.1)
            old = study.user_attrs.get(records.STUDY_SWEEP)
        if old is None:
            raise StorageError(f"study '{study_name}' in {mask_url(storage_url)} was not made "
                               "by dropsweep; choose another --study name")
        check_schema(study_name, study.user_attrs)
        changed = sweep_differences(old, new_sweep)
        if changed:
            raise StudyMismatchError(
                f"study '{study_name}' was made with a different experiment "
                f"({'; '.join(changed)}); resume with the original sweep or choose "
                "another --study name")
        return study
    except StorageError:  # StudyMismatchError included
        raise
    except Exception as exc:  # a storage that fails mid-way (locked, read-only, dropped)
        reason = describe_failure(exc)
        raise StorageError(f"storage {mask_url(storage_url)}: {reason}") from None


def _create_study(sweep: Sweep, storage: optuna.storages.BaseStorage, study_name: str
                  ) -> optuna.Study:
    study = optuna.create_study(
        storage=storage, study_name=study_name, direction="maximize",
        sampler=make_sampler(sweep.search.sampler, sweep.search.seed),
        pruner=make_pruner(sweep.search.pruner, sweep.train.epochs, sweep.train.eval_every),
    )
    study.set_user_attr(records.STUDY_SWEEP, sweep.to_dict())
    study.set_user_attr(records.STUDY_SCHEMA, records.SCHEMA_VERSION)
    study.set_user_attr(records.STUDY_VERSION, dropsweep.__version__)
    study.set_user_attr(records.STUDY_TORCH_VERSION, torch.__version__)
    study.set_user_attr(records.STUDY_SWEEP_FILE, sweep.file)
    return study


def _summarize(study: optuna.Study, summary: SearchSummary) -> None:
    trials = study.get_trials(deepcopy=False)
    summary.finished = sum(counts_toward_target(t) for t in trials)
    summary.states = {}
    for t in trials:
        summary.states[t.state.name] = summary.states.get(t.state.name, 0) + 1
    ranked = best_first(trials, study.direction)
    if ranked:
        summary.best_value, summary.best_number = ranked[0].value, ranked[0].number


def _next_planned(study: optuna.Study, planned: list[Config]) -> Config | None:
    """The first planned configuration no trial settles yet (see :func:`liveness.settles`):
    the baseline first, so a baseline lost to a dead or paused worker is run again before
    anything else."""
    trials = study.get_trials(deepcopy=False)
    taken = [t.user_attrs.get(records.CONFIG) for t in trials if liveness.settles(t)]
    for config in planned:  # planned[0] is the baseline (space.planned_configs)
        if config.to_dict() not in taken and not (
                config is planned[0] and liveness.baseline_gave_up(trials)):
            return config
    return None


def batch_that_fits(sweep: Sweep, dataset: Dataset, batch: int, device: torch.device,
                    workers: int = 1) -> int:
    """``batch``, or the fewer trials that fit in memory beside ``workers - 1`` other workers
    of this machine; a trial that cannot fit at all is a one-line error naming the key.
    Checked before anything is written to the storage."""
    need = sweep.family.need(sweep, dataset.X.shape[1], dataset.n_classes, sweep.cv.folds,
                             dataset.X.shape[0])  # all rows: a bound
    free = memory.available(device)
    share = None if free is None else free // workers
    return memory.fit_batch(need, batch, share, file=sweep.file, device=str(device))


def open_search(sweep: Sweep, *, storage_url: str, study_name: str | None = None,
                trials: int | None = None) -> tuple[optuna.Study, SearchSummary]:
    """Create the study or check that it holds this experiment; count what it has."""
    name = study_name or sweep.name
    target = trials if trials is not None else sweep.search.trials
    if is_exhaustive(sweep):
        target = min(target, len(planned_configs(sweep)))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _prepare_study(sweep, storage_url, name)
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
) -> SearchSummary:
    """Run the study up to its target number of finished trials; resume if it exists.

    Up to ``batch`` trials are asked at once (TPE's constant liar keeps them apart) and
    trained together as one batched model, each pruned on its own. Other workers (processes
    or machines) may run the same study at the same time.
    """
    events = events or SearchEvents()
    stop = stop or StopFlag()
    dev = resolve_device(device)
    folds = make_folds(dataset.X, dataset.y, sweep.cv.folds, sweep.cv.seed, dev,
                       n_classes=dataset.n_classes)
    fits = batch_that_fits(sweep, dataset, batch, dev)
    study, summary = open_search(sweep, storage_url=storage_url, study_name=study_name,
                                 trials=trials)
    if events.on_start:
        events.on_start(summary)
    if fits < batch:
        events.notice(f"training {fits} trials at a time, not {batch}: more would not fit "
                      "in memory")
    _Search(study, summary, sweep, folds, fits, events, stop).run()
    summary.stopped_by = stop.signal
    _summarize(study, summary)
    return summary


class _Search:
    """The ask -> train -> record loop of one worker, with the trials it holds at any moment:
    those are what it must give back (marked interrupted) when it stops or fails."""

    def __init__(self, study: optuna.Study, summary: SearchSummary, sweep: Sweep,
                 folds: Folds, batch: int, events: SearchEvents, stop: StopFlag) -> None:
        self.study, self.summary, self.sweep, self.folds = study, summary, sweep, folds
        self.batch, self.events, self.stop = batch, events, stop
        self.warmup = pruning_warmup(sweep.train.epochs, sweep.train.eval_every)
        self.space, self.planned = space_of(sweep), planned_configs(sweep)
        self.seconds = heartbeat_seconds()
        self.held: list[optuna.Trial] = []  # asked by this worker, not yet told
        self.seed = 0  # of the batch being trained

    def run(self) -> None:
        """Batches until the study holds its target (or a stop). Any error gives back the
        trials held; a failing storage says how many it could give back."""
        try:
            while not self.stop() and self.summary.finished < self.summary.target:
                if not self._one_batch():
                    break
        except BaseException as exc:
            # No trial may stay RUNNING, or a resume would wait for it until it goes stale.
            held, self.held = self.held, []
            marked = sum(liveness.abandon(self.study, trial) for trial in held)
            if isinstance(exc, StorageFailure) and held:
                raise StorageFailure(exc.message + (
                    f"; {marked} of the {len(held)} trials this worker was running are "
                    "marked interrupted" if marked else
                    f"; the {len(held)} trials this worker was running could not be marked "
                    f"interrupted: they run again once they have gone "
                    f"{GRACE_BEATS * self.seconds} s without a heartbeat")) from exc
            raise

    def _one_batch(self) -> bool:
        """Ask, train and record one batch; False when there is nothing left to plan."""
        study, summary = self.study, self.summary
        liveness.fail_stale(study, grace=GRACE_BEATS * self.seconds)
        # in flight: running, or queued by a planner (ours, another worker's, or a dead one's)
        running = sum(t.state in (TrialState.RUNNING, TrialState.WAITING)
                      for t in study.get_trials(deepcopy=False))
        try:
            asked = self._ask_batch(min(self.batch, summary.target - summary.finished - running))
        except optuna.exceptions.UpdateFinishedTrialError:
            # paused while asking: a trial being set up was failed as stale meanwhile
            for trial in self.held:
                liveness.abandon(study, trial)
            self.held = []
            self.events.notice(_taken_notice("a trial this worker was setting up", 1,
                                             self.seconds))
            return True
        if not asked:
            if running == 0:
                return False
            # Other workers run the rest (or died: their trials go stale and come back).
            liveness.wait(self.stop, min(self.seconds, 2.0))
            _summarize(study, summary)
            return True
        self._train(asked)
        return True

    def _ask_batch(self, wanted: int) -> list[tuple[optuna.Trial, Config]]:
        asked: list[tuple[optuna.Trial, Config]] = []
        for _ in range(max(wanted, 0)):
            if asked and liveness.taken(self.study) >= self.summary.target:
                break  # other workers have asked for the rest meanwhile
            pair = _ask(self.study, self.sweep, self.space, self.planned)
            if pair is None:
                break
            asked.append(pair)
            self.held.append(pair[0])
        asked = liveness.drop_surplus(self.study, asked, self.summary.target)
        self.held = [trial for trial, _ in asked]
        if asked:  # the batch's random stream: weights, masks, row order
            self.seed = trial_seed(self.sweep.search.seed, asked[0][0].number)
            for trial, _ in asked:
                trial.set_user_attr(records.SEED, self.seed)
        return asked

    def _train(self, asked: list[tuple[optuna.Trial, Config]]) -> None:
        study, summary, sweep = self.study, self.summary, self.sweep
        trials = [trial for trial, _ in asked]
        # Asking the pruner costs two storage reads a trial; skip it where its answer is
        # known to be no (no pruner, too few complete trials, still warming up). The
        # baseline is never pruned: every comparison the report makes is against it.
        may_prune = (sweep.search.pruner != "none"
                     and summary.states.get("COMPLETE", 0) >= PRUNE_STARTUP_TRIALS)
        prunable = [config != sweep.baseline for _, config in asked]
        # Trials another worker failed as stale while this one was paused (SIGSTOP, a
        # suspended laptop, a stalled disk): they are no longer ours to record.
        lost: set[int] = set()

        def on_checkpoint(epoch: int, accuracies: list[float | None]) -> list[int]:
            stopped = []
            ask_pruner = may_prune and epoch >= self.warmup
            for i, (trial, value) in enumerate(zip(trials, accuracies)):
                if value is None or i in lost:
                    continue
                try:
                    trial.report(value, step=epoch)
                    if ask_pruner and prunable[i] and trial.should_prune():
                        stopped.append(i)
                except optuna.exceptions.UpdateFinishedTrialError:
                    lost.add(i)
                    stopped.append(i)  # stop training it: its result could not be recorded
            return stopped

        # beating until every result is recorded: a worker slowed by a locked storage
        # must not see its finished trials failed as stale by another
        with liveness.Heartbeat(study, trials, self.seconds):
            results = sweep.family.train([config for _, config in asked], self.folds, sweep,
                                         self.seed, on_checkpoint=on_checkpoint,
                                         should_stop=self.stop)
            for i, (trial, result) in enumerate(zip(trials, results)):
                frozen = None
                if i not in lost:
                    result.wall_time /= len(trials)  # its share of the batch's time
                    try:
                        frozen = record_result(study, trial, result)
                    except optuna.exceptions.UpdateFinishedTrialError:
                        lost.add(i)
                self.held.remove(trial)
                _summarize(study, summary)
                if frozen is None:
                    continue
                if not result.interrupted:
                    summary.ran += 1
                if self.events.on_trial:
                    self.events.on_trial(summary, frozen)
        if lost:
            numbers = ", ".join(f"#{trials[i].number}" for i in sorted(lost))
            self.events.notice(_taken_notice(
                f"trial{'s' if len(lost) > 1 else ''} {numbers} of this worker", len(lost),
                self.seconds))


def _taken_notice(what: str, count: int, seconds: int) -> str:
    it, its = ("them", "their results") if count > 1 else ("it", "its result")
    return (f"{what} went {GRACE_BEATS * seconds} s without a heartbeat (the process was "
            f"paused or stalled), so another worker failed {it} to run {it} again: {its} "
            "here dropped, this worker goes on")


def _ask(study: optuna.Study, sweep: Sweep, space: Space, planned: list[Config]
         ) -> tuple[optuna.Trial, Config] | None:
    """The next trial: a planned configuration first (baseline, list, grid), else the sampler's."""
    while True:
        config = _next_planned(study, planned)
        if config is None and is_exhaustive(sweep):
            return None
        with warnings.catch_warnings():
            # Optuna warns that its heartbeat is meant for optimize(): we beat ourselves
            # (liveness.Heartbeat).
            warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
            if config is not None:
                # Enqueued params are what the fixed distributions then return (ask alone
                # would sample them).
                study.enqueue_trial(config_values(config, sweep.dimensions, space), user_attrs={
                    records.ENQUEUED: liveness.now_utc().isoformat(),
                    records.CONFIG: config.to_dict()})
                trial = study.ask(fixed_distributions(config, sweep.dimensions, space))
            else:
                trial = study.ask()
            liveness.beat(study, [trial])  # at once: a trial that never beat is never stale
            # What this trial really holds: ask hands out the oldest queued trial, which may
            # be another worker's, or one a killed worker left.
            config = suggest(trial, sweep.dimensions, space)
        trial.set_user_attr(records.CONFIG, config.to_dict())
        if config in planned and liveness.planned_twice(study, trial, config.to_dict()):
            liveness.abandon(study, trial)  # another worker planned it a moment earlier
            continue
        role = (records.ROLE_BASELINE if config == sweep.baseline
                else records.ROLE_FIXED if config in planned else records.ROLE_SEARCH)
        trial.set_user_attr(records.ROLE, role)
        return trial, config


def record_result(study: optuna.Study, trial: optuna.Trial, result: TrialResult
                  ) -> FrozenTrial:
    """Record a trial's result in the storage; every trial ends in a final state."""
    trial.set_user_attr(records.EPOCHS, result.epochs)
    trial.set_user_attr(records.WALL_TIME, round(result.wall_time, 4))
    if result.interrupted:
        trial.set_user_attr(records.INTERRUPTED, True)
        return study.tell(trial, state=TrialState.FAIL)
    if result.failure is not None:
        trial.set_user_attr(records.FAIL_REASON, result.failure)
        return study.tell(trial, state=TrialState.FAIL)
    if result.pruned:
        return study.tell(trial, state=TrialState.PRUNED)
    trial.set_user_attr(records.FOLD_ACCURACIES, result.fold_accuracies)
    trial.set_user_attr(records.ACCURACY_MEAN, result.accuracy_mean)
    trial.set_user_attr(records.ACCURACY_STD, result.accuracy_std)
    trial.set_user_attr(records.TEST_LOG_LOSS, result.test_log_loss)
    trial.set_user_attr(records.TRAIN_ACCURACY, result.train_accuracy)
    if result.curve and math.isfinite(result.curve[-1][1]):
        trial.report(result.accuracy_mean, step=result.epochs)
    return study.tell(trial, result.accuracy_mean)

