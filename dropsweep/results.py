"""A trial's result recorded in the study: every trial ends in a final state.

``dropsweep search`` and ``dropsweep confirm`` record their batches the same way: each
trial's share of the batch's training time, its fold accuracies and scores, or why it
failed, in one write, then told.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from dropsweep import records
from dropsweep.storage import trialio
from dropsweep.train import TrialResult


def record_result(study: optuna.Study, trial: optuna.Trial, result: TrialResult
                  ) -> FrozenTrial:
    """Record a trial's result in the storage; every trial ends in a final state."""
    attrs: dict[str, Any] = {records.EPOCHS: result.epochs,
                             records.WALL_TIME: round(result.wall_time, 4)}
    if result.interrupted:
        trialio.set_user_attrs(trial, {**attrs, records.INTERRUPTED: True})
        return study.tell(trial, state=TrialState.FAIL)
    if result.failure is not None:
        trialio.set_user_attrs(trial, {**attrs, records.FAIL_REASON: result.failure})
        return study.tell(trial, state=TrialState.FAIL)
    if result.pruned:
        trialio.set_user_attrs(trial, attrs)
        return study.tell(trial, state=TrialState.PRUNED)
    trialio.set_user_attrs(trial, {
        **attrs, records.FOLD_ACCURACIES: result.fold_accuracies,
        records.ACCURACY_MEAN: result.accuracy_mean, records.ACCURACY_STD: result.accuracy_std,
        records.TEST_LOG_LOSS: result.test_log_loss,
        records.TRAIN_ACCURACY: result.train_accuracy})
    if result.curve and math.isfinite(result.curve[-1][1]):
        trial.report(result.accuracy_mean, step=result.epochs)
    return study.tell(trial, result.accuracy_mean)


def record_batch(study: optuna.Study, trials: Sequence[optuna.Trial],
                 results: Sequence[TrialResult], lost: set[int] | None = None
                 ) -> Iterator[tuple[int, FrozenTrial | None]]:
    """Record a batch's results in order, each with its share of the batch's time; yield
    (index, the trial as recorded), None for one another worker failed as stale meanwhile
    (``lost``, which gains it)."""
    lost = set() if lost is None else lost
    for i, (trial, result) in enumerate(zip(trials, results)):
        frozen = None
        if i not in lost:
            result.wall_time /= len(trials)  # its share of the batch's time
            try:
                frozen = record_result(study, trial, result)
            except optuna.exceptions.UpdateFinishedTrialError:
                lost.add(i)
        yield i, frozen
