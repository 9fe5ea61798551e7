"""dropsweep.answers.rows: the one ranking — direction, NaN, ties — for every command that ranks."""

from __future__ import annotations

import copy
import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState, create_trial

from dropsweep import records
from dropsweep.study.export import pick_trial
from dropsweep.answers.rows import best_first, trial_row


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
    from dropsweep.study.confirm import candidates
    from dropsweep.sweep.config import Sweep

    low = _study("minimize", [0.5, None, 0.2, 0.2])
    assert pick_trial(low, None).number == 2  # the lowest, the earlier of a tie
    high = _study("maximize", [0.5, None, 0.2, 0.7])
    assert pick_trial(high, None).number == 3
    picked = [c.number for c in candidates(high, Sweep(), top=2)]
    assert picked == [-1, 3, 0]  # the sweep's baseline (never run here), then the best two
    assert best_first([], StudyDirection.MAXIMIZE) == []


def test_a_queued_trial_never_given_its_repeat_does_not_erase_the_verdict():
    """A confirmation trial queued and then dropped (another configuration came first, or a
    kill) holds a configuration but no repeat: it is not a confirmed result."""
    from dropsweep.answers.verdict import confirmed_rows, verdict

    base, cand = {"placement": "none", "lr": 0.01}, {"placement": "input", "lr": 0.1}
    study = optuna.create_study(direction="maximize")
    study.add_trial(create_trial(state=TrialState.FAIL, user_attrs={
        records.CONFIG: base, records.INTERRUPTED: True}))
    for config, role, source, folds in ((base, records.ROLE_BASELINE, -1, [0.7, 0.8, 0.75]),
                                        (cand, records.ROLE_CANDIDATE, 7, [0.9, 0.85, 0.95])):
        for repeat in (0, 1):
            study.add_trial(create_trial(value=sum(folds) / 3, user_attrs={
                records.CONFIG: config, records.ROLE: role, records.SOURCE_TRIAL: source,
                records.REPEAT: repeat, records.FOLD_ACCURACIES: folds}))
    rows = confirmed_rows(study.get_trials(), 3, "placement")
    assert [(r.role, r.source_trial) for r in rows] == [("baseline", -1), ("candidate", 7)]
    assert verdict(rows) is not None and rows[1].vs_baseline is not None


def test_equal_configurations_hash_alike_whatever_their_key_order():
    from dropsweep.sweep.space import Config

    a, b = Config({"x": 1.0, "y": "on"}), Config({"y": "on", "x": 1.0})
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
