"""``dropsweep confirm``: repeated k-fold on new splits, stored beside the search, resumable,
and read back into intervals, paired tests and a verdict."""

from __future__ import annotations

import json
from dataclasses import replace

import optuna
import pytest
from click.testing import CliRunner

from dropsweep import records
from dropsweep.cli import main
from dropsweep.study.confirm import (candidates, placement_candidates, placement_record, repeat_seed,
                               run_confirm)
from dropsweep.records import confirm_name
from dropsweep.study.open import stored_sweep
from dropsweep.render.confirmation import verdict_text
from dropsweep.study.runner import run_search
from dropsweep.study.stop import StopFlag
from dropsweep.answers.stats import Comparison, Interval, compare, interval
from dropsweep.answers.verdict import Confirmation, ConfirmedRow, Verdict, build_confirmation

from test_runner import SMALL, sweep_of

@pytest.fixture
def searched(dataset, storage) -> optuna.Study:
    sweep = sweep_of(SMALL, "search.trials=6", "search.sampler=random")
    run_search(sweep, dataset, storage_url=storage, device="cpu", batch=3)
    return optuna.load_study(study_name="small", storage=storage)


def test_candidates_are_the_baseline_then_the_best_distinct_configurations(searched):
    sweep = stored_sweep(searched)
    cands = candidates(searched, sweep, top=2)
    assert cands[0].role == records.ROLE_BASELINE and cands[0].number == 0
    ranked = sorted((t for t in searched.trials if t.number != 0 and t.value is not None),
                    key=lambda t: (-t.value, t.number))
    assert [c.number for c in cands[1:]] == [t.number for t in ranked[:2]]
    assert all(c.role == records.ROLE_CANDIDATE for c in cands[1:])


@pytest.mark.slow
def test_confirm_stores_one_trial_per_configuration_and_repeat_on_new_splits(searched, dataset):
    summary = run_confirm(searched, dataset, top=2, repeats=2, device="cpu")
    assert (summary.total, summary.done, summary.ran) == (6, 6, 6)
    confirm = optuna.load_study(study_name=confirm_name("small"), storage=searched._storage)
    assert confirm.user_attrs[records.CONFIRM_OF] == "small"
    trials = confirm.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6
    sweep = stored_sweep(searched)
    seeds = {int(t.user_attrs[records.REPEAT]): t.user_attrs[records.CV_SEED] for t in trials}
    assert seeds == {0: repeat_seed(sweep, 0), 1: repeat_seed(sweep, 1)}
    assert len(set(seeds.values())) == 2 and sweep.cv.seed not in seeds.values()
    by_number = {t.number: t for t in searched.trials}
    for t in trials:
        assert t.user_attrs[records.CV_SEED] == seeds[t.user_attrs[records.REPEAT]]
        assert len(t.user_attrs[records.FOLD_ACCURACIES]) == 3
        assert t.value == pytest.approx(sum(t.user_attrs[records.FOLD_ACCURACIES]) / 3)
        source = by_number[t.user_attrs[records.SOURCE_TRIAL]]
        assert t.params == source.params  # the same configuration, as Optuna sees it
        assert t.user_attrs[records.CONFIG] == source.user_attrs[records.CONFIG]


@pytest.mark.slow
def test_an_interrupted_confirmation_resumes_without_redoing_anything(searched, dataset):
    stop = StopFlag()

    def after_first(summary):
        stop.signal = 2

    first = run_confirm(searched, dataset, top=2, repeats=3, device="cpu", stop=stop,
                        on_repeat=after_first)
    assert first.done == 3 and first.stopped_by == 2
    confirm = optuna.load_study(study_name=confirm_name("small"), storage=searched._storage)
    kept = {t.number: t.value for t in confirm.trials}
    second = run_confirm(searched, dataset, top=2, repeats=3, device="cpu")
    assert (second.done, second.ran) == (9, 6)
    trials = confirm.get_trials(deepcopy=False)
    assert {t.number: t.value for t in trials if t.number in kept} == kept
    pairs = [(json.dumps(t.user_attrs[records.CONFIG], sort_keys=True),
              t.user_attrs[records.REPEAT]) for t in trials if t.state.name == "COMPLETE"]
    assert len(pairs) == len(set(pairs)) == 9


