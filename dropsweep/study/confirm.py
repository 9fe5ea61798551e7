"""``dropsweep confirm``: re-evaluate the winners and the baseline with repeated k-fold CV.

A search's best trial is the maximum of many noisy scores, so it looks better than it is.
Confirmation trains the baseline and the best configuration of each placement again (or,
asked for, the top-K configurations), on R new fold splits (seeds the search never used),
every configuration on the same splits so that they can be compared fold by fold
(:mod:`dropsweep.answers.verdict`). Each placement's best is the default because it holds the fair
comparison: the *tuned* no-dropout (the best of placement ``none``) beside the best dropout
set-ups, where the top K are often one placement, all tuned, against the untuned baseline.
Each (configuration, repeat) is one trial of a companion study ``NAME:confirm`` in the same
storage: any Optuna tool reads it, and an interrupted confirmation resumes where it stopped.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from dropsweep import records

from dropsweep.study import liveness

from dropsweep.train import retry
from dropsweep.records import confirm_name
from dropsweep.answers.rows import best_first
from dropsweep.study.ask import ask_trial
from dropsweep.sweep.config import Sweep
from dropsweep.data.dataset import Dataset
from dropsweep.errors import StorageError
from dropsweep.families import train_apart
from dropsweep.storage.results import record_batch
from dropsweep.study.stop import StopFlag, at_once, deferred
from dropsweep.sweep.space import Config, Space, space_of
from dropsweep.storage import optuna_private, trialio
from dropsweep.storage.faults import describe_failure
from dropsweep.storage.open import GRACE_BEATS, heartbeat_seconds
from dropsweep.study.open import stored_sweep
from dropsweep.train.devices import (oom_failure, out_of_memory, release_cached_memory,
                               resolve_device)
from dropsweep.data.protocols import Folds, folds_of, split_ratio
from dropsweep.train.loop import TrialResult
from dropsweep.answers.verdict import config_key

DEFAULT_REPEATS = 5


@dataclass(frozen=True)
class Candidate:
    """A configuration to confirm and the search trial it came from."""

    number: int
    config: Config
    role: str  # records.ROLE_BASELINE or records.ROLE_CANDIDATE
    # the value of the family's group whose best this is (per placement), else None;
    # the baseline carries its own group value when it is that placement's best
    placement: str | None = None


def _ranked(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The complete trials that recorded their configuration, best first."""
    return [t for t in best_first(study.get_trials(deepcopy=False), study.direction)
            if records.CONFIG in t.user_attrs]


def _baseline(complete: list[optuna.trial.FrozenTrial], sweep: Sweep) -> Candidate:
    """The sweep's baseline, numbered as its search trial (-1 when it never ran)."""
    trial = next((t for t in complete
                  if t.user_attrs.get(records.ROLE) == records.ROLE_BASELINE), None)
    return Candidate(trial.number if trial else -1, sweep.baseline, records.ROLE_BASELINE)


def candidates(study: optuna.Study, sweep: Sweep, top: int) -> list[Candidate]:
    """The baseline, then the ``top`` best distinct other configurations of the search."""
    complete = _ranked(study)
    out = [_baseline(complete, sweep)]
    seen = [sweep.baseline.to_dict()]
    for t in complete:
        if len(out) > top:
            break
        config = t.user_attrs[records.CONFIG]
        if config not in seen:
            seen.append(config)
            out.append(Candidate(t.number, Config(config), records.ROLE_CANDIDATE))
    return out


def placement_candidates(study: optuna.Study, sweep: Sweep) -> list[Candidate]:
    """The baseline, then the best configuration of each placement in the family's order.

    The top K of a search can all share one placement, which cannot say whether the others
    are worse or merely less explored; one best per placement lets every placement be
    compared with every other. A placement whose best is the baseline's configuration is
    stood for by the baseline (the same configuration is not trained twice)."""
    fam = sweep.family
    complete = _ranked(study)
    out = [_baseline(complete, sweep)]
    for value in fam.group_values:
        best = next((t for t in complete
                     if t.user_attrs[records.CONFIG].get(fam.group) == value), None)
        if best is None:
            continue
        config = best.user_attrs[records.CONFIG]
        if config == sweep.baseline.to_dict():
            out[0] = replace(out[0], placement=value)
        else:
            out.append(Candidate(best.number, Config(config), records.ROLE_CANDIDATE, value))
    return out


