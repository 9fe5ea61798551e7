"""Asking the study for a trial: a planned configuration first, then a lost trial's, else
the sampler's.

The baseline, then a list's or a grid's configurations, are enqueued and asked with the
space's own distributions; then the configuration of a sampler's trial lost to a stop or a
dead worker, with no checkpoint to go on from (:func:`dropsweep.study.liveness.owed`), is queued
again with its parameters and Optuna's retry history. A trial asked holds the oldest queued
configuration, which may be another worker's or one a killed worker left, so what a trial
really holds is read back from its params (:func:`ask_trial`). ``dropsweep search`` and
``dropsweep confirm`` both ask this way.
"""

from __future__ import annotations

import warnings
from typing import Callable, Container, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from dropsweep import records

from dropsweep.study import liveness
from dropsweep.sweep.config import Sweep
from dropsweep.sweep.space import (Config, Dimension, Space, config_values, fixed_distributions,
                             is_exhaustive, suggest)
from dropsweep.storage import optuna_private, trialio


def _stored(trial: optuna.trial.FrozenTrial) -> Config | None:
    """The configuration a trial recorded, as one a set can hold."""
    config = trial.user_attrs.get(records.CONFIG)
    return Config(config) if isinstance(config, dict) else None


def next_planned(study: optuna.Study, planned: list[Config],
                  settled: set[int] | None = None, checkpointed: Container[int] = ()
                  ) -> Config | None:
    """The first planned configuration no trial settles yet (see :func:`liveness.settles`),
    nor a stopped trial whose batch goes on from a checkpoint (``checkpointed``: the batches
    with a file): the baseline first, so a baseline lost to a dead or paused worker is run
    again before anything else. ``settled`` remembers the planned configurations (by index)
    that finished trials settle for good, so that they are not looked for again (a TPE sweep
    stops reading for its baseline once it is complete)."""
    if settled is not None and len(settled) == len(planned):
        return None
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    taken = {_stored(t) for t in trials if liveness.settles(t) or (
        t.state == TrialState.FAIL and not liveness.counts_toward_target(t)
        and liveness.goes_on(t, by_number, checkpointed))}
    final = {_stored(t) for t in trials if t.state.is_finished() and liveness.settles(t)}
    gave_up = liveness.baseline_gave_up(trials)
    for i, config in enumerate(planned):  # planned[0] is the baseline (space.planned_configs)
        if settled is not None and i in settled:
            continue
        if settled is not None and (config in final or (i == 0 and gave_up)):
            settled.add(i)
        if config not in taken and not (i == 0 and gave_up):
            return config
    return None


def ask_next(study: optuna.Study, sweep: Sweep, space: Space, planned: list[Config],
             settled: set[int] | None = None, full: Callable[[], bool] | None = None,
             held: liveness.Heartbeat | None = None, checkpointed: Container[int] = ()
             ) -> tuple[optuna.Trial, Config] | None:
    """The next trial: a planned configuration first (baseline, list, grid), then a lost
    trial's run again (:func:`liveness.owed`; ``checkpointed``: the batches with a
    checkpoint file, whose trials go on from it instead), else the sampler's; None when
    nothing is left to plan, or ``full()`` says the study has all the trials it needs.
    ``held`` holds the trial from its ask (given back if the worker fails before it is
    told)."""
    while True:
        # One read of the trials for the checks and the sampler (TPE reads them about five
        # times an ask); whether a planned configuration was planned twice is read afresh.
        with trialio.holding(study):
            if full is not None and full():
                return None
            config = next_planned(study, planned, settled, checkpointed)
            if config is None and is_exhaustive(sweep):
                return None
            again = None
            if config is None:
                owed = liveness.owed(study.get_trials(deepcopy=False), checkpointed)
                again = owed[0] if owed else None
            trial, config = ask_trial(study, sweep.dimensions, space, config, again)
        if held is not None:
            held.add([trial])
        retried = liveness.retry_of(optuna_private.trial_record(trial))  # as asked
        if retried is not None:  # a lost trial's again (queued here or by another worker)
            trialio.set_user_attrs(trial, {records.CONFIG: config.to_dict(),
                                           records.ROLE: records.ROLE_SEARCH})
            with trialio.released(study):  # another worker's queue of a moment ago counts
                twice = liveness.run_again_twice(study, trial, retried)
            if twice:
                liveness.abandon(study, trial)
                if held is not None:
                    held.discard(trial)
                continue
            return trial, config
        if config not in planned:  # the sampler's: its configuration and role in one write
            trialio.set_user_attrs(trial, {records.CONFIG: config.to_dict(),
                                           records.ROLE: records.ROLE_SEARCH})
            return trial, config
        trial.set_user_attr(records.CONFIG, config.to_dict())
        with trialio.released(study):  # another worker's plan of a moment ago counts
            twice = liveness.planned_twice(study, trial, config.to_dict())
        if twice:
            liveness.abandon(study, trial)  # another worker planned it a moment earlier
            if held is not None:
                held.discard(trial)
            continue
        trial.set_user_attr(records.ROLE, records.ROLE_BASELINE if config == sweep.baseline
                            else records.ROLE_FIXED)
        return trial, config


def ask_trial(study: optuna.Study, dims: Sequence[Dimension], space: Space,
               config: Config | None, again: FrozenTrial | None = None
               ) -> tuple[optuna.Trial, Config]:
    """A new RUNNING trial: ``config`` queued and asked; else lost trial ``again`` queued
    again (its parameters, with Optuna's retry history) and asked; else the sampler's."""
    with warnings.catch_warnings():
        # Optuna warns that its heartbeat is meant for optimize(): we beat ourselves
        # (liveness.Heartbeat).
        warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
        if config is None and again is not None:
            # as Optuna's RetryHeartbeatStaleTrialCallback queues a stale trial again, but
            # only where no checkpoint goes on with it, and once (liveness.run_again_twice)
            study.add_trial(optuna.trial.create_trial(
                state=TrialState.WAITING, params=again.params,
                distributions=again.distributions,
                user_attrs={records.ENQUEUED: liveness.now_utc().isoformat(),
                            records.CONFIG: again.user_attrs[records.CONFIG]},
                system_attrs=liveness.retry_attrs(again)))
            trial = study.ask()
        elif config is not None:
            # Enqueued params are what the fixed distributions then return (ask alone
            # would sample them).
            study.enqueue_trial(config_values(config, dims, space), user_attrs={
                records.ENQUEUED: liveness.now_utc().isoformat(),
                records.CONFIG: config.to_dict()})
            trial = study.ask(fixed_distributions(config, dims, space))
        else:
            trial = study.ask()
        # A trial that never beat is never stale to Optuna: its first beat goes with its
        # first write (in a hold, with its parameters and role; liveness.fail_stale fails a
        # trial that has neither)
        liveness.beat(study, [trial])
        # What this trial really holds: ask hands out the oldest queued trial, which may
        # be another worker's, or one a killed worker left.
        return trial, suggest(trial, dims, space)