def test_a_second_ctrl_c_while_a_trial_is_asked_leaves_none_running(searched, dataset,
                                                                      monkeypatch):
    """Two Ctrl-Cs landing just after a trial is made in the storage, before it is held (the
    race a subprocess test lost under load): the trial is held first, then the stop comes at
    once, and every trial it made is given back: none stays RUNNING."""
    import os
    import signal
    import time

    from dropsweep.study import confirm as confirming
    from dropsweep.study.stop import stop_on_signals

    real = confirming.ask_trial
    pressed = []

    def ask_then_pressed_twice(*args, **kwargs):
        asked = real(*args, **kwargs)  # in the storage, RUNNING, not yet held
        if not pressed:
            pressed.append(1)
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # the handler runs at the next bytecode, well within this
        return asked

    monkeypatch.setattr(confirming, "ask_trial", ask_then_pressed_twice)
    with stop_on_signals(StopFlag()) as stop:
        summary = run_confirm(searched, dataset, top=2, repeats=2, device="cpu", stop=stop)
    assert summary.stopped_by == signal.SIGINT and summary.done == 0
    confirm = optuna.load_study(study_name=confirm_name("small"), storage=searched._storage)
    states = [t.state.name for t in confirm.get_trials(deepcopy=False)]
    assert states and "RUNNING" not in states, states


@pytest.mark.slow
def test_the_confirmation_reads_into_corrected_intervals_and_paired_tests(searched, dataset):
    run_confirm(searched, dataset, top=2, repeats=2, device="cpu")
    confirm = optuna.load_study(study_name=confirm_name("small"), storage=searched._storage)
    result = build_confirmation(confirm, folds=3)
    assert result.confirms == "small" and result.repeats == 2 and len(result.rows) == 3
    base = result.rows[0]
    assert base.role == records.ROLE_BASELINE and base.vs_baseline is None

    def folds_of(source: int) -> list[float]:
        rows = sorted((t for t in confirm.trials if t.user_attrs[records.SOURCE_TRIAL] == source),
                      key=lambda t: t.user_attrs[records.REPEAT])
        return [a for t in rows for a in t.user_attrs[records.FOLD_ACCURACIES]]

    assert base.accuracy == interval(folds_of(0), 3)
    for row in result.rows[1:]:
        assert row.accuracy == interval(folds_of(row.source_trial), 3)
        assert row.vs_baseline == compare(folds_of(row.source_trial), folds_of(0), 3)
    assert result.verdict is not None
    assert result.verdict.best.accuracy.mean == max(r.accuracy.mean for r in result.rows[1:])


def _row(source: int, role: str, placement: str, mean: float, p: float | None,
         **settings: float | None) -> ConfirmedRow:
    cmp = None if p is None else Comparison(Interval(mean - 0.85, mean - 0.9, mean - 0.8, 50),
                                            2.0, p)
    config = {"placement": placement, "input_rate": 0.2, "hidden_rate": 0.5,
              "learning_rate": 0.01, "momentum": 0.8, "max_norm": None, **settings}
    return ConfirmedRow(source, role, placement, config,
                        5, Interval(mean, mean - 0.05, mean + 0.05, 50), cmp)


@pytest.mark.parametrize("mean,p,words", [
    (0.90, 0.01, "input dropout 0.2 (trial #7) beats no dropout: 90.00% vs 85.00%"),
    (0.87, 0.40, "is ahead of no dropout, but not significantly"),
    (0.84, 0.60, "no set-up beats no dropout; the best, input dropout 0.2 (trial #7)"),
])
def test_the_verdict_in_words(mean, p, words):
    base = _row(0, records.ROLE_BASELINE, "none", 0.85, None)
    best = _row(7, records.ROLE_CANDIDATE, "input", mean, p)
    confirmation = Confirmation("s:confirm", "s", 10, 5, [base, best],
                                Verdict(best, base, p < 0.05, mean > 0.85))
    text = verdict_text(confirmation)
    assert text.startswith("Verdict: ") and words in text, text
    assert f"p = {p:.3f}" in text and "5 x 10-fold CV" in text


def test_a_verdict_without_an_interval_yet_prints_no_nan():
    """One hold-out repeat (an interrupted confirmation) has a difference but no interval."""
    base = _row(0, records.ROLE_BASELINE, "none", 0.85, None)
    best = _row(7, records.ROLE_CANDIDATE, "input", 0.9, 0.01)
    nan = float("nan")
    best = replace(best, vs_baseline=Comparison(Interval(0.05, nan, nan, 1), nan, nan))
    text = verdict_text(Confirmation("s:confirm", "s", 10, 1, [base, best],
                                     Verdict(best, base, False, True)))
    assert "nan" not in text and "+5.00 points" in text, text

