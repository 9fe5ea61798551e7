"""``dropsweep confirm``'s answer: the confirmed rows with their intervals and tests, the
verdict in words, and a ``--per-placement`` confirmation's pairs — as tables (also the report's
last sections) or JSON."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any, Sequence

from rich.console import Console

from dropsweep import records
from dropsweep.families import Family, family_of_rows
from dropsweep.render.cells import (MISSING, ci_percent, p_text, p_words, param, percent, points,
                                    trial_number)
from dropsweep.render.formats import (Section, interval_json, json_number, json_value,
                                      print_sections, write)
from dropsweep.sweep.space import value_of

if TYPE_CHECKING:  # types only: rendering must not import Optuna (answers/verdict.py does)
    from dropsweep.answers.stats import Interval
    from dropsweep.answers.verdict import Confirmation, ConfirmedRow, PairComparison

def _interval_points(interval: Interval) -> str:
    if math.isnan(interval.low):
        return MISSING
    return f"[{interval.low * 100:+.2f}, {interval.high * 100:+.2f}]"


def _protocol(c: Confirmation, repeats: int | None = None, new: bool = True,
              repeated: bool = False) -> str:
    """How a confirmation scored: "5 x 10-fold CV on new splits", "5 new hold-out splits";
    ``repeated``: "repeated 10-fold CV on new splits"."""
    r = c.repeats if repeats is None else repeats
    if c.holdout:
        return ("repeated hold-out on new validation splits" if repeated
                else f"{r} {'new ' if new else ''}hold-out splits")
    return (f"repeated {c.folds}-fold CV" if repeated else f"{r} x {c.folds}-fold CV") + (
        " on new splits" if new else "")


def confirmation_protocol(confirmation: Confirmation, repeats: int | None = None) -> str:
    """How a confirmation scored, in the words its table uses ("5 x 10-fold CV on new
    splits", "5 new hold-out splits"): for a figure's title."""
    return _protocol(confirmation, repeats)


def verdict_text(confirmation: Confirmation) -> str:
    """The verdict in plain words, with its numbers."""
    v, fam = confirmation.verdict, family_of_rows(confirmation)
    if v is None:
        return ("No verdict yet: it needs the baseline and at least one other configuration "
                "confirmed (dropsweep confirm).")
    best, base, cmp = v.best, v.baseline, v.best.vs_baseline
    what = f"{fam.describe_against(best.config, base.config)} (trial #{best.source_trial})"
    if not fam.is_reference(best.config):
        ref, of_ref = "no dropout", "without dropout"
    else:  # the difference is not dropout at all: name what the baseline is
        ref = f"the baseline ({fam.describe_against(base.config, best.config)})"
        of_ref = "for the baseline"
    scored = " validation accuracy" if confirmation.holdout else ""
    how = (f"{best.accuracy.mean * 100:.2f}% vs {base.accuracy.mean * 100:.2f}%{scored} "
           f"{of_ref}, "
           f"{cmp.diff.mean * 100:+.2f} points"
           + ("" if math.isnan(cmp.diff.low) else
              f" (95% CI {cmp.diff.low * 100:+.2f} to {cmp.diff.high * 100:+.2f})")
           + f", p = {p_text(cmp.p)}")
    test = (f"{_protocol(confirmation, new=False)}, Nadeau-Bengio "
            "corrected t-test")
    if v.better and v.significant:
        return f"Verdict: {what} beats {ref}: {how}; significant at 5% ({test})."
    if v.better:
        return (f"Verdict: {what} is ahead of {ref}, but not significantly: {how}; "
                f"not significant at 5% ({test}).")
    return (f"Verdict: no set-up beats {ref}; the best, {what}: {how}"
            f"{'; significantly worse at 5%' if v.significant else ''} ({test}).")


def _confirmed_section(confirmation: Confirmation) -> Section:
    fam = family_of_rows(confirmation)
    # what else a baseline sets; an implicit one (the MLP's optimizer) where a row sets it
    settings = [d for d in fam.dimensions if d.in_baseline and (
        not d.implicit or any(d.name in r.config for r in confirmation.rows))]
    holdout = confirmation.holdout
    rows = []
    for r in confirmation.rows:
        cmp = r.vs_baseline
        rows.append((
            trial_number(r.source_trial),
            r.role, fam.describe(r.config),
            *(("" if not d.used(r.config)  # momentum under Adam: not a setting it has
               else param(value_of(d, r.config)) or ("off" if d.can_be_off else ""))
              for d in settings), str(r.repeats),
            percent(r.accuracy.mean),
            ci_percent(r.accuracy),
            points(cmp.diff.mean) if cmp else "", _interval_points(cmp.diff) if cmp else "",
            p_text(cmp.p) if cmp else ""))
    return Section(
        f"Confirmed ({confirmation.study_name}: {_protocol(confirmation, repeated=True)})",
        ("trial", "role", "dropout", *(d.label for d in settings),
         "splits" if holdout else "repeats",
         "validation acc." if holdout else "accuracy", "95% CI", "Δ vs baseline",
         "95% CI (pp)", "p"),
        rows, frozenset({0, *range(3, 3 + len(settings) + 6)}),
        note=verdict_text(confirmation),
        # Narrow terminal: the trial, its dropout (wrapping), accuracy, and the difference
        # with its interval and p stay; the repeats go first, then the role, then the other
        # settings (the last first: the trial number names them), then the accuracy's interval.
        priority=(0, 3, 0, *(2 for _ in settings), 4, 0, 1, 0, 0, 0))


def _row_words(fam: Family, row: ConfirmedRow) -> str:
    """A confirmed row in a sentence: "input dropout 0.2 (#5)", "the no-dropout baseline"."""
    if row.role == records.ROLE_BASELINE:
        return fam.baseline_words
    return f"{fam.describe(row.config)} (#{row.source_trial})"


def _pair_words(fam: Family, pair: PairComparison) -> str:
    diff = pair.comparison.diff
    ci = "" if math.isnan(diff.low) else (f" (95% CI {diff.low * 100:+.2f} to "
                                          f"{diff.high * 100:+.2f})")
    return (f"{_row_words(fam, pair.ahead)} is ahead of {_row_words(fam, pair.behind)} by "
            f"{diff.mean * 100:.2f} points{ci}, adjusted {p_words(pair.p_adjusted)}")


def _none_differs(names: Sequence[str], reference: str) -> str:
    if len(names) == 1:
        return f"{names[0]} does not differ significantly from {reference}"
    if len(names) == 2:
        return f"neither {names[0]} nor {names[1]} differs significantly from {reference}"
    return (f"none of {', '.join(names[:-1])} or {names[-1]} differs significantly "
            f"from {reference}")


def placement_verdict_text(confirmation: Confirmation) -> str:
    """The per-placement comparison in plain words, with its numbers: pasteable."""
    pv, fam = confirmation.per_placement, family_of_rows(confirmation)
    if pv is None:
        return ("No per-placement comparison yet: it needs the baseline and each placement's "
                "best confirmed (dropsweep confirm).")
    n = pv.comparisons
    repeats = max(r.repeats for r in pv.rows)
    parts = [f"Per placement ({_protocol(confirmation, repeats=repeats)}, "
             "Nadeau-Bengio corrected t-tests, p-values Holm-adjusted over "
             f"{n} comparison{'' if n == 1 else 's'}): "
             + "; ".join(f"{_row_words(fam, r)} {percent(r.accuracy.mean)}" for r in pv.rows)
             + "."]
    significant = [p for p in pv.pairs if p.significant]
    if significant:
        parts.append("Significant at 5%: " + "; ".join(_pair_words(fam, p) for p in significant)
                     + ".")
        others = len(significant) < len(pv.pairs)
        rest = "No other difference is significant at 5%" if others else ""
    else:
        largest = pv.largest
        rest = "No difference is significant at 5%" + (
            f" (the largest: {_pair_words(fam, largest)})" if largest is not None else "")
    names = [_row_words(fam, r) for r in pv.like_reference(fam)]
    reference = next((fam.describe(r.config) for r in pv.rows if fam.is_reference(r.config)), "")
    like = _none_differs(names, reference) if names else ""
    if rest and like:
        parts.append(f"{rest}; {like}.")
    elif rest or like:
        sentence = rest or like
        parts.append(sentence[0].upper() + sentence[1:] + ".")
    return " ".join(parts)


def _per_placement_section(confirmation: Confirmation) -> Section:
    fam, pv = family_of_rows(confirmation), confirmation.per_placement
    rows = [(_row_words(fam, p.ahead), _row_words(fam, p.behind),
             f"{p.comparison.diff.mean * 100:+.2f}", _interval_points(p.comparison.diff),
             p_text(p.comparison.p), p_text(p.p_adjusted)) for p in pv.pairs]
    paired = ("split by split on shared validation splits"
              if confirmation.holdout else "fold by fold on shared repeats")
    # the set-ups wrap; a narrow terminal loses the unadjusted p first, then the interval
    return Section(f"Per-placement comparison (every pair, {paired})",
                   ("ahead", "behind", "Δ (pp)", "95% CI (pp)", "p", "Holm p"), rows,
                   frozenset({2, 3, 4, 5}), note=placement_verdict_text(confirmation),
                   priority=(0, 0, 0, 1, 2, 0))


def confirmation_sections(confirmation: Confirmation) -> list[Section]:
    """The Confirmed table, then the per-placement pairs when there are any."""
    sections = [_confirmed_section(confirmation)]
    if confirmation.per_placement is not None:
        sections.append(_per_placement_section(confirmation))
    return sections


def _per_placement_json(confirmation: Confirmation) -> dict[str, Any] | None:
    pv = confirmation.per_placement
    if pv is None:
        return None

    def row(r: ConfirmedRow) -> dict[str, Any]:
        return json_value({"source_trial": r.source_trial, "role": r.role,
                           "placement": r.placement, "config": r.config,
                           "repeats": r.repeats, "accuracy": interval_json(r.accuracy)})

    def ref(r: ConfirmedRow) -> dict[str, Any]:
        return {"source_trial": r.source_trial, "role": r.role, "placement": r.placement}

    return {
        "rows": {placement: row(r) for placement, r in pv.placements.items()},
        "baseline": next((row(r) for r in pv.rows if r.role == records.ROLE_BASELINE), None),
        "comparisons": pv.comparisons,
        "pairs": [{"ahead": ref(p.ahead), "behind": ref(p.behind),
                   "diff": interval_json(p.comparison.diff), "t": json_number(p.comparison.t),
                   "p": json_number(p.comparison.p), "p_adjusted": json_number(p.p_adjusted),
                   "significant": p.significant} for p in pv.pairs],
        "text": placement_verdict_text(confirmation),
    }


def confirmation_to_json(confirmation: Confirmation) -> dict[str, Any]:
    iv = interval_json
    v = confirmation.verdict
    return {
        "study": confirmation.study_name, "confirms": confirmation.confirms,
        "folds": confirmation.folds, "repeats": confirmation.repeats,
        "test_train_ratio": None if confirmation.ratio is None
        else json_number(confirmation.ratio),
        "rows": [{"source_trial": r.source_trial, "role": r.role, "placement": r.placement,
                  "config": r.config, "repeats": r.repeats, "accuracy": iv(r.accuracy),
                  "vs_baseline": None if r.vs_baseline is None else {
                      "diff": iv(r.vs_baseline.diff), "t": json_number(r.vs_baseline.t),
                      "p": json_number(r.vs_baseline.p)}}
                 for r in confirmation.rows],
        "verdict": None if v is None else {
            "source_trial": v.best.source_trial, "placement": v.best.placement,
            "better": v.better, "significant": v.significant, "text": verdict_text(confirmation)},
        "per_placement": _per_placement_json(confirmation),
    }


def render_confirmation(confirmation: Confirmation, console: Console, fmt: str = "table") -> None:
    if fmt == "json":
        write(console, json.dumps(confirmation_to_json(confirmation), indent=2))
    else:  # `dropsweep confirm` has no --format: the report has every column
        print_sections(confirmation_sections(confirmation), console,
                       hint="widen the terminal, or see dropsweep report --format json")
