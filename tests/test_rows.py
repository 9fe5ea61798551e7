"""dropsweep.rows: the one ranking — direction, NaN, ties — for every command that ranks."""

from __future__ import annotations

import copy
import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState, create_trial

from dropsweep import records
from dropsweep.export import pick_trial
from dropsweep.rows import best_first, trial_row


def _study(direction: str, values: list[float | None]) -> optuna.Study:
    study = optuna.create_study(direction=direction)
    for i, value in enumerate(values):
        study.add_trial(create_trial(
            state=TrialState.COMPLETE if value is not None else TrialState.PRUNED,
            value=value, params={"placement": "none"},
            distributions={"placement": CategoricalDistribution(("none",))},
            user_attrs={records.CONFIG: {"placement": "none", "i": i}}))
    return study


@pytest.mark.parametrize("direction,order", [("maximize", [3, 1, 4, 0]),
                                             ("minimize", [0, 1, 4, 3])])
def test_best_first_follows_the_direction_skips_nan_and_ties_go_earlier(direction, order):
    study = _study(direction, [0.5, 0.7, 0.3, 0.9, 0.7, None])
    trials = study.get_trials()
    trials[2] = copy.copy(trials[2])
    trials[2]._values = [math.nan]  # Optuna refuses to store one; a hand-edited storage may not
    assert [t.number for t in best_first(trials, study.direction)] == order
    rows = [trial_row(t) for t in trials]  # the report's rows rank the same way
    assert [r.number for r in best_first(rows, study.direction)] == order


def test_export_and_confirm_pick_by_the_same_ranking():
    from dropsweep.confirm import candidates
    from dropsweep.config import Sweep

    low = _study("minimize", [0.5, None, 0.2, 0.2])
    assert pick_trial(low, None).number == 2  # the lowest, the earlier of a tie
    high = _study("maximize", [0.5, None, 0.2, 0.7])
    assert pick_trial(high, None).number == 3
    picked = [c.number for c in candidates(high, Sweep(), top=2)]
    assert picked == [-1, 3, 0]  # the sweep's baseline (never run here), then the best two
    assert best_first([], StudyDirection.MAXIMIZE) == []
