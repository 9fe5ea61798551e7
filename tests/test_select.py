"""--select best|1se, --compare, the overfitting view and --plots."""

from __future__ import annotations

import builtins
import math

import numpy as np
import pytest
from click.testing import CliRunner

from dropsweep.cli import main
from optuna.study import StudyDirection

from dropsweep.answers.rows import PlacementRow, TrialRow, best_first
from dropsweep.families.mlp import DIMENSIONS as DIMS
from dropsweep.answers.select import compare_studies, select, simplicity, standard_error

from test_cli import FAST, SONAR_SWEEP, in_tmp  # noqa: F401 - fixture


def row(number: int, placement: str, mean: float, spread: float = 0.05, **params) -> TrialRow:
    folds = tuple(mean + spread * d for d in (-1, 1, -1, 1, 0))
    return TrialRow(number, "COMPLETE", mean, {"placement": placement, **params},
                    fold_accuracies=folds, accuracy_mean=mean)


def test_best_takes_the_highest_mean_and_ties_the_earlier_trial():
    rows = [row(0, "none", 0.85), row(1, "both", 0.90), row(2, "input", 0.90)]
    chosen = select(best_first(rows, StudyDirection.MAXIMIZE), "best", DIMS)
    assert chosen.chosen.number == 1 and chosen.best.number == 1 and chosen.threshold is None


def test_1se_takes_the_simplest_within_one_standard_error_of_the_best():
    best = row(1, "both", 0.90, input_rate=0.2, hidden_rate=0.5)
    se = float(np.std(best.fold_accuracies, ddof=1) / math.sqrt(5))
    assert standard_error(best) == pytest.approx(se)
    rows = [row(0, "none", 0.90 - 1.5 * se),  # outside: not chosen though simplest
            best,
            row(2, "hidden", 0.90 - 0.5 * se, hidden_rate=0.3),
            row(3, "input", 0.90 - 0.9 * se, input_rate=0.4, max_norm=3.0),
            row(4, "input", 0.90 - 0.8 * se, input_rate=0.2, max_norm=3.0),
            row(5, "input", 0.90 - 0.95 * se, input_rate=0.2)]
    chosen = select(best_first(rows, StudyDirection.MAXIMIZE), "1se", DIMS)
    assert chosen.threshold == pytest.approx(0.90 - se)
    # input beats hidden and both; among inputs the lowest rate; then no max-norm
    assert chosen.chosen.number == 5 and chosen.best.number == 1
    assert simplicity(rows[0], DIMS) < simplicity(rows[5], DIMS) < simplicity(rows[4], DIMS) < simplicity(rows[3], DIMS)
    assert select([], "1se", DIMS) is None
    with pytest.raises(ValueError):
        select(rows, "worst", DIMS)


def test_compare_puts_each_placement_of_each_study_side_by_side():
    class R:  # the only parts of a StudyReport compare_studies reads
        def __init__(self, placements):
            self.placements = placements
            self.family = "mlp"

    a = R([PlacementRow("none", 3, row(0, "none", 0.85), 0.0),
           PlacementRow("input", 5, row(4, "input", 0.88), 0.03)])
    b = R([PlacementRow("both", 2, row(7, "both", 0.80), -0.02)])
    compared = compare_studies([a, b])
    assert [c.placement for c in compared] == ["none", "input", "both"]
    assert [[None if x is None else x.best.number for x in c.cells] for c in compared] == [
        [0, None], [4, None], [None, 7]]


@pytest.mark.slow
def test_report_with_confirmation_overfitting_select_compare_and_plots(in_tmp):  # noqa: F811
    runner = CliRunner()

    def ok(*args):
        result = runner.invoke(main, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.stderr + result.stdout
        return result

    ok("search", SONAR_SWEEP, *FAST, "--trials", "4", "--study", "other")
    ok("search", SONAR_SWEEP, *FAST, "--trials", "6")
    before = ok("report", "--study", "sonar").stdout
    assert "Overfitting" in before and "Verdict" not in before and "Recommended" in before
    ok("confirm", "--study", "sonar", "--top", "2", "--repeats", "2")
    table = ok("report").stdout  # the search study, not its newer companion, is the latest
    assert "Best trial of each placement" in table
    ok("confirm", "--study", "sonar", "--per-placement", "--repeats", "2")
    table = ok("report").stdout  # the placements' table now shows the confirmed means
    assert "Each placement's best, confirmed (2 x 3-fold CV on new splits)" in table
    assert "Best trial of each placement" not in table
    lines = table.splitlines()
    assert lines[0].startswith("Answer: does dropout help the mlp on sonar? (confirmed")
    study_section = lines[lines.index("Study"):]  # the tables follow the answer
    assert study_section[1].split() == ["study", "sonar"]
    assert "Confirmed (sonar:confirm" in table and "Verdict: " in table
    assert "held-out accuracy % by epoch" in table and "3:" in table and "6:" in table
    assert "simplest set-up within one standard error" in ok("report", "--select", "1se").stdout
    compared = ok("report", "--study", "sonar", "--compare", "other").stdout
    assert "sonar" in compared and "other" in compared and "none" in compared

    result = ok("report", "--study", "sonar", "--plots", "figs")
    from matplotlib import image

    names = sorted(p.name for p in (in_tmp / "figs").iterdir())
    assert names == ["confirmed.png", "history.png", "importances.png", "placements.png",
                     "placements_confirmed.png", "rates.png"]
    for name in names:
        pixels = image.imread(in_tmp / "figs" / name)
        assert pixels.shape[0] >= 300 and pixels.shape[1] >= 500, (name, pixels.shape)
        assert pixels.std() > 0.01  # not a blank canvas
    assert "wrote 6 figures" in result.stderr


def test_plots_without_matplotlib_is_one_line_naming_the_extra(in_tmp, monkeypatch):  # noqa: F811
    CliRunner().invoke(main, ["search", SONAR_SWEEP, *FAST, "--trials", "2"])
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    result = CliRunner().invoke(main, ["report", "--plots", "figs"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'dropsweep[plots]'" in lines[0], result.stderr
