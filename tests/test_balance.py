"""Balanced budgets (``search.balance: placement``): every placement an equal share of the
study's trials, each searched given its placement, resumable, refilled after lost trials;
and the shares settled by trial numbers when workers ask at the same moment."""

from __future__ import annotations

from collections import Counter

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from dropsweep import records

from dropsweep.study import balance
from dropsweep.study.balance import (BalancedSampler, PlacementPruner, PlacementView, keep_shares,
                               next_value, over_share, shares)
from dropsweep.errors import SweepError
from dropsweep.study.runner import run_search
from dropsweep.study.open import make_sampler

from helpers import SUITE
from test_runner import SMALL, load, sweep_of

PLACEMENTS = ("none", "input", "hidden", "both")


def budgets(study: optuna.Study) -> Counter:
    """Trials of each placement that count toward the target."""
    from dropsweep.study.liveness import counts_toward_target

    return Counter(t.params["placement"] for t in study.get_trials(deepcopy=False)
                   if counts_toward_target(t))


def frozen(number: int, placement: str | None, state: TrialState = TrialState.COMPLETE,
           value: float | None = 0.5, **params: float) -> optuna.trial.FrozenTrial:
    dists = {"placement": CategoricalDistribution(PLACEMENTS),
             **{k: FloatDistribution(0.0, 1.0) for k in params}}
    t = create_trial(state=state, value=value if state == TrialState.COMPLETE else None,
                     params={"placement": placement, **params} if placement else params,
                     distributions=dists if placement else {k: dists[k] for k in params})
    t.number = number
    return t


# ----------------------------------------------------------------------------- the rule


def test_shares_are_equal_with_the_first_placements_one_more():
    assert shares(200, PLACEMENTS) == {"none": 50, "input": 50, "hidden": 50, "both": 50}
    assert shares(42, PLACEMENTS) == {"none": 11, "input": 11, "hidden": 10, "both": 10}
    assert sum(shares(7, PLACEMENTS).values()) == 7


def test_the_next_placement_is_the_least_filled_first_in_order():
    trials = [frozen(0, "none"), frozen(1, "input"), frozen(2, "hidden", TrialState.PRUNED),
              frozen(3, "both", TrialState.RUNNING), frozen(4, "input")]
    assert next_value(trials, "placement", PLACEMENTS) == "none"  # 1, 2, 1, 1: first in order
    # a failed trial (killed, interrupted) does not fill a place: its placement is behind
    trials[0] = frozen(0, "none", TrialState.FAIL)
    assert next_value(trials, "placement", PLACEMENTS) == "none"
    trials += [frozen(5, "none"), frozen(6, "none")]
    assert next_value(trials, "placement", PLACEMENTS) == "hidden"


def test_over_share_keeps_the_first_trials_by_number():
    # target 8: two places each; three `input` trials fill places, the highest is beyond
    trials = [frozen(0, "none"), frozen(1, "input"), frozen(2, "input", TrialState.RUNNING),
              frozen(3, "hidden"), frozen(5, "input", TrialState.RUNNING),
              frozen(4, "input", TrialState.FAIL)]
    assert over_share(trials, {2, 5}, 8, "placement", PLACEMENTS) == {5}
    assert over_share(trials, {2}, 8, "placement", PLACEMENTS) == set()  # 5 is another's


def test_unsettled_only_where_an_unknown_trial_could_take_the_last_place():
    trials = [frozen(0, "none"), frozen(1, None, TrialState.RUNNING),
              frozen(2, "input", TrialState.RUNNING)]
    # target 8: input has 1 of 2 places, one unknown could be input -> 2, still within
    assert not balance.unsettled(trials, {2: "input"}, 8, "placement", PLACEMENTS)
    trials.append(frozen(3, "input"))
    assert balance.unsettled(trials, {2: "input"}, 8, "placement", PLACEMENTS)
    # an unknown trial numbered after ours cannot take our place
    assert not balance.unsettled(trials, {0: "none"}, 8, "placement", PLACEMENTS)


# ----------------------------------------------------------------------------- the samplers


def _study_with(trials: list) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for t in trials:
        study.add_trial(t)
    return study


