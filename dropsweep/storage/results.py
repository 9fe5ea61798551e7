"""A trial's result recorded in the study: every trial ends in a final state.

``dropsweep search`` and ``dropsweep confirm`` record their batches the same way: each
trial's share of the batch's training time, its fold accuracies and scores, or why it
failed, in one write, then told.
"""

from __future__ import annotations

import copy
import datetime
import math
from typing import Any, Iterator, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from dropsweep import records
from dropsweep.storage import optuna_private, trialio
from dropsweep.storage.rdb import TrialEnd
from dropsweep.train.loop import TrialResult


def _end(trial: optuna.Trial, result: TrialResult) -> TrialEnd:
    """What records ``result``: the attributes, a last report, the final state and value."""
    attrs: dict[str, Any] = {records.EPOCHS: result.epochs,
                             records.WALL_TIME: round(result.wall_time, 4)}
    report, trial_id = None, optuna_private.trial_id(trial)
    if result.interrupted:
        return TrialEnd(trial_id, {**attrs, records.INTERRUPTED: True}, None,
                        TrialState.FAIL, None)
    if result.failure is not None:
        return TrialEnd(trial_id, {**attrs, records.FAIL_REASON: result.failure},
                        None, TrialState.FAIL, None)
    steps = optuna_private.trial_record(trial).intermediate_values  # as report reads it
    if result.pruned:  # its value is its last report, as Optuna's tell makes it
        last = steps[max(steps)] if steps else math.nan
        return TrialEnd(trial_id, attrs, None, TrialState.PRUNED,
                        None if math.isnan(last) else [last])
    attrs.update({
        records.FOLD_ACCURACIES: result.fold_accuracies,
        records.ACCURACY_MEAN: result.accuracy_mean, records.ACCURACY_STD: result.accuracy_std,
        records.TEST_LOG_LOSS: result.test_log_loss,
        records.TRAIN_ACCURACY: result.train_accuracy})
    if (result.curve and math.isfinite(result.curve[-1][1])
            and result.epochs not in steps):  # report keeps a step's first value
        report = (int(result.epochs), float(result.accuracy_mean))
    return TrialEnd(trial_id, attrs, report, TrialState.COMPLETE,
                    [float(result.accuracy_mean)])


def record_result(study: optuna.Study, trial: optuna.Trial, result: TrialResult
                  ) -> FrozenTrial:
    """Record a trial's result in the storage, a write and Optuna's ``tell``; every trial
    ends in a final state."""
    end = _end(trial, result)
    trialio.set_user_attrs(trial, end.user_attrs)
    if end.report is not None:
        trial.report(end.report[1], step=end.report[0])
    if end.state == TrialState.COMPLETE:
        return study.tell(trial, end.values[0])  # type: ignore[index]
    return study.tell(trial, state=end.state)


def record_batch(study: optuna.Study, trials: Sequence[optuna.Trial],
                 results: Sequence[TrialResult], lost: set[int] | None = None
                 ) -> Iterator[tuple[int, FrozenTrial | None]]:
    """Record a batch's results in order, each with its share of the batch's time; yield
    (index, the trial as recorded), None for one another worker failed as stale meanwhile
    (``lost``, which gains it).

    Where the storage can, the whole batch is one write (``finish_trials``), what Optuna's
    ``tell`` does for each (the sampler's ``after_trial``, then the state and value) done
    here; else each trial is told in turn."""
    lost = set() if lost is None else lost
    for i, result in enumerate(results):
        if i not in lost:
            result.wall_time /= len(trials)  # its share of the batch's time
    storage = trialio.finishes(study)
    ends = {i: _end(trial, result) for i, (trial, result) in enumerate(zip(trials, results))
            if i not in lost}
    if storage is None or not all(_feasible(end) for end in ends.values()):
        for i, (trial, result) in enumerate(zip(trials, results)):
            frozen = None
            if i not in lost:
                try:
                    frozen = record_result(study, trial, result)
                except optuna.exceptions.UpdateFinishedTrialError:
                    lost.add(i)
            yield i, frozen
        return
    frozen = {i: _as_recorded(trials[i], end) for i, end in ends.items()}
    for i, end in ends.items():
        study.sampler.after_trial(study, frozen[i], end.state, end.values)
    finished = storage.finish_trials(list(ends.values()))
    for i, end in ends.items():
        if end.trial_id in finished:
            lost.add(i)
    for i in range(len(trials)):
        yield i, None if i in lost else frozen[i]


def _feasible(end: TrialEnd) -> bool:
    return all(not math.isnan(v) for v in end.values or ())


def _as_recorded(trial: optuna.Trial, end: TrialEnd) -> FrozenTrial:
    """The trial as ``finish_trials`` leaves it, from the trial's own copy (as tell would read
    it back)."""
    frozen = copy.deepcopy(optuna_private.trial_record(trial))
    frozen.user_attrs.update(end.user_attrs)
    if end.report is not None:
        frozen.intermediate_values[end.report[0]] = end.report[1]
    frozen.state = end.state
    frozen.values = None if end.values is None else list(end.values)
    frozen.datetime_complete = datetime.datetime.now()
    return frozen