def placement_record(cands: list[Candidate]) -> dict[str, dict]:
    """What a per-placement confirmation stores (records.PER_PLACEMENT): placement ->
    the configuration confirmed for it and the search trial it came from."""
    return {c.placement: {"config": c.config.to_dict(), "source_trial": c.number}
            for c in cands if c.placement is not None}


def repeat_seed(sweep: Sweep, repeat: int) -> int:
    """The fold split of repeat r: from the sweep's cv seed, never equal to it."""
    seed = int(np.random.SeedSequence([sweep.cv.seed, 0xC0F1, repeat]).generate_state(1)[0])
    seed &= 0x7FFFFFFF
    return seed + 1 if seed == sweep.cv.seed else seed


@dataclass
class ConfirmSummary:
    study_name: str  # the confirmation study
    candidates: int
    repeats: int
    done: int = 0  # (configuration, repeat) trials finished, before and now
    ran: int = 0
    stopped_by: int | None = None
    lost: int = 0  # results dropped: another run failed their trials as stale meanwhile
    total: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.total = self.candidates * self.repeats


def _open(study: optuna.Study, sweep: Sweep, per_placement: dict | None = None
          ) -> optuna.Study:
    """The confirmation study, made if new; ``per_placement`` (when given) replaces what it
    records as each placement's best: a search that grew since has new bests."""
    name = confirm_name(study.study_name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            confirm = optuna.create_study(storage=optuna_private.study_storage(study),
                                          study_name=name, direction="maximize",
                                          load_if_exists=True,
                                          sampler=optuna.samplers.RandomSampler(seed=0))
        confirms = confirm.user_attrs.get(records.CONFIRM_OF)
        if confirms is None:
            confirms = study.study_name
            confirm.set_user_attr(records.CONFIRM_OF, confirms)
            confirm.set_user_attr(records.STUDY_SWEEP, sweep.to_dict())
            confirm.set_user_attr(records.STUDY_SCHEMA, records.SCHEMA_VERSION)
            confirm.set_user_attr(records.STUDY_SWEEP_FILE, sweep.file)
        if per_placement is not None and confirms == study.study_name:
            confirm.set_user_attr(records.PER_PLACEMENT, per_placement)
    except Exception as exc:  # a read-only or failing storage: one line, not a traceback
        reason = describe_failure(exc)
        raise StorageError(f"cannot write the confirmation study '{name}': {reason}") from None
    if confirms != study.study_name:
        raise StorageError(f"study '{name}' exists and does not confirm '{study.study_name}'")
    return confirm


def _done(confirm: optuna.Study) -> set[tuple[str, int]]:
    """(configuration, repeat) pairs that have a result: complete or failed for a reason."""
    return {(config_key(t.user_attrs.get(records.CONFIG)), int(t.user_attrs[records.REPEAT]))
            for t in confirm.get_trials(deepcopy=False)
            if liveness.counts_toward_target(t) and records.REPEAT in t.user_attrs}


def run_confirm(study: optuna.Study, dataset: Dataset, *, top: int | None = None,
                repeats: int = DEFAULT_REPEATS, device: str = "cpu",
                stop: StopFlag | None = None,
                on_repeat: Callable[[ConfirmSummary], None] | None = None,
                per_placement: bool = False) -> ConfirmSummary:
    """Train every candidate on every repeat's folds not done yet; one batch per repeat.
    ``top`` None (the default): the candidates are the baseline and each placement's best
    (:func:`placement_candidates`), recorded on the confirmation study; ``top`` K: the
    baseline and the K best (:func:`candidates`). ``per_placement`` is the default's old
    name, kept for callers that still pass it."""
    if per_placement and top is not None:
        raise ValueError("top does not apply with per_placement: it confirms each "
                         "placement's best")
    stop = stop or StopFlag()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sweep = stored_sweep(study)
    if top is None:
        cands = placement_candidates(study, sweep)
        confirm = _open(study, sweep, placement_record(cands))
    else:
        cands = candidates(study, sweep, top)
        confirm = _open(study, sweep)
    space = space_of(sweep)
    dev = resolve_device(device)
    summary = ConfirmSummary(confirm.study_name, len(cands), repeats)
    done = _done(confirm)
    summary.done = sum((config_key(c.config.to_dict()), r) in done
                       for c in cands for r in range(repeats))
    seconds = heartbeat_seconds()
    with at_once(stop):  # a second Ctrl-C: the trials held are given back, the rest kept
        for r in range(repeats):
            if stop():
                break
            todo = [c for c in cands if (config_key(c.config.to_dict()), r) not in done]
            if not todo:
                continue
            liveness.fail_stale(confirm, grace=GRACE_BEATS * seconds)
            cv_seed = repeat_seed(sweep, r)
            folds = folds_of(dataset, sweep, cv_seed, dev)
            if records.TEST_TRAIN_RATIO not in confirm.user_attrs:  # what the corrected tests use
                confirm.set_user_attr(records.TEST_TRAIN_RATIO, split_ratio(folds))
            # the batch as it was first trained, when a kill cut its recording short: a
            # model's starting weights depend on its place in the batch
            batch = _cut_short(confirm, r, todo) or [c.config for c in todo]
            with liveness.Heartbeat(confirm, [], seconds) as held:  # from each ask to its tell
                try:
                    with deferred(stop):  # each trial asked is held before a Ctrl-C lands
                        trials = [_ask(confirm, sweep, c, space, r, cv_seed, held)
                                  for c in todo]
                        with trialio.holding(confirm):
                            for trial in trials:  # which attempt: a replay needs its batch
                                trialio.set_user_attrs(trial,
                                                       {records.BATCH: trials[0].number})
                    trained = dict(zip(map(_key, batch), _train(sweep, batch, folds, cv_seed,
                                                                stop)))
                    results = [trained[_key(c.config)] for c in todo]
                    lost: set[int] = set()
                    for i, frozen in record_batch(confirm, trials, results, lost):
                        held.discard(trials[i])
                        if frozen is not None and not results[i].interrupted:
                            summary.done += 1
                            summary.ran += 1
                    summary.lost += len(lost)
                except BaseException:
                    held.give_back()
                    raise
            if on_repeat is not None:
                on_repeat(summary)
    summary.stopped_by = stop.signal
    return summary


def _key(config: Config) -> str:
    return config_key(config.to_dict())


def _cut_short(confirm: optuna.Study, repeat: int, todo: list[Candidate]) -> list[Config]:
    """The configurations of ``repeat``'s last attempt, in its order, when that attempt was
    cut short (a kill while its results were being recorded: some recorded, some not) and
    holds every one still to do; [] otherwise. Trained whole again, the batch gives the
    missing ones exactly the results an uninterrupted run gave them (a model's starting
    weights depend on its place in the batch); only those are recorded."""
    attempts: dict[int, list[FrozenTrial]] = {}
    for t in confirm.get_trials(deepcopy=False):
        if t.user_attrs.get(records.REPEAT) == repeat and records.BATCH in t.user_attrs:
            attempts.setdefault(int(t.user_attrs[records.BATCH]), []).append(t)
    if not attempts:
        return []
    last = sorted(attempts[max(attempts)], key=lambda t: t.number)
    recorded = [liveness.counts_toward_target(t) for t in last]
    configs = [Config(t.user_attrs[records.CONFIG]) for t in last]
    wanted = {_key(c.config) for c in todo}
    if not any(recorded) or all(recorded) or not wanted <= set(map(_key, configs)):
        return []
    return configs


def _train(sweep: Sweep, configs: list[Config], folds: Folds, seed: int, stop: StopFlag
           ) -> list[TrialResult]:
    """The repeat's configurations as one batch per optimizer (:func:`train_apart`); out of
    device memory, in halves (:mod:`dropsweep.train.retry`), a configuration that runs out alone
    failing with the reason."""
    def train(part: Sequence[int]) -> list[TrialResult]:
        return train_apart(sweep.family, sweep.sections, [configs[i] for i in part], folds,
                           seed, should_stop=stop)

    return retry.train_in_halves(
        list(range(len(configs))), train, out_of_memory,
        fail=lambda i, error: TrialResult(failure=oom_failure(folds.rows.device, error)),
        before_retry=lambda part, error: release_cached_memory())


def _ask(confirm: optuna.Study, sweep: Sweep, cand: Candidate, space: Space, repeat: int,
         cv_seed: int, held: liveness.Heartbeat) -> optuna.Trial:
    while True:
        trial, holds = ask_trial(confirm, sweep.dimensions, space, cand.config)
        held.add([trial])
        if holds == cand.config:
            break
        held.discard(trial)
        # ask hands out the oldest queued trial: one a killed run left holds another
        # configuration; it is dropped, and ours comes next
        liveness.abandon(confirm, trial)
    trialio.set_user_attrs(trial, {
        records.CONFIG: cand.config.to_dict(), records.SOURCE_TRIAL: cand.number,
        records.REPEAT: repeat, records.CV_SEED: cv_seed, records.ROLE: cand.role})
    return trial