def test_the_view_and_the_pruner_see_one_placement_only():
    study = _study_with([frozen(0, "none", value=0.9), frozen(1, "input", value=0.5),
                         frozen(2, "input", value=0.6)])
    view = PlacementView(study, "placement", "input")
    assert [t.number for t in view.get_trials()] == [1, 2]
    assert [t.number for t in view._get_trials(False, (TrialState.COMPLETE,), True)] == [1, 2]
    assert view.best_trial.number == 2

    # a median pruner: at step 1, 0.55 is below the study's median (0.6 of 0.9, 0.6, 0.5)
    # but not below its own placement's (0.55 of 0.5, 0.6)
    pruned = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    study = optuna.create_study(direction="maximize", pruner=pruned)
    for value, placement in ((0.9, "none"), (0.5, "input"), (0.6, "input")):
        t = frozen(0, placement, value=value)
        t.intermediate_values = {1: value}
        study.add_trial(t)
    trial = study.ask({"placement": CategoricalDistribution(PLACEMENTS)})
    assert trial.params["placement"] in PLACEMENTS
    study.enqueue_trial({"placement": "input"})
    trial = study.ask({"placement": CategoricalDistribution(PLACEMENTS)})
    trial.report(0.58, 1)
    frozen_trial = study._storage.get_trial(trial._trial_id)
    assert pruned.prune(study, frozen_trial)  # against every placement: pruned
    assert not PlacementPruner(pruned, "placement").prune(study, frozen_trial)


def test_each_placement_is_sampled_given_it_from_its_own_trials():
    """A balanced ask for `input` proposes exactly what a TPE with the same seed proposes on
    a study holding only the `input` trials, the placement fixed."""
    import random

    rng = random.Random(0)
    history = [frozen(i, PLACEMENTS[i % 4], value=rng.random(), x=rng.random())
               for i in range(48)]
    space = {"placement": CategoricalDistribution(PLACEMENTS), "x": FloatDistribution(0, 1)}

    ours = _study_with(history)
    ours.sampler = BalancedSampler("placement", PLACEMENTS,
                                   lambda i: make_sampler("tpe", seed=100 + i))
    trial = ours.ask()  # 12 of each: the next is the first in order, `none`... so add one
    assert trial.suggest_categorical("placement", PLACEMENTS) == "none"
    ours.tell(trial, state=TrialState.FAIL)
    ours.add_trial(frozen(48, "none", value=0.1, x=0.5))
    trial = ours.ask()
    got = {k: trial.suggest_categorical(k, v.choices) if k == "placement"
           else trial.suggest_float(k, v.low, v.high) for k, v in space.items()}
    assert got["placement"] == "input"

    alone = _study_with([t for t in history if t.params["placement"] == "input"])
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        alone.sampler = optuna.samplers.PartialFixedSampler({"placement": "input"},
                                                            make_sampler("tpe", seed=101))
    # the same trial number as ours, so that anything keyed by it is alike
    for _ in range(trial.number - len(alone.trials)):
        alone.add_trial(create_trial(state=TrialState.FAIL))
    expected_trial = alone.ask()
    expected = {k: expected_trial.suggest_categorical(k, v.choices) if k == "placement"
                else expected_trial.suggest_float(k, v.low, v.high) for k, v in space.items()}
    assert got == expected


# ----------------------------------------------------------------------------- searches


@pytest.mark.slow
def test_a_balanced_search_gives_every_placement_its_share(dataset, storage):
    sweep = sweep_of(SMALL, "search.trials=26", "search.balance=placement",
                     "search.pruner=median")
    run_search(sweep, dataset, storage_url=storage, device="cpu", batch=5)
    study = load(storage)
    assert budgets(study) == shares(26, PLACEMENTS) == {"none": 7, "input": 7, "hidden": 6,
                                                        "both": 6}
    # the baseline is one of `none`'s trials, and every trial is a result
    assert study.trials[0].user_attrs[records.ROLE] == records.ROLE_BASELINE
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)


@pytest.mark.slow
def test_an_unbalanced_search_does_not(dataset, storage):
    """The control: the same search left to TPE spends its trials unequally."""
    sweep = sweep_of(SMALL, "search.trials=26", "search.pruner=median")
    run_search(sweep, dataset, storage_url=storage, device="cpu", batch=5)
    assert budgets(load(storage)) != shares(26, PLACEMENTS)


