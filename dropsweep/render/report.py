"""A study's report (:class:`~dropsweep.answers.rows.StudyReport`) as a table, JSON, CSV or
Markdown: the answer first, then the study, its top trials, each placement's best, the
recommendation, overfitting, importances, failures, and the confirmation's and the test's
sections once there are any (:mod:`dropsweep.render.confirmation`,
:mod:`dropsweep.render.tested`).

Every number is computed in :mod:`dropsweep.answers.report`; this module only turns numbers into
strings. The table and Markdown formats share one description of the sections, so the two
cannot show different things. Machine formats (JSON, CSV) carry raw numbers (fractions, not
percent) and are written with ``Console.out`` so rich adds no colour, markup or wrapping.
"""

from __future__ import annotations

import csv
import io
import json
from typing import TYPE_CHECKING, Any

from rich.console import Console

from dropsweep.families import family_of_rows
from dropsweep.render import answer as answer_text
from dropsweep.render.cells import (MISSING, accuracy, ci_percent, param, percent, points,
                                    states, trial_number, when)
from dropsweep.render.confirmation import (confirmation_protocol, confirmation_sections,
                                           confirmation_to_json)
from dropsweep.render.formats import (FORMATS, Section, check_format, csv_cell, json_number,
                                      json_value, interval_json, markdown, print_sections,
                                      trial_json, write)
from dropsweep.render.tested import test_section, test_to_json

if TYPE_CHECKING:  # types only: rendering must not import Optuna (answers/report.py does)
    from dropsweep.answers.rows import PlacementRow, StudyReport, TrialRow

__all__ = [
    "FORMATS",
    "render_report",
    "report_to_csv",
    "report_to_json",
    "report_to_markdown",
]

# The fixed CSV columns, in order; then one column per param, then fold_1..fold_k (a hold-out
# study: validation_accuracy).
CSV_COLUMNS = (
    "number",
    "state",
    "value",
    "role",
    "accuracy_mean",
    "accuracy_std",
    "train_accuracy",
    "test_log_loss",
    "epochs",
    "wall_time",
    "fail_reason",
)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return MISSING
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _trial_ref(row: TrialRow | None, empty: str) -> str:
    return empty if row is None else f"#{row.number}: {accuracy(row)}"


def _scored(report: StudyReport) -> str:
    """What a trial's accuracy is measured on: "validation" (hold-out) or "held-out" (folds)."""
    return "validation" if report.protocol == "holdout" else "held-out"


def _summary(report: StudyReport) -> Section:
    rows = [
        ("study", report.name),
        ("direction", report.direction.lower()),
        ("scored on", "one hold-out validation split" if report.protocol == "holdout"
         else "k-fold cross-validation (held-out folds)"),
        ("trials", states(report.counts, report.n_trials)),
        ("total time", _duration(report.total_wall_time)),
        ("started", when(report.first_start)),
        ("last update", when(report.last_update)),
        ("best", _trial_ref(report.best, "no complete trial yet")),
        ("baseline", _trial_ref(report.baseline, "no complete baseline")),
    ]
    return Section("Study", ("field", "value"), rows, show_header=False,
                   whole=frozenset({0}))  # the values wrap, never the names


def _top(report: StudyReport) -> Section:
    # "learning rate", not "learning_rate": a narrow terminal can wrap it instead of cutting it
    shown = tuple(name.replace("_", " ") for name in report.param_names)
    columns = ("#", "role", "accuracy", "train acc", *shown, "time")
    rows = [
        (
            str(row.number),
            row.role or "",
            accuracy(row),
            percent(row.train_accuracy),
            *(param(row.params.get(name)) for name in report.param_names),
            _duration(row.wall_time),
        )
        for row in report.top
    ]
    right = frozenset({0, 2, 3, len(columns) - 1})
    note = None if rows else "no complete trials yet"
    # Narrow terminal: the trial and its accuracy ± spread stay; then the parameters (the last
    # first); the train accuracy, role and time go first.
    priority = (0, 3, 0, 2, *(1 for _ in shown), 3)
    return Section(f"Top {len(rows)} trials", columns, rows, right, note, priority=priority)


def _budget(row: PlacementRow) -> str:
    """Complete trials, marked when far fewer than the most-tried placement's."""
    return f"{row.n_trials}{_UNEVEN_MARK if row.uneven else ''}"


_UNEVEN_MARK = " !"


def _placement_row(row: PlacementRow) -> tuple[str, ...]:
    c = row.confirmed
    if c is not None:  # the confirmed reading replaces the search's maximum
        vs = c.vs_baseline
        return (row.placement, _budget(row), str(row.pruned), trial_number(c.source_trial),
                percent(c.accuracy.mean), ci_percent(c.accuracy),
                points(vs.diff.mean) if vs else "baseline")
    return (row.placement, _budget(row), str(row.pruned), f"#{row.best.number}",
            accuracy(row.best), points(row.diff_from_baseline))