def test_a_best_candidate_without_dropout_is_described_by_what_differs():
    base = _row(0, records.ROLE_BASELINE, "none", 0.8386, None)
    best = _row(6, records.ROLE_CANDIDATE, "none", 0.86, 0.30, learning_rate=0.05,
                momentum=0.9, max_norm=3.0)
    text = verdict_text(Confirmation("s:confirm", "s", 10, 5, [base, best],
                                     Verdict(best, base, False, True)))
    assert ("no dropout with learning rate 0.05, momentum 0.9, max-norm 3 (trial #6) is ahead "
            "of the baseline (no dropout with learning rate 0.01, momentum 0.8, max-norm off)"
            in text), text
    assert "86.00% vs 83.86% for the baseline" in text and "without dropout" not in text
    assert "no dropout (trial #6)" not in text


def test_a_dropout_candidate_also_says_what_else_differs():
    base = _row(0, records.ROLE_BASELINE, "none", 0.85, None)
    best = _row(7, records.ROLE_CANDIDATE, "input", 0.9, 0.01, learning_rate=0.1)
    text = verdict_text(Confirmation("s:confirm", "s", 10, 5, [base, best],
                                     Verdict(best, base, True, True)))
    assert "input dropout 0.2 with learning rate 0.1 (trial #7) beats no dropout" in text, text


def _searched_rows(monkeypatch, dataset) -> None:
    """The command loads the rows the study was searched on, the blobs: its sweep names
    Sonar, whose rows it would refuse as not the study's."""
    from dropsweep.data import dataset as data

    monkeypatch.setattr(data, "load_dataset", lambda sweep: dataset)