@pytest.mark.slow
def test_resumed_and_refilled_after_lost_trials(dataset, storage):
    from dropsweep.study.open import prepare_study

    sweep = sweep_of(SMALL, "search.trials=5", "search.balance=placement",
                     "space.placement=[none,hidden,both]")
    run_search(sweep, dataset, storage_url=storage, device="cpu", batch=4)
    assert budgets(load(storage)) == {"none": 2, "hidden": 2, "both": 1}
    # a worker asked two trials and was killed: failed as stale, they do not count
    study = prepare_study(sweep, storage, "small")
    lost, placements = [], []
    for _ in range(2):  # asked and given its parameters one after the other, as a worker does
        lost.append(study.ask())
        placements.append(lost[-1].suggest_categorical("placement", ("none", "hidden", "both")))
    assert placements == ["both", "none"]
    for trial in lost:
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    summary = run_search(sweep, dataset, storage_url=storage, device="cpu", batch=4, trials=9)
    assert summary.ran == 4 and budgets(load(storage)) == {"none": 3, "hidden": 3, "both": 3}
    # more trials: the shares of the new target
    run_search(sweep, dataset, storage_url=storage, device="cpu", batch=4, trials=14)
    assert budgets(load(storage)) == {"none": 5, "hidden": 5, "both": 4}


def test_a_trial_beyond_its_share_is_abandoned_as_surplus(dataset, storage):
    """Two workers that asked at the same moment both took the last `input` place: the
    higher trial number gives it up (here played out on one study by hand)."""
    sweep = sweep_of(SMALL, "search.trials=4", "search.balance=placement")
    run_search(sweep, dataset, storage_url=storage, device="cpu", batch=4)
    study = load(storage)  # one of each, complete
    from dropsweep.study.open import prepare_study

    study = prepare_study(sweep, storage, "small")
    theirs = study.ask()
    assert theirs.suggest_categorical("placement", PLACEMENTS) == "none"  # 1 each: first
    study.enqueue_trial({"placement": "input"})
    ours = study.ask()
    ours.suggest_categorical("placement", PLACEMENTS)
    study.enqueue_trial({"placement": "input"})
    late = study.ask()
    late.suggest_categorical("placement", PLACEMENTS)
    kept = keep_shares(study, [(ours, "a"), (late, "b")], target=8)
    assert [t.number for t, _ in kept] == [ours.number]
    late_state = study._storage.get_trial(late._trial_id)
    assert late_state.state == TrialState.FAIL and late_state.user_attrs[records.INTERRUPTED]


def test_a_diverged_baseline_is_run_again_though_its_placement_is_full(dataset, storage):
    """Balanced, with the baseline diverged in `none`'s one place: its next attempt must not
    be dropped as beyond the share (asked first every time, dropped every time, the study
    stopped short of its target, saying nothing), and a lost trial whose placement was
    refilled meanwhile is owed nothing more."""
    SUITE["diverging batches"] += 1
    sweep = sweep_of(SMALL, "search.balance=placement", "baseline.learning_rate=1e25",
                     "space.learning_rate.high=1e30")
    first = run_search(sweep, dataset, storage_url=storage, device="cpu", batch=2, trials=2)
    study = load(storage)
    assert first.finished == 2
    assert study.trials[0].user_attrs[records.FAIL_REASON].startswith("loss became")
    again = run_search(sweep, dataset, storage_url=storage, device="cpu", batch=2, trials=4)
    assert again.finished == 4 and again.ran == 2
    baselines = [t for t in load(storage).trials
                 if t.user_attrs.get(records.ROLE) == records.ROLE_BASELINE]
    assert len(baselines) == 2 and not any(t.user_attrs.get(records.INTERRUPTED)
                                           for t in baselines)
    # surplus trials say why they ended
    assert all(t.user_attrs[records.FAIL_REASON] == records.SURPLUS for t in load(storage).trials
               if t.user_attrs.get(records.INTERRUPTED))