def _balance_words(balance: dict | None) -> str:
    """How the placements got their trials, from the study's record."""
    if balance is None or balance.get("by") != "placement":
        since = "" if balance is None or not balance.get("since") else (
            f" (search.balance: none from trial #{balance['since']})")
        return f"as the sampler chose{since}"
    since = balance.get("since") or 0
    return "balanced: an equal share each (search.balance: placement" + (
        f", from trial #{since})" if since else ")")


def _group_label(report: StudyReport) -> str:
    """The column of the family's group dimension ("placement" for the MLP)."""
    fam = family_of_rows(report)
    return next(d.label for d in fam.dimensions if d.name == fam.group)


def _placements(report: StudyReport) -> Section:
    rows = [_placement_row(p) for p in report.placements]
    confirmed = any(p.confirmed is not None for p in report.placements)
    label = _group_label(report)
    notes = []
    if not rows:
        notes.append("no complete trials yet")
    elif report.baseline is None and not confirmed:
        notes.append("no complete baseline trial: Δ cannot be shown")
    if rows:
        notes.append(f"trials: {_balance_words(report.balance)}")
    uneven = [p for p in report.placements if p.uneven]
    if uneven:
        most = max(report.placements, key=lambda p: p.n_trials)
        notes.append(
            f"!: fewer than half the complete trials of {most.placement} ({most.n_trials}): the "
            "best of fewer noisy scores tends to be lower by chance alone, so these rows do not "
            "compare fairly; confirm each placement's best (dropsweep confirm) "
            "or balance the budgets (search.balance: placement)")
    if confirmed:
        c = report.confirmation
        title = f"Each placement's best, confirmed ({confirmation_protocol(c)})"
        columns = (label, "complete", "pruned", "best #", "confirmed", "95% CI",
                   "Δ vs baseline")
        right = frozenset({1, 2, 3, 4, 5, 6})
    else:
        title = "Best trial of each placement"
        columns = (label, "complete", "pruned", "best #", "accuracy", "Δ vs baseline")
        right = frozenset({1, 2, 3, 4, 5})
    # Narrow terminal: the pruned count goes first, then the complete count; the rest stay.
    priority = (0, 1, 2) + (0,) * (len(columns) - 3)
    return Section(title, columns, rows, right, "; ".join(notes) or None, priority=priority)


def _importances(report: StudyReport) -> Section:
    rows = [(name.replace("_", " "), f"{value:.3f}")  # as the columns above name them
            for name, value in report.importances.items()]
    return Section(
        "Parameter importances",
        ("parameter", "importance"),
        rows,
        frozenset({1}),
        report.importance_note,
    )


def _failed(report: StudyReport) -> Section:
    rows = [
        (str(row.number), row.fail_reason or MISSING, _duration(row.wall_time))
        for row in report.failed
    ]
    # the reason wraps; in a narrow terminal the time goes
    return Section("Failed trials", ("#", "reason", "time"), rows, frozenset({0, 2}),
                   priority=(0, 0, 1))


def _curve(row: TrialRow, points: int = 6) -> str:
    """A learning curve in one cell: held-out accuracy at up to ``points`` checkpoints."""
    curve = row.curve
    if not curve:
        return MISSING
    picks = sorted({round(i * (len(curve) - 1) / (points - 1)) for i in range(points)})
    return "  ".join(f"{curve[i][0]}:{curve[i][1] * 100:.1f}" for i in picks)


def _overfitting(report: StudyReport) -> Section:
    rows = [(p.placement, f"#{p.best.number}", percent(p.best.train_accuracy),
             percent(p.best.accuracy_mean), points(p.best.gap), _curve(p.best))
            for p in report.placements]
    # the learning curve wraps at its checkpoints, and goes only when nothing else fits
    return Section("Overfitting (best trial of each placement)",
                   (_group_label(report), "trial", "train acc", _scored(report), "gap",
                    f"{_scored(report)} accuracy % by epoch"), rows, frozenset({1, 2, 3, 4}),
                   None if rows else "no complete trials yet", priority=(0, 0, 0, 0, 0, 1))


def _selection(report: StudyReport) -> Section:
    sel = report.selection
    row = sel.chosen
    if sel.rule == "1se":
        note = (f"simplest set-up within one standard error of the best (#{sel.best.number}, "
                f"{accuracy(sel.best)}): mean >= {sel.threshold * 100:.2f}%")
    else:
        note = (f"the highest mean {_scored(report)} accuracy (--select 1se: the simplest "
                "within its noise)")
    body = [(sel.rule, f"#{row.number}", accuracy(row),
             *(param(row.params.get(name)) for name in report.param_names))]
    shown = tuple(name.replace("_", " ") for name in report.param_names)
    # Narrow terminal: the trial and its accuracy stay; the parameters go (the last first),
    # after the rule (the note says it too)
    return Section("Recommended", ("rule", "trial", "accuracy", *shown), body,
                   frozenset({1, 2}), note, priority=(2, 0, 0, *(1 for _ in shown)))