@pytest.mark.slow
def test_confirm_on_the_command_line(searched, dataset, storage, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _searched_rows(monkeypatch, dataset)
    result = CliRunner().invoke(main, ["confirm", "--storage", storage, "--study", "small",
                                       "--top", "1", "--repeats", "2", "--device", "cpu"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert "Confirmed" in result.stdout and "Verdict: " in result.stdout
    assert "4 of 4 (configuration, repeat) done" in result.stderr


def test_a_result_another_run_took_meanwhile_is_counted_as_lost(searched, dataset, monkeypatch):
    """A trial failed as stale by another run while this one was paused: its result is
    dropped and counted (the CLI says so and how to resume), the others are recorded."""
    from dropsweep.storage import results

    real, calls = results.record_result, []

    def taken_once(study, trial, result):
        calls.append(trial.number)
        if len(calls) == 1:
            raise optuna.exceptions.UpdateFinishedTrialError("failed as stale meanwhile")
        return real(study, trial, result)

    monkeypatch.setattr(results, "record_result", taken_once)
    summary = run_confirm(searched, dataset, top=1, repeats=1, device="cpu")
    assert summary.lost == 1 and summary.total == 2 and summary.done == summary.ran == 1


# ----------------------------------------------------------------------------- per placement

PLACEMENTS = ("none", "input", "hidden")


@pytest.fixture
def placed(dataset, storage) -> optuna.Study:
    """A small random search over three placements, each of them tried."""
    sweep = sweep_of(SMALL, "search.trials=12", "search.sampler=random",
                     "space.placement=[none, input, hidden]")
    run_search(sweep, dataset, storage_url=storage, device="cpu", batch=6)
    study = optuna.load_study(study_name="small", storage=storage)
    assert {t.params["placement"] for t in study.trials} == set(PLACEMENTS)
    return study


def _hand_bests(study: optuna.Study) -> dict[str, optuna.trial.FrozenTrial]:
    """Each placement's best complete trial, ranked by hand: highest value, then earliest."""
    best: dict[str, optuna.trial.FrozenTrial] = {}
    for t in study.trials:
        if t.state.name != "COMPLETE":
            continue
        p = t.user_attrs[records.CONFIG]["placement"]
        if p not in best or (-t.value, t.number) < (-best[p].value, best[p].number):
            best[p] = t
    return best


def test_placement_candidates_are_the_baseline_then_each_placements_best(placed):
    sweep = stored_sweep(placed)
    cands = placement_candidates(placed, sweep)
    best = _hand_bests(placed)
    base = sweep.baseline.to_dict()
    assert cands[0].role == records.ROLE_BASELINE and cands[0].number == 0
    assert cands[0].config == sweep.baseline
    assert cands[0].placement == ("none" if best["none"].user_attrs[records.CONFIG] == base
                                  else None)
    want = [(p, best[p].number) for p in PLACEMENTS if best[p].user_attrs[records.CONFIG] != base]
    assert [(c.placement, c.number) for c in cands[1:]] == want
    assert all(c.role == records.ROLE_CANDIDATE for c in cands[1:])
    for c in cands[1:]:
        assert c.config.to_dict() == best[c.placement].user_attrs[records.CONFIG]


def _search_study(storage: str, trials: list[tuple[float, dict, str]]) -> optuna.Study:
    """A search study written by hand: (value, config overrides, role) per trial."""
    from optuna.trial import create_trial
    from dropsweep.families.mlp import MLP, config as mlp_config
    from dropsweep.study.runner import open_search
    from dropsweep.sweep.space import config_values, fixed_distributions, space_of

    sweep = sweep_of(SMALL)
    study, _ = open_search(sweep, storage_url=storage)
    space = space_of(sweep)
    for value, settings, role in trials:
        config = sweep.baseline if role == records.ROLE_BASELINE else mlp_config(**settings)
        study.add_trial(create_trial(
            state=optuna.trial.TrialState.COMPLETE, value=value,
            params=config_values(config, MLP.dimensions, space),
            distributions=fixed_distributions(config, MLP.dimensions, space),
            user_attrs={records.CONFIG: config.to_dict(), records.ROLE: role}))
    return study


def test_the_baseline_stands_for_its_placement_when_it_is_that_placements_best(storage):
    search = records.ROLE_SEARCH
    study = _search_study(storage, [
        (0.80, {}, records.ROLE_BASELINE),                                          # 0
        (0.70, {"learning_rate": 0.05}, search),                                    # 1: none
        (0.85, {"placement": "input", "input_rate": 0.2}, search),                  # 2
        (0.90, {"placement": "input", "input_rate": 0.3}, search),                  # 3: best
        (0.90, {"placement": "input", "input_rate": 0.4}, search),                  # 4: a tie
        (0.75, {"placement": "both", "input_rate": 0.2, "hidden_rate": 0.3}, search),  # 5
    ])
    sweep = stored_sweep(study)
    cands = placement_candidates(study, sweep)
    assert [(c.number, c.placement, c.role) for c in cands] == [
        (0, "none", records.ROLE_BASELINE), (3, "input", records.ROLE_CANDIDATE),
        (5, "both", records.ROLE_CANDIDATE)]  # no hidden trial: no hidden row
    assert placement_record(cands) == {
        "none": {"config": sweep.baseline.to_dict(), "source_trial": 0},
        "input": {"config": cands[1].config.to_dict(), "source_trial": 3},
        "both": {"config": cands[2].config.to_dict(), "source_trial": 5}}


@pytest.mark.slow
def test_confirm_per_placement_records_what_it_confirmed(placed, dataset, storage):
    summary = run_confirm(placed, dataset, repeats=2, device="cpu", per_placement=True)
    sweep = stored_sweep(placed)
    cands = placement_candidates(placed, sweep)
    assert (summary.total, summary.done, summary.ran) == (2 * len(cands),) * 3
    confirm = optuna.load_study(study_name=confirm_name("small"), storage=storage)
    best = _hand_bests(placed)
    stored = confirm.user_attrs[records.PER_PLACEMENT]
    assert list(stored) == list(PLACEMENTS)
    for p in PLACEMENTS:
        config = best[p].user_attrs[records.CONFIG]
        if config == sweep.baseline.to_dict():
            assert stored[p] == {"config": config, "source_trial": 0}
        else:
            assert stored[p] == {"config": config, "source_trial": best[p].number}
    trials = confirm.get_trials(deepcopy=False)
    pairs = sorted((t.user_attrs[records.SOURCE_TRIAL], t.user_attrs[records.REPEAT])
                   for t in trials if t.state.name == "COMPLETE")
    assert pairs == sorted((c.number, r) for c in cands for r in range(2))

    result = build_confirmation(confirm, folds=3)
    pv = result.per_placement
    assert pv is not None and [r.source_trial for r in pv.rows] == [c.number for c in cands]
    assert set(pv.placements) == set(PLACEMENTS)
    assert len(pv.pairs) == len(cands) * (len(cands) - 1) // 2
    assert all(p.comparison.diff.mean >= 0 and p.comparison.diff.n == 6 for p in pv.pairs)


@pytest.mark.slow
def test_a_rerun_after_the_search_grew_records_the_current_bests(placed, dataset, storage):
    run_confirm(placed, dataset, repeats=2, device="cpu", per_placement=True)
    confirm = optuna.load_study(study_name=confirm_name("small"), storage=storage)
    # the search grows, and one placement gets a new best by hand (a trial the search ran)
    first = dict(confirm.user_attrs[records.PER_PLACEMENT])
    study = _grow_with_a_new_best(placed, "hidden")
    again = run_confirm(study, dataset, repeats=2, device="cpu", per_placement=True)
    now = confirm.user_attrs[records.PER_PLACEMENT]
    assert now == placement_record(placement_candidates(study, stored_sweep(study)))
    assert now["hidden"]["source_trial"] == study.trials[-1].number != first["hidden"][
        "source_trial"]
    assert {p: now[p] for p in now if p != "hidden"} == {p: first[p] for p in first
                                                         if p != "hidden"}
    assert again.ran == 2  # only the new hidden best trained: the rest was reused


def _grow_with_a_new_best(study: optuna.Study, placement: str) -> optuna.Study:
    """A copy of ``placement``'s best with a new learning rate, recorded as a search trial
    that scored 100%: that placement's new best."""
    from optuna.trial import create_trial

    best = _hand_bests(study)[placement]
    config = {**best.user_attrs[records.CONFIG], "learning_rate": 0.123}
    study.add_trial(create_trial(
        state=optuna.trial.TrialState.COMPLETE, value=1.0,
        params={**best.params, "learning_rate": 0.123}, distributions=best.distributions,
        user_attrs={records.CONFIG: config, records.ROLE: records.ROLE_SEARCH}))
    return study


@pytest.mark.slow
def test_confirm_per_placement_on_the_command_line(placed, dataset, storage, tmp_path,
                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "250")  # a wide terminal: no header wraps ("Holm p")
    _searched_rows(monkeypatch, dataset)
    result = CliRunner().invoke(main, ["confirm", "--storage", storage, "--study", "small",
                                       "--per-placement", "--repeats", "2", "--device", "cpu"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert ("confirming study 'small': the baseline and the best configuration of each "
            "placement, 2 x 3-fold CV on new splits") in result.stderr
    out = " ".join(result.stdout.split())  # rich may wrap the note
    assert "Confirmed" in out and "Per-placement comparison" in out
    assert ("Per placement (2 x 3-fold CV on new splits, Nadeau-Bengio corrected t-tests, "
            "p-values Holm-adjusted over") in out
    assert "Holm p" in out and "ahead" in out


def test_top_is_refused_with_per_placement(placed, storage):
    result = CliRunner().invoke(main, ["confirm", "--storage", storage, "--study", "small",
                                       "--per-placement", "--top", "3"])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--top" in lines[0] and "--per-placement" in lines[0], lines
    confirm = confirm_name("small")
    assert confirm not in [s.study_name for s in optuna.get_all_study_summaries(storage)]


# fold scores of 2 repeats x 5 folds: input is 5 points ahead of the baseline on every fold
# (give or take 1), hidden and both swing +-10 points around it
BASE = [0.80, 0.82, 0.78, 0.84, 0.76, 0.81, 0.79, 0.83, 0.77, 0.80]
JITTER = [0.01, -0.01, 0.005, -0.005, 0, 0.01, -0.01, 0.005, -0.005, 0]  # sums to 0
SWING_H = [0.10, -0.08, 0.06, -0.10, 0.04, -0.06, 0.08, -0.04, 0.10, -0.05]  # mean +0.005
SWING_B = [-0.09, 0.07, -0.05, 0.11, -0.03, 0.05, -0.09, 0.06, -0.08, 0.03]  # mean -0.002
SCORES = {
    "none": BASE,
    "input": [b + 0.05 + j for b, j in zip(BASE, JITTER)],
    "hidden": [b + s for b, s in zip(BASE, SWING_H)],
    "both": [b + s for b, s in zip(BASE, SWING_B)],
}
SOURCES = {"none": 0, "input": 5, "hidden": 7, "both": 9}


def _placed_config(placement: str) -> dict:
    from dropsweep.families.mlp import config as mlp_config

    rates = {"none": {}, "input": {"input_rate": 0.2}, "hidden": {"hidden_rate": 0.5},
             "both": {"input_rate": 0.2, "hidden_rate": 0.5}}[placement]
    return mlp_config(placement, **rates).to_dict()


def _hand_confirmation(storage: str, placements=tuple(SCORES), repeats=(0, 1)) -> optuna.Study:
    """A confirmation study written by hand: 2 x 5-fold scores of SCORES, the baseline
    standing for "none"."""
    from optuna.trial import create_trial

    confirm = optuna.create_study(storage=storage, study_name="s:confirm", direction="maximize")
    confirm.set_user_attr(records.CONFIRM_OF, "s")
    confirm.set_user_attr(records.PER_PLACEMENT, {
        p: {"config": _placed_config(p), "source_trial": SOURCES[p]} for p in placements})
    for p in placements:
        for r in repeats:
            folds = SCORES[p][5 * r:5 * r + 5]
            confirm.add_trial(create_trial(
                state=optuna.trial.TrialState.COMPLETE, value=sum(folds) / 5,
                user_attrs={records.CONFIG: _placed_config(p), records.REPEAT: r,
                            records.FOLD_ACCURACIES: folds, records.SOURCE_TRIAL: SOURCES[p],
                            records.ROLE: records.ROLE_BASELINE if p == "none"
                            else records.ROLE_CANDIDATE}))
    return confirm


def test_every_pair_of_placements_is_compared_and_holm_adjusted(storage):
    from dropsweep.render.confirmation import confirmation_to_json, placement_verdict_text
    from dropsweep.answers.stats import holm

    result = build_confirmation(_hand_confirmation(storage), folds=5)
    pv = result.per_placement
    assert [r.source_trial for r in pv.rows] == [0, 5, 7, 9]
    assert {p: r.source_trial for p, r in pv.placements.items()} == SOURCES
    got = [(p.ahead.placement, p.behind.placement, p.comparison.diff.mean) for p in pv.pairs]
    approx = pytest.approx
    assert got == [("input", "none", approx(0.05)), ("hidden", "none", approx(0.005)),
                   ("none", "both", approx(0.002)), ("input", "hidden", approx(0.045)),
                   ("input", "both", approx(0.052)), ("hidden", "both", approx(0.007))]
    for p in pv.pairs:
        assert p.comparison == compare(SCORES[p.ahead.placement], SCORES[p.behind.placement], 5)
    assert [p.p_adjusted for p in pv.pairs] == holm([p.comparison.p for p in pv.pairs])
    assert [p.significant for p in pv.pairs] == [True] + [False] * 5
    assert pv.pairs[0].p_adjusted == pytest.approx(6 * pv.pairs[0].comparison.p)

    text = placement_verdict_text(result)
    assert ("2 x 5-fold CV on new splits, Nadeau-Bengio corrected t-tests, p-values "
            "Holm-adjusted over 6 comparisons") in text, text
    assert ("the no-dropout baseline 80.00%; input dropout 0.2 (#5) 85.00%; hidden dropout 0.5 "
            "(#7) 80.50%; both dropout 0.2 / 0.5 (#9) 79.80%.") in text, text
    low, high = (x * 100 for x in (pv.pairs[0].comparison.diff.low,
                                   pv.pairs[0].comparison.diff.high))
    assert (f"Significant at 5%: input dropout 0.2 (#5) is ahead of the no-dropout baseline by "
            f"5.00 points (95% CI {low:+.2f} to {high:+.2f}), adjusted p < 0.001.") in text, text
    assert ("No other difference is significant at 5%; neither hidden dropout 0.5 (#7) nor both "
            "dropout 0.2 / 0.5 (#9) differs significantly from no dropout.") in text, text

    data = confirmation_to_json(result)["per_placement"]
    assert list(data["rows"]) == list(SCORES) and data["comparisons"] == 6
    assert data["rows"]["none"]["role"] == records.ROLE_BASELINE and data["text"] == text
    assert data["pairs"][0]["p_adjusted"] == pv.pairs[0].p_adjusted
    assert data["pairs"][0]["diff"]["mean"] == pytest.approx(0.05)


def test_nothing_significant_names_the_largest_difference_and_shared_repeats_only(storage):
    from dropsweep.render.confirmation import placement_verdict_text

    confirm = _hand_confirmation(storage, placements=("none", "hidden", "both"))
    confirm.set_user_attr(records.PER_PLACEMENT, {  # "input" chosen, not confirmed yet
        **confirm.user_attrs[records.PER_PLACEMENT],
        "input": {"config": _placed_config("input"), "source_trial": 5}})
    for t in confirm.get_trials(deepcopy=False):  # one more repeat of the baseline alone
        if t.user_attrs[records.ROLE] == records.ROLE_BASELINE and t.user_attrs[records.REPEAT]:
            confirm.add_trial(optuna.trial.create_trial(
                state=t.state, value=t.value, user_attrs={**t.user_attrs, records.REPEAT: 2}))
    result = build_confirmation(confirm, folds=5)
    pv = result.per_placement
    assert "input" not in pv.placements and len(pv.rows) == 3
    assert all(p.comparison.diff.n == 10 for p in pv.pairs)  # repeat 2: the baseline's alone
    assert not any(p.significant for p in pv.pairs)
    text = placement_verdict_text(result)
    assert "3 x 5-fold CV" in text and "over 3 comparisons" in text, text
    largest = pv.pairs[2]
    assert (largest.ahead.placement, largest.behind.placement) == ("hidden", "both")
    assert ("No difference is significant at 5% (the largest: hidden dropout 0.5 (#7) is ahead "
            "of both dropout 0.2 / 0.5 (#9) by 0.70 points (95% CI ") in text, text
    assert "neither hidden dropout 0.5 (#7) nor both dropout 0.2 / 0.5 (#9) differs" in text


def test_no_per_placement_reading_without_its_record_or_two_rows(storage):
    from dropsweep.render.confirmation import confirmation_to_json

    confirm = _hand_confirmation(storage)
    confirm.set_user_attr(records.PER_PLACEMENT, "not a dict")
    assert build_confirmation(confirm, folds=5).per_placement is None
    confirm.set_user_attr(records.PER_PLACEMENT, {"none": {"config": _placed_config("none")}})
    result = build_confirmation(confirm, folds=5)
    assert result.per_placement is None and confirmation_to_json(result)["per_placement"] is None


# ----------------------------------------------------------------------------- the default
# (issue 25: per placement, the tuned no-dropout among the rows; --top K as an option)


@pytest.mark.slow
def test_confirm_by_default_confirms_each_placements_best(placed, dataset, storage, tmp_path,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    _searched_rows(monkeypatch, dataset)
    result = CliRunner().invoke(main, ["confirm", "--storage", storage, "--study", "small",
                                       "--repeats", "2", "--device", "cpu"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert ("confirming study 'small': the baseline and the best configuration of each "
            "placement, 2 x 3-fold CV on new splits") in result.stderr
    assert "Per-placement comparison" in " ".join(result.stdout.split())
    confirm = optuna.load_study(study_name=confirm_name("small"), storage=storage)
    cands = placement_candidates(placed, stored_sweep(placed))
    assert confirm.user_attrs[records.PER_PLACEMENT] == placement_record(cands)
    # the tuned no-dropout is a row: the best of placement none, the baseline among them
    best_none = _hand_bests(placed)["none"].number
    confirmed = {t.user_attrs[records.SOURCE_TRIAL] for t in confirm.trials}
    assert confirmed == {c.number for c in cands} and best_none in confirmed


@pytest.mark.slow
def test_run_confirm_by_default_is_per_placement(placed, dataset, storage):
    summary = run_confirm(placed, dataset, repeats=2, device="cpu")
    cands = placement_candidates(placed, stored_sweep(placed))
    assert summary.total == 2 * len(cands)
    confirm = optuna.load_study(study_name=confirm_name("small"), storage=storage)
    assert confirm.user_attrs[records.PER_PLACEMENT] == placement_record(cands)
    with pytest.raises(ValueError, match="top does not apply with per_placement"):
        run_confirm(placed, dataset, top=2, per_placement=True)


@pytest.mark.slow
def test_top_k_confirms_as_before_and_per_placement_is_a_hidden_alias(placed, dataset, storage,
                                                                      tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _searched_rows(monkeypatch, dataset)
    runner = CliRunner()
    help_text = runner.invoke(main, ["confirm", "--help"]).stdout
    assert "--per-placement" not in help_text and "--top K" in help_text
    top = runner.invoke(main, ["confirm", "--storage", storage, "--study", "small", "--top",
                               "1", "--repeats", "2", "--device", "cpu"],
                        catch_exceptions=False)
    assert top.exit_code == 0, top.stderr
    assert "the baseline and the 1 best configurations" in top.stderr
    confirm = optuna.load_study(study_name=confirm_name("small"), storage=storage)
    assert records.PER_PLACEMENT not in confirm.user_attrs  # today's top-K confirmation
    assert "Per-placement comparison" not in top.stdout and "Verdict: " in top.stdout
    assert {t.user_attrs[records.SOURCE_TRIAL] for t in confirm.trials} == {
        c.number for c in candidates(placed, stored_sweep(placed), 1)}
    # --per-placement, as scripts spell it, is the default
    alias = runner.invoke(main, ["confirm", "--storage", storage, "--study", "small",
                                 "--per-placement", "--repeats", "2", "--device", "cpu"],
                          catch_exceptions=False)
    assert alias.exit_code == 0, alias.stderr
    assert "the best configuration of each placement" in alias.stderr
    confirm = optuna.load_study(study_name=confirm_name("small"), storage=storage)
    assert records.PER_PLACEMENT in confirm.user_attrs


def test_confirmations_stored_before_issue_25_report_as_they_did(tmp_path, monkeypatch):
    """tests/golden/before-25.db: digits studies confirmed by the code before issue 25,
    'small' with --top 1 (no per_placement record) and 'placed' with --per-placement;
    before-25.json: their reports' confirmations then."""
    import shutil
    from pathlib import Path

    golden = Path(__file__).resolve().parent / "golden"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    shutil.copy(golden / "before-25.db", tmp_path / "results" / "dropsweep.db")
    before = json.loads((golden / "before-25.json").read_text())
    assert before["small"]["confirmation"]["per_placement"] is None
    assert before["placed"]["confirmation"]["per_placement"] is not None
    for name in ("small", "placed"):
        result = CliRunner().invoke(main, ["report", "--study", name, "--format", "json"],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["confirmation"] == before[name]["confirmation"], name


@pytest.mark.slow
def test_a_repeat_whose_recording_a_kill_cut_short_is_trained_whole_again(placed, dataset,
                                                                          storage, tmp_path,
                                                                          monkeypatch):
    """A kill while a repeat's results were being recorded leaves some recorded and some
    running (then failed as stale). The rerun trains that repeat's whole batch again, in its
    order, and records only the missing: a model's starting weights depend on its place in
    the batch, so the missing results are those of a confirmation never stopped."""
    from dropsweep.study import confirm as confirming

    other = tmp_path / "other.db"  # the same search again, on its own
    run_search(sweep_of(SMALL, "search.trials=12", "search.sampler=random",
                        "space.placement=[none, input, hidden]"),
               dataset, storage_url=f"sqlite:///{other}", device="cpu", batch=6)
    run_confirm(placed, dataset, repeats=2, device="cpu")
    plain = optuna.load_study(study_name=confirm_name("small"), storage=storage)

    def values(study):
        return sorted((t.user_attrs[records.REPEAT], t.user_attrs[records.SOURCE_TRIAL],
                       t.value) for t in study.trials if t.state.name == "COMPLETE")

    searched = optuna.load_study(study_name="small", storage=f"sqlite:///{other}")
    recorded = confirming.record_batch

    def killed_after_two(study, trials, results, lost):  # the process dies mid-recording
        for n, item in enumerate(recorded(study, trials, results, lost)):
            yield item
            if n == 1:
                raise KeyboardInterrupt

    monkeypatch.setattr(confirming, "record_batch", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_confirm(searched, dataset, repeats=2, device="cpu")
    monkeypatch.setattr(confirming, "record_batch", recorded)
    cut = optuna.load_study(study_name=confirm_name("small"), storage=f"sqlite:///{other}")
    assert sum(t.state.name == "COMPLETE" for t in cut.trials) == 2  # of the repeat's four
    run_confirm(searched, dataset, repeats=2, device="cpu")
    again = optuna.load_study(study_name=confirm_name("small"), storage=f"sqlite:///{other}")
    assert values(again) == values(plain)