def test_balance_is_validated_and_does_nothing_to_a_list_or_a_grid(dataset, storage):
    with pytest.raises(SweepError, match=r"search\.balance: must be one of none, placement, "
                                         r"got 'placment'; did you mean 'placement'"):
        sweep_of(SMALL, "search.balance=placment")
    assert sweep_of(SMALL, "search.balance=off").search.balance == "none"
    assert sweep_of(SMALL).search.balance == "none"
    assert sweep_of(SMALL, "search.balance=placement").balanced
    # a grid runs each of its points once: the example sweep's balance does not get in the way
    grid = sweep_of(SMALL, "search.balance=placement", "search.sampler=grid",
                    "space.learning_rate=[0.01]", "space.momentum=[0.8]", "space.max_norm=[off]",
                    "space.input_rate=[0.2, 0.3]", "space.hidden_rate=[0.2]", "search.trials=9")
    assert not grid.balanced
    run_search(grid, dataset, storage_url=storage, device="cpu", batch=4)
    study = load(storage)
    assert budgets(study) == {"none": 1, "input": 2, "hidden": 1, "both": 2}
    assert records.BALANCE not in study.user_attrs


# ----------------------------------------------------------------------------- the report


def _searched_by_hand(storage: str, budgets: dict[str, tuple[int, int]],
                      balance: dict | None = None) -> optuna.Study:
    """A search study written by hand: per placement, (complete, pruned) trials whose scores
    fall with their number; trial 0 is the baseline."""
    from dropsweep.families.mlp import config as mlp_config

    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    sweep = sweep_of(SMALL)
    study.set_user_attr(records.STUDY_SWEEP, sweep.to_dict())
    if balance is not None:
        study.set_user_attr(records.BALANCE, balance)
    dists = {"placement": CategoricalDistribution(PLACEMENTS),
             "learning_rate": FloatDistribution(0.001, 0.3)}
    number = 0
    for placement, (complete, pruned) in budgets.items():
        for i in range(complete + pruned):
            lr = 0.01 if number == 0 else 0.01 + 0.001 * number
            value = 0.8 - 0.001 * number
            state = TrialState.COMPLETE if i < complete else TrialState.PRUNED
            study.add_trial(create_trial(
                state=state, value=value if state == TrialState.COMPLETE else None,
                intermediate_values={} if state == TrialState.COMPLETE else {2: value},
                params={"placement": placement, "learning_rate": lr}, distributions=dists,
                user_attrs={records.ROLE: records.ROLE_BASELINE if number == 0
                            else records.ROLE_SEARCH, records.ACCURACY_MEAN: value,
                            records.FOLD_ACCURACIES: [value] * 3,
                            records.CONFIG: mlp_config(placement, learning_rate=lr).to_dict()}))
            number += 1
    return study


def _table(report) -> str:
    from rich.console import Console

    from dropsweep.render.report import render_report

    console = Console(record=True, width=250, color_system=None)
    render_report(report, "table", console)
    return console.export_text()


def test_the_table_shows_each_placements_budget_and_marks_uneven_ones(storage):
    from dropsweep.answers.report import build_report

    study = _searched_by_hand(storage, {"none": (4, 1), "input": (9, 2), "hidden": (2, 0)})
    report = build_report(study)
    assert [(p.placement, p.n_trials, p.pruned, p.uneven) for p in report.placements] == [
        ("none", 4, 1, True), ("input", 9, 2, False), ("hidden", 2, 0, True)]
    text = _table(report)
    section = text.split("Best trial of each placement")[1].split("\n\n")[0]
    lines = [line.split() for line in section.splitlines()[3:6]]
    assert [line[:4] for line in lines] == [["none", "4", "!", "1"], ["input", "9", "2", "#5"],
                                            ["hidden", "2", "!", "0"]]
    assert "!: fewer than half the complete trials of input (9)" in section
    assert "trials: as the sampler chose" in section


