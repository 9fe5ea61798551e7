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
from dropsweep import liveness, records
from dropsweep.config import SpaceConfig, Sweep, TrialConfig
from dropsweep.data import Dataset
from dropsweep.errors import StorageError, StudyMismatchError
from dropsweep.space import (
    config_values,
    fixed_distributions,
    is_exhaustive,
    planned_configs,
    space_of,
    suggest,
)
from dropsweep.liveness import counts_toward_target
from dropsweep.storage import (GRACE_BEATS, heartbeat_seconds, mask_url, open_storage,
                               study_names)
from dropsweep.trainer import TrainSettings, TrialResult, make_folds, resolve_device, train_trials

# Trials trained together by default: measured with benchmarks/trial_speed.py (README).
AUTO_BATCH = 16

# Sections whose change would make old and new trials incomparable.
EXPERIMENT_SECTIONS = ("data", "model", "train", "cv", "baseline", "space")


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


def sweep_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys of the experiment sections that differ, with old -> new values."""
    out: list[str] = []

    def walk(a: Any, b: Any, key: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in list(dict.fromkeys([*a, *b])):
                walk(a.get(k), b.get(k), f"{key}.{k}")
        elif a != b:
            out.append(f"{key} {a!r} -> {b!r}")

    for section in EXPERIMENT_SECTIONS:
        walk(old.get(section), new.get(section), section)
    return out


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
        reason = mask_url(" ".join(str(exc).split()))[:300]
        raise StorageError(f"storage {mask_url(storage_url)}: {reason}") from None


def _create_study(sweep: Sweep, storage: optuna.storages.BaseStorage, study_name: str
                  ) -> optuna.Study:
    study = optuna.create_study(
        storage=storage, study_name=study_name, direction="maximize",
        sampler=make_sampler(sweep.search.sampler, sweep.search.seed),
        pruner=make_pruner(sweep.search.pruner, sweep.train.epochs, sweep.train.eval_every),
    )
    study.set_user_attr(records.STUDY_SWEEP, sweep.to_dict())
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
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if complete:
        best = max(complete, key=lambda t: (t.value, -t.number))
        summary.best_value, summary.best_number = best.value, best.number


def _next_planned(study: optuna.Study, planned: list[TrialConfig]) -> TrialConfig | None:
    """The first planned configuration no finished, running or queued trial already covers."""
    taken = [t.user_attrs.get(records.CONFIG) for t in study.get_trials(deepcopy=False)
             if liveness.holds_a_place(t)]
    for config in planned:
        if config.to_dict() not in taken:
            return config
    return None


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
    settings = TrainSettings.of(sweep)
    space = space_of(sweep)
    planned = planned_configs(sweep)
    warmup = pruning_warmup(sweep.train.epochs, sweep.train.eval_every)
    study, summary = open_search(sweep, storage_url=storage_url, study_name=study_name,
                                 trials=trials)
    target = summary.target
    if events.on_start:
        events.on_start(summary)

    seconds = heartbeat_seconds()
    while not stop() and summary.finished < target:
        liveness.fail_stale(study, grace=GRACE_BEATS * seconds)
        # in flight: running, or queued by a planner (ours, another worker's, or a dead one's)
        running = sum(t.state in (TrialState.RUNNING, TrialState.WAITING)
                      for t in study.get_trials(deepcopy=False))
        wanted = min(batch, target - summary.finished - running)
        asked: list[tuple[optuna.Trial, TrialConfig]] = []
        for _ in range(max(wanted, 0)):
            if asked and liveness.taken(study) >= target:
                break  # other workers have asked for the rest meanwhile
            pair = _ask(study, sweep, space, planned)
            if pair is None:
                break
            asked.append(pair)
        asked = liveness.drop_surplus(study, asked, target)
        if not asked:
            if running == 0:
                break  # nothing left to plan
            # Other workers run the rest (or died: their trials go stale and come back).
            liveness.wait(stop, min(seconds, 2.0))
            _summarize(study, summary)
            continue
        trials = [trial for trial, _ in asked]
        seed = trial_seed(sweep.search.seed, trials[0].number)
        for trial in trials:
            trial.set_user_attr(records.SEED, seed)

        # Asking the pruner costs two storage reads a trial; skip it where its answer is
        # known to be no (no pruner, too few complete trials, still warming up).
        may_prune = (sweep.search.pruner != "none"
                     and summary.states.get("COMPLETE", 0) >= PRUNE_STARTUP_TRIALS)

        def on_checkpoint(epoch: int, accuracies: list[float | None]) -> list[int]:
            pruned = []
            ask_pruner = may_prune and epoch >= warmup
            for i, (trial, value) in enumerate(zip(trials, accuracies)):
                if value is not None:
                    trial.report(value, step=epoch)
                    if ask_pruner and trial.should_prune():
                        pruned.append(i)
            return pruned

        told: set[int] = set()
        try:
            # beating until every result is recorded: a worker slowed by a locked storage
            # must not see its finished trials failed as stale by another
            with liveness.Heartbeat(study, trials, seconds):
                results = train_trials([config for _, config in asked], folds, settings, seed,
                                       on_checkpoint=on_checkpoint, should_stop=stop)
                for trial, result in zip(trials, results):
                    result.wall_time /= len(trials)  # its share of the batch's time
                    frozen = record_result(study, trial, result)
                    told.add(trial.number)
                    _summarize(study, summary)
                    if not result.interrupted:
                        summary.ran += 1
                    if events.on_trial:
                        events.on_trial(summary, frozen)
        except BaseException:
            # A second Ctrl-C, or any error: no trial of this batch may stay RUNNING, or a
            # resume would wait for it forever. It is marked interrupted and run again.
            for trial in trials:
                if trial.number not in told:
                    liveness.abandon(study, trial)
            raise

    summary.stopped_by = stop.signal
    _summarize(study, summary)
    return summary


def _ask(study: optuna.Study, sweep: Sweep, space: SpaceConfig, planned: list[TrialConfig]
         ) -> tuple[optuna.Trial, TrialConfig] | None:
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
                study.enqueue_trial(config_values(config, space), user_attrs={
                    records.ENQUEUED: liveness.now_utc().isoformat(),
                    records.CONFIG: config.to_dict()})
                trial = study.ask(fixed_distributions(config, space))
            else:
                trial = study.ask()
            liveness.beat(study, [trial])  # at once: a trial that never beat is never stale
            # What this trial really holds: ask hands out the oldest queued trial, which may
            # be another worker's, or one a killed worker left.
            config = suggest(trial, space)
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