def _report_sections(report: StudyReport) -> list[Section]:
    sections = [_summary(report), _top(report), _placements(report)]
    if report.selection is not None:
        sections.append(_selection(report))
    sections += [_overfitting(report), _importances(report)]
    if report.failed:
        sections.append(_failed(report))
    if report.confirmation is not None:
        sections += confirmation_sections(report.confirmation)
    if report.test is not None:
        sections.append(test_section(report.test, family_of_rows(report)))
    return sections


def report_to_json(report: StudyReport) -> dict[str, Any]:
    """The whole report as one JSON-ready object; numbers stay fractions, not percent (the
    answer's gains are in points, as its key says)."""
    return {
        "answer": None if report.answer is None else answer_text.to_json(
            report.answer, family_of_rows(report)),
        "study": json_value(
            {
                "name": report.name,
                "direction": report.direction,
                "n_trials": report.n_trials,
                "total_wall_time": report.total_wall_time,
                "first_start": report.first_start,
                "last_update": report.last_update,
                "param_names": report.param_names,
                "importance_note": report.importance_note,
            }
        ),
        "counts": dict(report.counts),
        "best": trial_json(report.best),
        "baseline": trial_json(report.baseline),
        "top": [trial_json(row) for row in report.top],
        "balance": json_value(report.balance),
        "placements": [
            {
                "placement": p.placement,
                "n_trials": p.n_trials,
                "pruned": p.pruned,
                "uneven": p.uneven,
                "best_number": p.best.number,
                "best": trial_json(p.best),
                "diff_from_baseline": json_number(p.diff_from_baseline),
                "confirmed": None if p.confirmed is None else {
                    "source_trial": p.confirmed.source_trial,
                    "accuracy": interval_json(p.confirmed.accuracy),
                    "diff_from_baseline": None if p.confirmed.vs_baseline is None
                    else interval_json(p.confirmed.vs_baseline.diff)},
            }
            for p in report.placements
        ],
        "importances": json_value(dict(report.importances)),
        "selection": None if report.selection is None else {
            "rule": report.selection.rule, "number": report.selection.chosen.number,
            "best_number": report.selection.best.number,
            "threshold": json_number(report.selection.threshold)},
        "overfitting": [{"placement": p.placement, "number": p.best.number,
                         "gap": json_number(p.best.gap)} for p in report.placements],
        "confirmation": (None if report.confirmation is None
                         else confirmation_to_json(report.confirmation)),
        "test": None if report.test is None else test_to_json(report.test, family_of_rows(report)),
        "trials": [trial_json(row) for row in report.trials],
    }


def report_to_csv(report: StudyReport) -> str:
    """One row per trial of any state; missing values and non-applying params are empty."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    n_folds = report.n_folds  # a property over every trial: once, not once per row
    folds = (["validation_accuracy"] if report.protocol == "holdout" and n_folds == 1
             else [f"fold_{i}" for i in range(1, n_folds + 1)])
    writer.writerow([*CSV_COLUMNS, *report.param_names, *folds])
    for row in report.trials:
        fixed = [getattr(row, column) for column in CSV_COLUMNS]
        params = [row.params.get(name) for name in report.param_names]
        missing = n_folds - len(row.fold_accuracies)
        fold_cells = [*row.fold_accuracies, *([None] * missing)]
        writer.writerow([csv_cell(v) for v in (*fixed, *params, *fold_cells)])
    return buffer.getvalue()


def report_to_markdown(report: StudyReport) -> str:
    """GitHub-flavoured Markdown: the answer as a paragraph to paste, then the same sections
    as the table format."""
    sections = markdown(_report_sections(report))
    if report.answer is None:
        return sections
    return (answer_text.paragraph(report.answer, family_of_rows(report), report.data)
            + "\n\n" + sections)


def render_report(report: StudyReport, fmt: str, console: Console) -> None:
    """Print a study's report to ``console`` as "table", "json", "csv" or "markdown"; the
    answer comes first in every format but CSV (a table of trials)."""
    check_format(fmt)
    if fmt == "table":
        if report.answer is not None:
            answer_text.print_answer(report.answer, family_of_rows(report), report.data, console)
        print_sections(_report_sections(report), console)
    elif fmt == "json":
        write(console, json.dumps(report_to_json(report), indent=2))
    elif fmt == "csv":
        write(console, report_to_csv(report))
    else:
        write(console, report_to_markdown(report))