def test_the_table_says_a_study_was_balanced(storage):
    from dropsweep.answers.report import build_report

    study = _searched_by_hand(storage, {"none": (3, 0), "input": (3, 0), "hidden": (2, 1)},
                              balance={"by": "placement", "since": 0})
    report = build_report(study)
    assert not any(p.uneven for p in report.placements)
    text = _table(report)
    assert "trials: balanced: an equal share each (search.balance: placement)" in text
    assert " ! " not in text.split("Best trial of each placement")[1].split("\n\n")[0]
    data = __import__("json").loads(__import__("dropsweep.render.report", fromlist=["x"])
                                    .json.dumps(__import__("dropsweep.render.report", fromlist=["x"])
                                                .report_to_json(report)))
    assert data["balance"] == {"by": "placement", "since": 0}
    assert [(p["n_trials"], p["pruned"]) for p in data["placements"]] == [(3, 0), (3, 0), (2, 1)]


def test_once_confirmed_per_placement_the_table_shows_the_confirmed_means(storage):
    from dropsweep.answers.report import build_report
    from dropsweep.answers.verdict import build_confirmation

    study = _searched_by_hand(storage, {"none": (3, 0), "input": (3, 0), "hidden": (3, 0)})
    best = {p: next(t for t in study.trials if t.params["placement"] == p) for p in
            ("none", "input", "hidden")}  # the first of each placement scores best
    confirm = optuna.create_study(storage=storage, study_name="s:confirm", direction="maximize")
    confirm.set_user_attr(records.CONFIRM_OF, "s")
    confirm.set_user_attr(records.PER_PLACEMENT, {
        p: {"config": t.user_attrs[records.CONFIG], "source_trial": t.number}
        for p, t in best.items()})
    scores = {"none": [0.80, 0.82, 0.78], "input": [0.90, 0.88, 0.86],
              "hidden": [0.70, 0.74, 0.72]}
    for p, t in best.items():
        for r in range(2):
            folds = [s + 0.01 * r for s in scores[p]]
            confirm.add_trial(create_trial(
                state=TrialState.COMPLETE, value=sum(folds) / 3,
                user_attrs={records.CONFIG: t.user_attrs[records.CONFIG], records.REPEAT: r,
                            records.FOLD_ACCURACIES: folds, records.SOURCE_TRIAL: t.number,
                            records.ROLE: records.ROLE_BASELINE if t.number == 0
                            else records.ROLE_CANDIDATE}))
    report = build_report(study)
    expected = build_confirmation(confirm, folds=3).per_placement.placements
    assert {p.placement: p.confirmed for p in report.placements} == expected
    section = _table(report).split("Each placement's best, confirmed (2 x 3-fold CV on new "
                                   "splits)")[1].split("\n\n")[0]
    rows = {line.split()[0]: line.split() for line in section.splitlines()[3:6]}
    assert rows["input"][3:5] == [f"#{best['input'].number}", "88.50%"]  # not the search's max
    assert rows["hidden"][4] == "72.50%" and rows["none"][-1] == "baseline"
    assert rows["input"][-2] == "+8.00" and rows["input"][-1] == "pp"


@pytest.mark.slow
def test_the_study_records_from_which_trial_it_was_balanced(dataset, storage):
    from dropsweep.render.report import _balance_words
    from dropsweep.answers.report import build_report

    run_search(sweep_of(SMALL, "search.trials=4"), dataset, storage_url=storage, device="cpu")
    assert records.BALANCE not in load(storage).user_attrs  # as every study before balance
    balanced = sweep_of(SMALL, "search.balance=placement")
    run_search(balanced, dataset, storage_url=storage, device="cpu", trials=8)
    report = build_report(load(storage))
    assert report.balance == {"by": "placement", "since": 4}
    assert _balance_words(report.balance) == (
        "balanced: an equal share each (search.balance: placement, from trial #4)")
    run_search(sweep_of(SMALL), dataset, storage_url=storage, device="cpu", trials=9)
    assert build_report(load(storage)).balance == {"by": "none", "since": 8}


@pytest.mark.parametrize("sampler", ["random", "cmaes", "qmc"])
def test_every_sampler_balances(dataset, storage, sampler):
    sweep = sweep_of(SMALL, "search.trials=12", "search.balance=placement",
                     f"search.sampler={sampler}")
    run_search(sweep, dataset, storage_url=storage, device="cpu", batch=5)
    assert budgets(load(storage)) == shares(12, PLACEMENTS)
