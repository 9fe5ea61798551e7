"""``dropsweep test``'s answer: the chosen set-up, the tuned no-dropout and the baseline scored
on the test rows seed by seed, the tuning and dropout gains in words — as a table (also the
report's last section) or JSON. A test made before issue 25 (no tuned no-dropout) is worded as
it was then."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from rich.console import Console

from dropsweep import records
from dropsweep.families import Family, bound_family
from dropsweep.render.cells import p_words, percent, points
from dropsweep.render.formats import (Section, interval_json, json_number, json_value,
                                      print_sections, write)

if TYPE_CHECKING:  # types only: rendering must not import Optuna (answers/tested.py does)
    from dropsweep.answers.stats import Comparison
    from dropsweep.answers.tested import TestResult

def test_text(result: TestResult, family_name: Family | str) -> str:
    """The test result in plain words, with its numbers: pasteable."""
    if result.tuned is None:
        return _two_way_text(result, family_name)
    fam = bound_family(family_name)
    a, t, b = result.accuracy, result.tuned_accuracy, result.baseline_accuracy
    n = len(result.seeds)
    tests = sum(not math.isnan(c.p) for c in (result.tuning_gain, result.dropout_gain))
    how = {"trial": f"trial #{result.chosen.number}",
           "best": f"trial #{result.chosen.number}, the best validation score with dropout",
           "confirmed": f"trial #{result.chosen.number}, the best confirmed dropout set-up",
           "1se": f"trial #{result.chosen.number}, --select 1se"}[result.chosen.rule]
    ci = "" if math.isnan(a.low) else f", 95% CI {a.low * 100:.2f} to {a.high * 100:.2f}"
    if result.tuned_is_baseline:
        tuned = f"the tuned no-dropout is the baseline, {b.mean * 100:.2f}%"
        tuning = "Tuning gain: none (the tuned no-dropout is the baseline)."
        against = "the baseline"
    else:
        words = fam.describe_against(result.tuned.config, result.baseline)
        tuned = (f"the tuned no-dropout, {words} (trial #{result.tuned.number}), "
                 f"{t.mean * 100:.2f}%; the sweep's baseline (untuned) {b.mean * 100:.2f}%")
        tuning = ("Tuning gain (tuned no-dropout - baseline): "
                  + _gain_words(result.tuning_gain, result.tuning_p_holm) + ".")
        against = "tuned no-dropout"
    looked = ("scored once" if result.rounds == 1 else
              f"scored {result.rounds} times (--rescore): this test set has been looked at "
              "more than once, so it is less of a test")
    return (f"Test: {fam.describe_against(result.chosen.config, result.baseline)} ({how}) "
            f"scores {a.mean * 100:.2f}% on the {result.n_test} test rows (mean of {n} "
            f"seed{'s' if n != 1 else ''}{ci}); {tuned}. {tuning} Dropout gain (chosen - "
            f"{against}): {_gain_words(result.dropout_gain, result.dropout_p_holm)}. "
            f"p-values of seed-paired t-tests, Holm-adjusted over {tests} "
            f"comparison{'' if tests == 1 else 's'}; trained on every searched row, validation "
            f"rows included; {looked}.")


def _gain_words(gain: Comparison, p_holm: float | None) -> str:
    """"+0.28 points (95% CI -1.02 to +1.58), p = 0.412, Holm p = 0.412"."""
    d = gain.diff
    ci = "" if math.isnan(d.low) else f" (95% CI {d.low * 100:+.2f} to {d.high * 100:+.2f})"
    return (f"{d.mean * 100:+.2f} points{ci}, {p_words(gain.p)}, Holm "
            f"{p_words(math.nan if p_holm is None else p_holm)}")


def _two_way_text(result: TestResult, family_name: Family | str) -> str:
    """A test made before issue 25 (the chosen and the baseline), as it was worded then,
    and how to score the tuned no-dropout as well."""
    fam = bound_family(family_name)
    what = f"{fam.describe_against(result.chosen.config, result.baseline)}"
    how = {"trial": f"trial #{result.chosen.number}",
           "best": f"trial #{result.chosen.number}, the best validation score",
           "1se": f"trial #{result.chosen.number}, --select 1se"}[result.chosen.rule]
    a, b, d = result.accuracy, result.baseline_accuracy, result.vs_baseline
    n = len(result.seeds)
    ci = "" if math.isnan(a.low) else f", 95% CI {a.low * 100:.2f} to {a.high * 100:.2f}"
    dci = "" if math.isnan(d.diff.low) else (f" (95% CI {d.diff.low * 100:+.2f} to "
                                             f"{d.diff.high * 100:+.2f})")
    looked = ("scored once" if result.rounds == 1 else
              f"scored {result.rounds} times (--rescore): this test set has been looked at "
              "more than once, so it is less of a test")
    study = result.study_name[:-len(records.TEST_SUFFIX)]
    return (f"Test: {what} ({how}) scores {a.mean * 100:.2f}% on the {result.n_test} test rows "
            f"(mean of {n} seed{'s' if n != 1 else ''}{ci}) against {b.mean * 100:.2f}% for "
            f"{fam.baseline_words}: {d.diff.mean * 100:+.2f} points{dci}, seed-paired t-test "
            f"{p_words(d.p)}; trained on every searched row, validation rows included; "
            f"{looked}. It predates the comparison with the tuned no-dropout, which tells "
            f"tuning's share of the gain apart: dropsweep test --study {study} --rescore "
            "scores it (a second look at the test rows, recorded).")


def test_section(result: TestResult, family_name: Family | str) -> Section:
    title = f"Test ({result.study_name}: {result.n_test} test rows, never searched)"
    chosen = f"#{result.chosen.number}"
    if result.tuned is None:  # a test made before issue 25
        rows = [(str(r), str(seed), percent(a), percent(b), points(a - b))
                for r, (seed, a, b) in enumerate(zip(result.seeds, result.chosen_scores,
                                                     result.baseline_scores))]
        rows.append(("mean", "", percent(result.accuracy.mean),
                     percent(result.baseline_accuracy.mean),
                     points(result.vs_baseline.diff.mean)))
        return Section(title, ("repeat", "seed", chosen, "baseline", "Δ"), rows,
                       frozenset({0, 1, 2, 3, 4}), note=test_text(result, family_name))
    means = (result.accuracy.mean, result.tuned_accuracy.mean, result.baseline_accuracy.mean)
    scored = [*zip(result.seeds, result.chosen_scores, result.tuned_scores,
                   result.baseline_scores)]
    if result.tuned_is_baseline:  # one column: the baseline is the tuned no-dropout
        columns = ("repeat", "seed", f"dropout {chosen}", "baseline = tuned", "dropout Δ")
        rows = [(str(r), str(seed), percent(a), percent(b), points(a - b))
                for r, (seed, a, _, b) in enumerate(scored)]
        rows.append(("mean", "", percent(means[0]), percent(means[2]),
                     points(result.dropout_gain.diff.mean)))
    else:
        columns = ("repeat", "seed", f"dropout {chosen}", f"tuned #{result.tuned.number}",
                   "baseline", "tuning Δ", "dropout Δ")
        rows = [(str(r), str(seed), percent(a), percent(t), percent(b), points(t - b),
                 points(a - t)) for r, (seed, a, t, b) in enumerate(scored)]
        rows.append(("mean", "", *(percent(m) for m in means),
                     points(result.tuning_gain.diff.mean),
                     points(result.dropout_gain.diff.mean)))
    return Section(title, columns, rows, frozenset(range(len(columns))),
                   note=test_text(result, family_name))


def _gain_json(gain: Comparison, p_holm: float | None) -> dict[str, Any]:
    return {"points": json_number(gain.diff.mean),
            "ci": [json_number(gain.diff.low), json_number(gain.diff.high)],
            "t": json_number(gain.t), "p": json_number(gain.p),
            "p_holm": None if p_holm is None else json_number(p_holm)}


def test_to_json(result: TestResult, family_name: Family | str) -> dict[str, Any]:
    """The test study as plain data (fractions); ``tuned``, ``tuning_gain`` and
    ``dropout_gain`` are null for a test made before issue 25."""
    iv = interval_json
    tuned = result.tuned
    return json_value({
        "study": result.study_name, "source_trial": result.chosen.number,
        "rule": result.chosen.rule, "config": result.chosen.config.to_dict(),
        "n_test": result.n_test, "seeds": result.seeds, "accuracies": result.chosen_scores,
        "baseline_accuracies": result.baseline_scores, "accuracy": iv(result.accuracy),
        "baseline_accuracy": iv(result.baseline_accuracy),
        "vs_baseline": {"diff": iv(result.vs_baseline.diff), "t": result.vs_baseline.t,
                        "p": result.vs_baseline.p},
        "tuned": None if tuned is None else {
            "source_trial": tuned.number, "rule": tuned.rule, "config": tuned.config.to_dict(),
            "is_baseline": result.tuned_is_baseline, "accuracies": result.tuned_scores,
            "accuracy": iv(result.tuned_accuracy)},
        "tuning_gain": None if tuned is None else _gain_json(result.tuning_gain,
                                                             result.tuning_p_holm),
        "dropout_gain": None if tuned is None else _gain_json(result.dropout_gain,
                                                              result.dropout_p_holm),
        "rounds": result.rounds, "fingerprint": result.fingerprint,
        "text": test_text(result, family_name)})


def render_test(result: TestResult, family_name: Family | str, console: Console,
                fmt: str = "table") -> None:
    if fmt == "json":
        write(console, json.dumps(test_to_json(result, family_name), indent=2))
    else:
        print_sections([test_section(result, family_name)], console)
