"""``dropsweep confirm``: repeated k-fold on new splits, stored beside the search, resumable,
and read back into intervals, paired tests and a verdict."""

from __future__ import annotations

import json

import optuna
import pytest
from click.testing import CliRunner

from dropsweep import records
from dropsweep.cli import main
from dropsweep.confirm import candidates, repeat_seed, run_confirm
from dropsweep.records import confirm_name
from dropsweep.study import stored_sweep
from dropsweep.render import verdict_text
from dropsweep.runner import StopFlag, run_search
from dropsweep.stats import Comparison, Interval, compare, interval
from dropsweep.verdict import Confirmation, ConfirmedRow, Verdict, build_confirmation

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


def test_confirm_on_the_command_line(searched, storage, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["confirm", "--storage", storage, "--study", "small",
                                       "--top", "1", "--repeats", "2", "--device", "cpu"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert "Confirmed" in result.stdout and "Verdict: " in result.stdout
    assert "4 of 4 (configuration, repeat) done" in result.stderr


def test_a_result_another_run_took_meanwhile_is_counted_as_lost(searched, dataset, monkeypatch):
    """A trial failed as stale by another run while this one was paused: its result is
    dropped and counted (the CLI says so and how to resume), the others are recorded."""
    from dropsweep import results

    real, calls = results.record_result, []

    def taken_once(study, trial, result):
        calls.append(trial.number)
        if len(calls) == 1:
            raise optuna.exceptions.UpdateFinishedTrialError("failed as stale meanwhile")
        return real(study, trial, result)

    monkeypatch.setattr(results, "record_result", taken_once)
    summary = run_confirm(searched, dataset, top=1, repeats=1, device="cpu")
    assert summary.lost == 1 and summary.total == 2 and summary.done == summary.ran == 1
