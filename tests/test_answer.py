"""The answer: baseline, tuned no-dropout and best dropout set-up, the tuning gain and the
dropout gain, each read at the furthest stage a study reached — held to the formulas
(stats.compare, Holm) on hand-made confirmations, and in words at 80 columns."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from rich.console import Console

from dropsweep import records

from dropsweep.answers import answer

from dropsweep.render import answer as answer_text
from dropsweep.render.answer import print_answer, wrap_whole
from dropsweep.families import family
from dropsweep.answers.rows import TrialRow
from dropsweep.answers.stats import compare, holm, interval
from dropsweep.answers.verdict import Confirmation, ConfirmedRow, PlacementVerdict, config_key

MLP = family("mlp")
FOLDS, REPEATS = 5, 3


def config(placement: str, lr: float = 0.01) -> dict:
    return {"placement": placement, "input_rate": 0.2 if placement in ("input", "both") else None,
            "hidden_rate": 0.5 if placement in ("hidden", "both") else None,
            "learning_rate": lr, "momentum": 0.8, "max_norm": None}


def scores(mean: float, seed: int) -> dict[int, list[float]]:
    rng = np.random.default_rng(seed)
    return {r: list(np.clip(mean + rng.normal(0, 0.02, FOLDS), 0, 1)) for r in range(REPEATS)}


def confirmation(setups: list[tuple[int, str, dict, float]], per_placement: bool = True
                 ) -> Confirmation:
    """(source trial, role, config, true mean) each: scores drawn around the mean."""
    by_key, rows = {}, []
    for i, (trial, role, cfg, mean) in enumerate(setups):
        s = scores(mean, i)
        by_key[config_key(cfg)] = s
        flat = [a for r in sorted(s) for a in s[r]]
        rows.append(ConfirmedRow(trial, role, cfg["placement"], cfg, REPEATS,
                                 interval(flat, FOLDS), None))
    chosen = {}
    for row in rows:  # a candidate stands for its placement; the baseline where none does
        if row.role != records.ROLE_BASELINE or row.placement not in chosen:
            chosen[row.placement] = row
    per = PlacementVerdict(rows, chosen, []) if per_placement else None
    return Confirmation("s:confirm", "s", FOLDS, REPEATS, rows, None, per_placement=per,
                        scores=by_key)


def flat(c: Confirmation, cfg: dict) -> list[float]:
    s = c.scores[config_key(cfg)]
    return [a for r in sorted(s) for a in s[r]]


BASE, TUNED = config("none"), config("none", lr=0.05)
INPUT, HIDDEN = config("input", lr=0.05), config("hidden", lr=0.03)


def test_two_gains_from_the_formula_with_holm_over_every_comparison_drawn_on():
    c = confirmation([(0, records.ROLE_BASELINE, BASE, 0.80), (4, "candidate", TUNED, 0.85),
                      (7, "candidate", INPUT, 0.88), (9, "candidate", HIDDEN, 0.84)])
    f = answer.from_confirmation(c, MLP)
    assert (f.baseline.trial, f.tuned.trial, f.best.trial) == (0, 4, 7)
    tuning = compare(flat(c, TUNED), flat(c, BASE), FOLDS)
    vs_tuned = [compare(flat(c, cfg), flat(c, TUNED), FOLDS) for cfg in (INPUT, HIDDEN)]
    adjusted = holm([tuning.p, *(v.p for v in vs_tuned)])
    assert f.comparisons == 3  # the tuning gain, and each dropout placement vs tuned
    assert f.tuning.diff == tuning.diff and f.tuning.p == tuning.p
    assert f.tuning.p_holm == pytest.approx(adjusted[0])
    assert f.dropout.diff == vs_tuned[0].diff and f.dropout.p_holm == pytest.approx(adjusted[1])
    # the dropout gain is against the tuned no-dropout, not the baseline
    assert f.dropout.diff.mean == pytest.approx(f.best.accuracy.mean - f.tuned.accuracy.mean)


def test_a_tuned_no_dropout_that_is_the_baseline_gains_exactly_nothing_and_is_no_test():
    c = confirmation([(0, records.ROLE_BASELINE, BASE, 0.80), (7, "candidate", INPUT, 0.70)])
    f = answer.from_confirmation(c, MLP)
    assert f.tuned.config == BASE and f.tuning.same and f.tuning.diff.mean == 0
    assert f.comparisons == 1 and f.dropout.diff.mean < 0
    a = answer.build_answer("s", f, 10, confirmation=c, confirmed=f)
    text = answer_text.verdict(a, MLP)
    assert text.startswith("No: no dropout set-up beats tuned no-dropout: the best, input "
                           "dropout 0.2 (#7), is significantly"), text
    assert "tuning gain 0 (the tuned no-dropout is the baseline)" in answer_text.lines(a, MLP)[3]


def test_a_top_k_confirmation_takes_each_placements_best_confirmed_row():
    other_input = config("input", lr=0.2)
    c = confirmation([(0, records.ROLE_BASELINE, BASE, 0.80), (3, "candidate", INPUT, 0.82),
                      (5, "candidate", other_input, 0.86), (4, "candidate", TUNED, 0.81)],
                     per_placement=False)
    f = answer.from_confirmation(c, MLP)
    assert f.best.trial == 5 and f.tuned.trial == 4
    assert f.comparisons == 2  # tuning, and the one dropout placement (its best row)


@pytest.mark.parametrize("mean, start", [
    (0.95, "Yes: input dropout 0.2 (#7) beats the tuned no-dropout by"),
    (0.855, "Not shown: input dropout 0.2 (#7) leads the tuned no-dropout by"),
    (0.80, "No: no dropout set-up beats tuned no-dropout: the best, input dropout 0.2 (#7), "
           "is"),
])
def test_the_verdict_answers_against_the_tuned_no_dropout(mean, start):
    c = confirmation([(0, records.ROLE_BASELINE, BASE, 0.80), (4, "candidate", TUNED, 0.85),
                      (7, "candidate", INPUT, mean)])
    a = answer.build_answer("s", answer.from_confirmation(c, MLP), 10, confirmation=c,
                            confirmed=answer.from_confirmation(c, MLP))
    text = answer_text.verdict(a, MLP)
    assert text.startswith(start), text
    assert "after Holm" in text and "95% CI" in text


def row(number: int, placement: str, mean: float, role: str = "search") -> TrialRow:
    return TrialRow(number, "COMPLETE", mean, config(placement), role=role,
                    fold_accuracies=(mean,) * 3, accuracy_mean=mean)


def test_search_figures_are_maxima_without_tests_and_point_to_confirm():
    rows = [row(7, "input", 0.90), row(4, "none", 0.86), row(0, "none", 0.80, "baseline"),
            row(9, "hidden", 0.85)]
    f = answer.from_search(rows, rows[2], MLP)
    assert (f.baseline.trial, f.tuned.trial, f.best.trial) == (0, 4, 7)
    assert f.comparisons == 0 and math.isnan(f.dropout.p) and math.isnan(f.tuning.diff.low)
    assert f.dropout.diff.mean == pytest.approx(0.04)
    a = answer.build_answer("s", f, 4, storage_args=("--storage", "sqlite:///x.db"))
    assert a.status == answer.SEARCH
    assert a.next == ("dropsweep", "confirm", "--study", "s", "--storage", "sqlite:///x.db")
    lines = answer_text.lines(a, MLP, "sonar.csv")
    assert lines[0] == ("Answer: does dropout help the mlp on sonar.csv? (search only, 4 "
                        "trials: optimistic)")
    assert "on the search's own scores" in lines[1] and lines[-1] == (
        "Next: dropsweep confirm --study s --storage sqlite:///x.db")
    data = answer_text.to_json(a, MLP)
    assert data["status"] == "search" and data["dropout_gain"]["ci"] is None
    assert data["best_dropout"] == {"trial": 7, "placement": "input", "accuracy": 0.90,
                                    "ci": None}


def test_after_a_confirmation_the_next_step_is_the_test_rows_when_there_are_some():
    c = confirmation([(0, records.ROLE_BASELINE, BASE, 0.80), (4, "candidate", TUNED, 0.85),
                      (7, "candidate", INPUT, 0.86)])
    f = answer.from_confirmation(c, MLP)
    assert answer.build_answer("s", f, 9, confirmation=c, confirmed=f,
                               test_rows=450).next == ("dropsweep", "test", "--study", "s")
    more = answer.build_answer("s", f, 9, confirmation=c, confirmed=f, test_rows=0)
    assert not f.dropout.significant and more.next[-2:] == ("--repeats", "10")
    stale = answer.build_answer("s", f, 9, confirmation=c, confirmed=f, test_rows=450,
                                is_stale=True)
    assert stale.next == ("dropsweep", "confirm", "--study", "s")
    assert "new bests since" in answer_text.lines(stale, MLP)[0]


NUMBER = re.compile(r"[-+]?\d+\.\d+%?")


@pytest.mark.parametrize("width", [80, 120, 200])
def test_the_block_fits_and_keeps_every_number_whole(width):
    c = confirmation([(0, records.ROLE_BASELINE, BASE, 0.80), (41, "candidate", TUNED, 0.85),
                      (127, "candidate", config("both", lr=0.0312), 0.88)])
    f = answer.from_confirmation(c, MLP)
    a = answer.build_answer("a-longer-study-name", f, 200, confirmation=c, confirmed=f,
                            test_rows=450)
    console = Console(record=True, width=width, color_system=None)
    print_answer(a, MLP, "sonar.csv", console)
    text = console.export_text()
    assert all(len(line) <= width for line in text.splitlines())
    logical = answer_text.lines(a, MLP, "sonar.csv")
    assert len(logical) <= 6
    # every number of the block is printed whole: none split across a line break
    assert sorted(NUMBER.findall(" ".join(logical))) == sorted(NUMBER.findall(text))
    assert "…" not in text
    for line in text.splitlines():  # an interval or a p-value is never split across lines
        assert line.count("[") == line.count("]"), line
        assert "(95% CI" not in line or ")" in line.split("(95% CI")[1], line
        assert not line.rstrip().endswith(("p =", "CI", "to")), line
    if width == 80:  # the thoughts stand apart: each wrapped one continues indented
        assert all(line.startswith(("Answer:", "Yes:", "No:", "Not ", "baseline", "tuning",
                                    "On the", "Next:", "  ")) for line in text.splitlines() if line)


@pytest.mark.parametrize("width", range(20, 90))
def test_a_wrapped_line_never_ends_inside_an_interval_or_a_p_value(width):
    line = ("Not shown: conv dropout 0.2414 (spatial), Adam lr 0.007031 (#26) leads the tuned "
            "no-dropout by 0.07 points (95% CI -2.19 to +2.33), but not significantly (p = "
            "1.000 after Holm); gain +0.07 points [-2.19, +2.33], p = 0.742 (Holm)")
    parts = wrap_whole(line, width)
    assert " ".join(p.strip() for p in parts) == line
    for part in parts:
        assert not part.rstrip().endswith(("p =", "(p", "CI", "to", "=")), part
        assert part.count("[") == part.count("]"), part


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_search_ends_with_the_answer_and_every_report_format_leads_with_it(tmp_path,
                                                                           monkeypatch,
                                                                           sonar_dir):
    import json

    from click.testing import CliRunner

    from dropsweep.cli import main

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    args = ["search", "sonar", "--set", "train.epochs=4", "--set", "cv.folds=3",
            "--trials", "8", "--batch", "4", "-q"]
    done = runner.invoke(main, args, catch_exceptions=False)
    assert done.exit_code == 0, done.stderr
    block = done.stdout.split("\n\n", 1)[1]  # after the summary line
    assert block.startswith("Answer: does dropout help the mlp on sonar? (search only, 8 "
                            "trials: optimistic)")
    assert "Next: dropsweep confirm --study sonar" in block
    table = runner.invoke(main, ["report"], catch_exceptions=False).stdout
    assert table.startswith(block.rstrip("\n"))  # the same block opens the report
    data = json.loads(runner.invoke(main, ["report", "--format", "json"]).stdout)["answer"]
    assert set(data) >= {"status", "verdict", "baseline", "tuned_no_dropout", "best_dropout",
                         "tuning_gain", "dropout_gain", "test"}
    assert data["status"] == "search" and data["test"] is None
    assert set(data["best_dropout"]) == {"trial", "placement", "accuracy", "ci"}
    assert set(data["dropout_gain"]) >= {"points", "ci", "p"}
    markdown = runner.invoke(main, ["report", "--format", "markdown"]).stdout
    assert markdown.startswith("**Answer: does dropout help the mlp on sonar?")
    assert data["verdict"] in markdown.split("\n\n")[0]
