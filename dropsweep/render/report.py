"""Formatting of a :class:`~dropsweep.answers.rows.StudyReport` as tables, JSON, CSV or Markdown.

Every number is computed in :mod:`dropsweep.answers.report`; this module only turns numbers into
strings. The table and Markdown formats share one description of the sections, so the two
cannot show different things. Machine formats (JSON, CSV) carry raw numbers (fractions, not
percent) and are written with ``Console.out`` so rich adds no colour, markup or wrapping.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Sequence

from rich.console import Console
from rich.control import strip_control_codes
from rich.segment import Segment, Segments
from rich.text import Text

from dropsweep import records

from dropsweep.render import answer as answer_text
from dropsweep.families import Family, bound_family, family_of_rows
from dropsweep.sweep.space import value_of
from dropsweep.render.tables import JSON_HINT, Column, print_table

if TYPE_CHECKING:  # types only: rendering must not import Optuna (report.py does)
    from dropsweep.answers.rows import PlacementRow, StudyReport, StudyRow, TrialRow

__all__ = [
    "FORMATS",
    "render_report",
    "render_studies",
    "report_to_csv",
    "report_to_json",
    "report_to_markdown",
    "studies_to_json",
]

FORMATS = ("table", "json", "csv", "markdown")

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

_MISSING = "—"  # a number that was not recorded (an empty cell means "does not apply")


# ----------------------------------------------------------------------------- numbers → text


def _percent(fraction: float | None) -> str:
    return _MISSING if fraction is None else f"{fraction * 100:.2f}%"


def _accuracy(row: TrialRow) -> str:
    """Mean ± std of the fold accuracies in percent ("86.04% ± 5.12"), as papers quote CV."""
    mean = row.accuracy_mean if row.accuracy_mean is not None else row.value
    if mean is None:
        return _MISSING
    if row.accuracy_std is None or len(row.fold_accuracies) == 1:  # one hold-out split
        return _percent(mean)
    return f"{mean * 100:.2f}% ± {row.accuracy_std * 100:.2f}"


def _points(diff: float | None) -> str:
    """A difference of two accuracies in percentage points, always signed."""
    return _MISSING if diff is None else f"{diff * 100:+.2f} pp"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return _MISSING
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _when(moment: datetime | None) -> str:
    return _MISSING if moment is None else moment.isoformat(sep=" ", timespec="seconds")


def _param(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):  # a switch (the conv nets' spatial): yes or no
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _states(counts: dict[str, int], total: int) -> str:
    """Total and per-state counts in one cell, e.g. "12 (9 complete, 2 pruned, 1 fail)"."""
    parts = ", ".join(f"{n} {state.lower()}" for state, n in counts.items())
    return f"{total} ({parts})" if parts else str(total)


def _trial_ref(row: TrialRow | None, empty: str) -> str:
    return empty if row is None else f"#{row.number}: {_accuracy(row)}"


# ----------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class _Section:
    """One table of the report, already as strings (shared by the table and Markdown)."""

    title: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]]
    right: frozenset[int] = frozenset()  # indices of numeric, right-aligned columns
    note: str | None = None
    show_header: bool = True
    # Per column, which to leave out first when a terminal is too narrow (tables.Column:
    # 0 essential, higher numbers first); empty: every column essential.
    priority: tuple[int, ...] = ()
    whole: frozenset[int] = frozenset()  # left-aligned columns never wrapped (numbers in words)

    def table_columns(self) -> list[Column]:
        return [Column(name, self.priority[i] if self.priority else 0, right=i in self.right,
                       whole=i in self.whole) for i, name in enumerate(self.columns)]


def _scored(report: StudyReport) -> str:
    """What a trial's accuracy is measured on: "validation" (hold-out) or "held-out" (folds)."""
    return "validation" if report.protocol == "holdout" else "held-out"


def _summary(report: StudyReport) -> _Section:
    rows = [
        ("study", report.name),
        ("direction", report.direction.lower()),
        ("scored on", "one hold-out validation split" if report.protocol == "holdout"
         else "k-fold cross-validation (held-out folds)"),
        ("trials", _states(report.counts, report.n_trials)),
        ("total time", _duration(report.total_wall_time)),
        ("started", _when(report.first_start)),
        ("last update", _when(report.last_update)),
        ("best", _trial_ref(report.best, "no complete trial yet")),
        ("baseline", _trial_ref(report.baseline, "no complete baseline")),
    ]
    return _Section("Study", ("field", "value"), rows, show_header=False,
                    whole=frozenset({0}))  # the values wrap, never the names


def _top(report: StudyReport) -> _Section:
    # "learning rate", not "learning_rate": a narrow terminal can wrap it instead of cutting it
    shown = tuple(name.replace("_", " ") for name in report.param_names)
    columns = ("#", "role", "accuracy", "train acc", *shown, "time")
    rows = [
        (
            str(row.number),
            row.role or "",
            _accuracy(row),
            _percent(row.train_accuracy),
            *(_param(row.params.get(name)) for name in report.param_names),
            _duration(row.wall_time),
        )
        for row in report.top
    ]
    right = frozenset({0, 2, 3, len(columns) - 1})
    note = None if rows else "no complete trials yet"
    # Narrow terminal: the trial and its accuracy ± spread stay; then the parameters (the last
    # first); the train accuracy, role and time go first.
    priority = (0, 3, 0, 2, *(1 for _ in shown), 3)
    return _Section(f"Top {len(rows)} trials", columns, rows, right, note, priority=priority)


def _budget(row: PlacementRow) -> str:
    """Complete trials, marked when far fewer than the most-tried placement's."""
    return f"{row.n_trials}{_UNEVEN_MARK if row.uneven else ''}"


_UNEVEN_MARK = " !"


def _placement_row(row: PlacementRow) -> tuple[str, ...]:
    c = row.confirmed
    if c is not None:  # the confirmed reading replaces the search's maximum
        vs = c.vs_baseline
        return (row.placement, _budget(row), str(row.pruned), _trial_number(c.source_trial),
                _percent(c.accuracy.mean), _ci(c.accuracy),
                _points(vs.diff.mean) if vs else "baseline")
    return (row.placement, _budget(row), str(row.pruned), f"#{row.best.number}",
            _accuracy(row.best), _points(row.diff_from_baseline))


def _trial_number(number: int) -> str:
    return "base" if number < 0 else f"#{number}"


def _ci(interval: Any) -> str:
    if math.isnan(interval.low):
        return _MISSING
    return f"[{interval.low * 100:.2f}, {interval.high * 100:.2f}]"


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


def _placements(report: StudyReport) -> _Section:
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
        title = f"Each placement's best, confirmed ({_protocol(c)})"
        columns = (label, "complete", "pruned", "best #", "confirmed", "95% CI",
                   "Δ vs baseline")
        right = frozenset({1, 2, 3, 4, 5, 6})
    else:
        title = "Best trial of each placement"
        columns = (label, "complete", "pruned", "best #", "accuracy", "Δ vs baseline")
        right = frozenset({1, 2, 3, 4, 5})
    # Narrow terminal: the pruned count goes first, then the complete count; the rest stay.
    priority = (0, 1, 2) + (0,) * (len(columns) - 3)
    return _Section(title, columns, rows, right, "; ".join(notes) or None, priority=priority)


def _importances(report: StudyReport) -> _Section:
    rows = [(name.replace("_", " "), f"{value:.3f}")  # as the columns above name them
            for name, value in report.importances.items()]
    return _Section(
        "Parameter importances",
        ("parameter", "importance"),
        rows,
        frozenset({1}),
        report.importance_note,
    )


def _failed(report: StudyReport) -> _Section:
    rows = [
        (str(row.number), row.fail_reason or _MISSING, _duration(row.wall_time))
        for row in report.failed
    ]
    # the reason wraps; in a narrow terminal the time goes
    return _Section("Failed trials", ("#", "reason", "time"), rows, frozenset({0, 2}),
                    priority=(0, 0, 1))


def _curve(row: TrialRow, points: int = 6) -> str:
    """A learning curve in one cell: held-out accuracy at up to ``points`` checkpoints."""
    curve = row.curve
    if not curve:
        return _MISSING
    picks = sorted({round(i * (len(curve) - 1) / (points - 1)) for i in range(points)})
    return "  ".join(f"{curve[i][0]}:{curve[i][1] * 100:.1f}" for i in picks)


def _overfitting(report: StudyReport) -> _Section:
    rows = [(p.placement, f"#{p.best.number}", _percent(p.best.train_accuracy),
             _percent(p.best.accuracy_mean), _points(p.best.gap), _curve(p.best))
            for p in report.placements]
    # the learning curve wraps at its checkpoints, and goes only when nothing else fits
    return _Section("Overfitting (best trial of each placement)",
                    (_group_label(report), "trial", "train acc", _scored(report), "gap",
                     f"{_scored(report)} accuracy % by epoch"), rows, frozenset({1, 2, 3, 4}),
                    None if rows else "no complete trials yet", priority=(0, 0, 0, 0, 0, 1))


def _selection(report: StudyReport) -> _Section:
    sel = report.selection
    row = sel.chosen
    if sel.rule == "1se":
        note = (f"simplest set-up within one standard error of the best (#{sel.best.number}, "
                f"{_accuracy(sel.best)}): mean >= {sel.threshold * 100:.2f}%")
    else:
        note = (f"the highest mean {_scored(report)} accuracy (--select 1se: the simplest "
                "within its noise)")
    body = [(sel.rule, f"#{row.number}", _accuracy(row),
             *(_param(row.params.get(name)) for name in report.param_names))]
    shown = tuple(name.replace("_", " ") for name in report.param_names)
    # Narrow terminal: the trial and its accuracy stay; the parameters go (the last first),
    # after the rule (the note says it too)
    return _Section("Recommended", ("rule", "trial", "accuracy", *shown), body,
                    frozenset({1, 2}), note, priority=(2, 0, 0, *(1 for _ in shown)))


def _report_sections(report: StudyReport) -> list[_Section]:
    sections = [_summary(report), _top(report), _placements(report)]
    if report.selection is not None:
        sections.append(_selection(report))
    sections += [_overfitting(report), _importances(report)]
    if report.failed:
        sections.append(_failed(report))
    if report.confirmation is not None:
        sections += _confirmation_sections(report.confirmation)
    if report.test is not None:
        sections.append(_test_section(report.test, family_of_rows(report)))
    return sections


def _kind_words(row: StudyRow) -> str:
    """"search", "confirmation of sonar", "test of digits": what a stored study is."""
    if row.kind == "search":
        return "search"
    return row.kind if row.of is None else f"{row.kind} of {row.of}"


def _studies_section(rows: Sequence[StudyRow]) -> _Section:
    body = [
        (
            row.name,
            _kind_words(row),
            _states(row.counts, row.n_trials),
            # a search's best only: a companion's best would be its luckiest seed or repeat
            _percent(row.best_value) if row.kind == "search" else "",
            _when(row.last_update),
        )
        for row in rows
    ]
    note = None if body else "no studies"
    # the counts and the date wrap; a narrow terminal loses the date, then the counts
    return _Section("Studies", ("study", "kind", "trials", "best", "last update"), body,
                    frozenset({3}), note, priority=(0, 0, 1, 0, 2))


# ----------------------------------------------------------------------------- rich / markdown


def _print_sections(sections: Sequence[_Section], console: Console,
                    hint: str = JSON_HINT) -> None:
    """Each section fitted to the console's width (:func:`dropsweep.render.tables.print_table`): its
    least important columns left out, or its rows stacked, rather than a number cut."""
    for index, section in enumerate(sections):
        if index:
            console.print()
        if not section.rows:
            console.print(Text(section.title, style="bold"))
            if section.note:  # Text, never markup: a note may quote an error with "[...]"
                console.print(Text(section.note, style="italic"), soft_wrap=False)
            continue
        print_table(console, section.table_columns(), section.rows, title=section.title,
                    show_header=section.show_header, hint=hint)
        if section.note:  # below, not as a caption: a caption would wrap to a narrow table;
            # wrapped here, between words: a terminal would cut a number in two
            console.print(Text(section.note, style="italic"), soft_wrap=False)


def _md_cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


def _markdown(sections: Sequence[_Section]) -> str:
    blocks = []
    for section in sections:
        lines = [f"### {section.title}", ""]
        if section.rows:
            lines.append("| " + " | ".join(_md_cell(c) for c in section.columns) + " |")
            lines.append(
                "|"
                + "|".join(
                    "---:" if i in section.right else "---" for i in range(len(section.columns))
                )
                + "|"
            )
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in section.rows]
        if section.note:
            if section.rows:
                lines.append("")
            lines.append(f"_{_md_cell(section.note)}_")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


# ----------------------------------------------------------------------------- json / csv


def _json_number(value: float | None) -> float | None:
    """NaN and infinity are not JSON; scripts get null instead."""
    return value if value is None or math.isfinite(value) else None


def _json_value(value: Any) -> Any:
    if isinstance(value, float):
        return _json_number(value)
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _trial_json(row: TrialRow | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return _json_value(
        {
            "number": row.number,
            "state": row.state,
            "value": row.value,
            "params": row.params,
            "fold_accuracies": list(row.fold_accuracies),
            "accuracy_mean": row.accuracy_mean,
            "accuracy_std": row.accuracy_std,
            "role": row.role,
            "train_accuracy": row.train_accuracy,
            "test_log_loss": row.test_log_loss,
            "epochs": row.epochs,
            "wall_time": row.wall_time,
            "fail_reason": row.fail_reason,
            "datetime_start": row.datetime_start,
            "datetime_complete": row.datetime_complete,
            "curve": [list(point) for point in row.curve],
        }
    )


def report_to_json(report: StudyReport) -> dict[str, Any]:
    """The whole report as one JSON-ready object; numbers stay fractions, not percent (the
    answer's gains are in points, as its key says)."""
    return {
        "answer": None if report.answer is None else answer_text.to_json(
            report.answer, family_of_rows(report)),
        "study": _json_value(
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
        "best": _trial_json(report.best),
        "baseline": _trial_json(report.baseline),
        "top": [_trial_json(row) for row in report.top],
        "balance": _json_value(report.balance),
        "placements": [
            {
                "placement": p.placement,
                "n_trials": p.n_trials,
                "pruned": p.pruned,
                "uneven": p.uneven,
                "best_number": p.best.number,
                "best": _trial_json(p.best),
                "diff_from_baseline": _json_number(p.diff_from_baseline),
                "confirmed": None if p.confirmed is None else {
                    "source_trial": p.confirmed.source_trial,
                    "accuracy": _iv_json(p.confirmed.accuracy),
                    "diff_from_baseline": None if p.confirmed.vs_baseline is None
                    else _iv_json(p.confirmed.vs_baseline.diff)},
            }
            for p in report.placements
        ],
        "importances": _json_value(dict(report.importances)),
        "selection": None if report.selection is None else {
            "rule": report.selection.rule, "number": report.selection.chosen.number,
            "best_number": report.selection.best.number,
            "threshold": _json_number(report.selection.threshold)},
        "overfitting": [{"placement": p.placement, "number": p.best.number,
                         "gap": _json_number(p.best.gap)} for p in report.placements],
        "confirmation": (None if report.confirmation is None
                         else confirmation_to_json(report.confirmation)),
        "test": None if report.test is None else test_to_json(report.test, family_of_rows(report)),
        "trials": [_trial_json(row) for row in report.trials],
    }


def studies_to_json(rows: Sequence[StudyRow]) -> list[dict[str, Any]]:
    return [
        _json_value(
            {
                "name": row.name,
                "kind": row.kind,  # search, confirmation or test
                "of": row.of,  # a companion's search study
                "direction": row.direction,
                "counts": dict(row.counts),
                "n_trials": row.n_trials,
                "best_value": row.best_value if row.kind == "search" else None,
                "last_update": row.last_update,
            }
        )
        for row in rows
    ]


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # full precision: the CSV is for further analysis
    return str(value)


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
        writer.writerow([_csv_cell(v) for v in (*fixed, *params, *fold_cells)])
    return buffer.getvalue()


def report_to_markdown(report: StudyReport) -> str:
    """GitHub-flavoured Markdown: the answer as a paragraph to paste, then the same sections
    as the table format."""
    sections = _markdown(_report_sections(report))
    if report.answer is None:
        return sections
    return (answer_text.paragraph(report.answer, family_of_rows(report), report.data)
            + "\n\n" + sections)


# ----------------------------------------------------------------------------- entry points


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _write(console: Console, text: str) -> None:
    """Raw text: no highlighting, markup, emoji or wrapping, so it parses as written."""
    end = "" if text.endswith("\n") else "\n"
    plain = strip_control_codes(text)  # as Console.out would
    if "\t" in plain:  # Console.out expands tabs; only it knows exactly how
        console.out(text, end=end, highlight=False)
        return
    # The same characters as Console.out, as one segment: out() makes a Text of every line
    # (~12 s for the 25 MB JSON of a 10,000-trial study).
    console.print(Segments([Segment(plain + end)]), crop=False)


# What wraps as one piece: an interval "[a, b]", "(95% CI a to b)", "p = x", else a word.
_WHOLE = re.compile(r"\(95% CI [^()]*\)\S*|\[[^\]]*\]\S*|\(?p = \S+|\S+")


def wrap_whole(line: str, width: int, indent: str = "  ") -> list[str]:
    """``line`` wrapped to ``width`` between pieces, never inside a number, an interval or a
    p-value; lines after the first indented, so each of the block's thoughts stands apart."""
    out, current = [], ""
    for piece in _WHOLE.findall(line):
        if current and len(current) + 1 + len(piece) > width:
            out.append(current)
            current = indent + piece
        else:
            current = f"{current} {piece}" if current else piece
    return out + [current] if current else out


def print_answer(answer: Any, fam: Family, data: str | None, console: Console) -> None:
    """The answer block (:mod:`dropsweep.render.answer`): each of its lines wrapped here, between
    whole pieces (a terminal would cut a number or an interval in two), whatever the width."""
    for n, line in enumerate(answer_text.lines(answer, fam, data)):
        for part in wrap_whole(line, console.width):
            console.print(Text(part, style="bold" if n == 0 else ""), highlight=False,
                          soft_wrap=True)
    console.print()


def render_report(report: StudyReport, fmt: str, console: Console) -> None:
    """Print a study's report to ``console`` as "table", "json", "csv" or "markdown"; the
    answer comes first in every format but CSV (a table of trials)."""
    _check_format(fmt)
    if fmt == "table":
        if report.answer is not None:
            print_answer(report.answer, family_of_rows(report), report.data, console)
        _print_sections(_report_sections(report), console)
    elif fmt == "json":
        _write(console, json.dumps(report_to_json(report), indent=2))
    elif fmt == "csv":
        _write(console, report_to_csv(report))
    else:
        _write(console, report_to_markdown(report))


def render_studies(rows: list[StudyRow], fmt: str, console: Console) -> None:
    """Print the ``studies`` listing: name, kind (a search, or the confirmation or test of
    one), trials by state, a search's best value, last update."""
    _check_format(fmt)
    if fmt == "json":
        _write(console, json.dumps(studies_to_json(rows), indent=2))
    elif fmt == "table":
        _print_sections([_studies_section(rows)], console)
    elif fmt == "markdown":
        _write(console, _markdown([_studies_section(rows)]))
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["name", "kind", "of", "n_trials", "counts", "best_value",
                         "last_update"])
        for row in rows:
            writer.writerow(
                [
                    row.name,
                    row.kind,
                    row.of or "",
                    row.n_trials,
                    json.dumps(row.counts),
                    _csv_cell(row.best_value),
                    row.last_update.isoformat() if row.last_update else "",
                ]
            )
        _write(console, buffer.getvalue())


# ----------------------------------------------------------------------------- confirmation


def _interval_points(interval: Any) -> str:
    if interval is None or math.isnan(interval.low):
        return _MISSING
    return f"[{interval.low * 100:+.2f}, {interval.high * 100:+.2f}]"


def _p(p: float | None) -> str:
    if p is None or math.isnan(p):
        return _MISSING
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _protocol(c: Any, repeats: int | None = None, new: bool = True,
              repeated: bool = False) -> str:
    """How a confirmation scored: "5 x 10-fold CV on new splits", "5 new hold-out splits";
    ``repeated``: "repeated 10-fold CV on new splits"."""
    r = c.repeats if repeats is None else repeats
    if getattr(c, "holdout", False):
        return ("repeated hold-out on new validation splits" if repeated
                else f"{r} {'new ' if new else ''}hold-out splits")
    return (f"repeated {c.folds}-fold CV" if repeated else f"{r} x {c.folds}-fold CV") + (
        " on new splits" if new else "")


def confirmation_protocol(confirmation: Any, repeats: int | None = None) -> str:
    """How a confirmation scored, in the words its table uses ("5 x 10-fold CV on new
    splits", "5 new hold-out splits"): for a figure's title."""
    return _protocol(confirmation, repeats)


def verdict_text(confirmation: Any) -> str:
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
    scored = " validation accuracy" if getattr(confirmation, "holdout", False) else ""
    how = (f"{best.accuracy.mean * 100:.2f}% vs {base.accuracy.mean * 100:.2f}%{scored} "
           f"{of_ref}, "
           f"{cmp.diff.mean * 100:+.2f} points"
           + ("" if math.isnan(cmp.diff.low) else
              f" (95% CI {cmp.diff.low * 100:+.2f} to {cmp.diff.high * 100:+.2f})")
           + f", p = {_p(cmp.p)}")
    test = (f"{_protocol(confirmation, new=False)}, Nadeau-Bengio "
            "corrected t-test")
    if v.better and v.significant:
        return f"Verdict: {what} beats {ref}: {how}; significant at 5% ({test})."
    if v.better:
        return (f"Verdict: {what} is ahead of {ref}, but not significantly: {how}; "
                f"not significant at 5% ({test}).")
    return (f"Verdict: no set-up beats {ref}; the best, {what}: {how}"
            f"{'; significantly worse at 5%' if v.significant else ''} ({test}).")


def _confirmed_section(confirmation: Any) -> _Section:
    fam = family_of_rows(confirmation)
    # what else a baseline sets; an implicit one (the MLP's optimizer) where a row sets it
    settings = [d for d in fam.dimensions if d.in_baseline and (
        not d.implicit or any(d.name in r.config for r in confirmation.rows))]
    holdout = getattr(confirmation, "holdout", False)
    rows = []
    for r in confirmation.rows:
        cmp = r.vs_baseline
        rows.append((
            _trial_number(r.source_trial),
            r.role, fam.describe(r.config),
            *(("" if not d.used(r.config)  # momentum under Adam: not a setting it has
               else _param(value_of(d, r.config)) or ("off" if d.can_be_off else ""))
              for d in settings), str(r.repeats),
            _percent(r.accuracy.mean),
            _ci(r.accuracy),
            _points(cmp.diff.mean) if cmp else "", _interval_points(cmp.diff) if cmp else "",
            _p(cmp.p) if cmp else ""))
    return _Section(
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


def _p_words(p: float) -> str:
    """"p = 0.021" or "p < 0.001", for a sentence."""
    text = _p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _row_words(fam: Any, row: Any) -> str:
    """A confirmed row in a sentence: "input dropout 0.2 (#5)", "the no-dropout baseline"."""
    if row.role == records.ROLE_BASELINE:
        return fam.baseline_words
    return f"{fam.describe(row.config)} (#{row.source_trial})"


def _pair_words(fam: Any, pair: Any) -> str:
    diff = pair.comparison.diff
    ci = "" if math.isnan(diff.low) else (f" (95% CI {diff.low * 100:+.2f} to "
                                          f"{diff.high * 100:+.2f})")
    return (f"{_row_words(fam, pair.ahead)} is ahead of {_row_words(fam, pair.behind)} by "
            f"{diff.mean * 100:.2f} points{ci}, adjusted {_p_words(pair.p_adjusted)}")


def _none_differs(names: Sequence[str], reference: str) -> str:
    if len(names) == 1:
        return f"{names[0]} does not differ significantly from {reference}"
    if len(names) == 2:
        return f"neither {names[0]} nor {names[1]} differs significantly from {reference}"
    return (f"none of {', '.join(names[:-1])} or {names[-1]} differs significantly "
            f"from {reference}")


def placement_verdict_text(confirmation: Any) -> str:
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
             + "; ".join(f"{_row_words(fam, r)} {_percent(r.accuracy.mean)}" for r in pv.rows)
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


def _per_placement_section(confirmation: Any) -> _Section:
    fam, pv = family_of_rows(confirmation), confirmation.per_placement
    rows = [(_row_words(fam, p.ahead), _row_words(fam, p.behind),
             f"{p.comparison.diff.mean * 100:+.2f}", _interval_points(p.comparison.diff),
             _p(p.comparison.p), _p(p.p_adjusted)) for p in pv.pairs]
    paired = ("split by split on shared validation splits"
              if getattr(confirmation, "holdout", False) else "fold by fold on shared repeats")
    # the set-ups wrap; a narrow terminal loses the unadjusted p first, then the interval
    return _Section(f"Per-placement comparison (every pair, {paired})",
                    ("ahead", "behind", "Δ (pp)", "95% CI (pp)", "p", "Holm p"), rows,
                    frozenset({2, 3, 4, 5}), note=placement_verdict_text(confirmation),
                    priority=(0, 0, 0, 1, 2, 0))


def _confirmation_sections(confirmation: Any) -> list[_Section]:
    """The Confirmed table, then the per-placement pairs when there are any."""
    sections = [_confirmed_section(confirmation)]
    if confirmation.per_placement is not None:
        sections.append(_per_placement_section(confirmation))
    return sections


def _iv_json(i: Any) -> dict[str, Any]:
    return {"mean": _json_number(i.mean), "low": _json_number(i.low),
            "high": _json_number(i.high), "n": i.n}


def _per_placement_json(confirmation: Any) -> dict[str, Any] | None:
    pv = confirmation.per_placement
    if pv is None:
        return None

    def row(r: Any) -> dict[str, Any]:
        return _json_value({"source_trial": r.source_trial, "role": r.role,
                            "placement": r.placement, "config": r.config,
                            "repeats": r.repeats, "accuracy": _iv_json(r.accuracy)})

    def ref(r: Any) -> dict[str, Any]:
        return {"source_trial": r.source_trial, "role": r.role, "placement": r.placement}

    return {
        "rows": {placement: row(r) for placement, r in pv.placements.items()},
        "baseline": next((row(r) for r in pv.rows if r.role == records.ROLE_BASELINE), None),
        "comparisons": pv.comparisons,
        "pairs": [{"ahead": ref(p.ahead), "behind": ref(p.behind),
                   "diff": _iv_json(p.comparison.diff), "t": _json_number(p.comparison.t),
                   "p": _json_number(p.comparison.p), "p_adjusted": _json_number(p.p_adjusted),
                   "significant": p.significant} for p in pv.pairs],
        "text": placement_verdict_text(confirmation),
    }


def confirmation_to_json(confirmation: Any) -> dict[str, Any]:
    iv = _iv_json
    v = confirmation.verdict
    return {
        "study": confirmation.study_name, "confirms": confirmation.confirms,
        "folds": confirmation.folds, "repeats": confirmation.repeats,
        "test_train_ratio": None if confirmation.ratio is None
        else _json_number(confirmation.ratio),
        "rows": [{"source_trial": r.source_trial, "role": r.role, "placement": r.placement,
                  "config": r.config, "repeats": r.repeats, "accuracy": iv(r.accuracy),
                  "vs_baseline": None if r.vs_baseline is None else {
                      "diff": iv(r.vs_baseline.diff), "t": _json_number(r.vs_baseline.t),
                      "p": _json_number(r.vs_baseline.p)}}
                 for r in confirmation.rows],
        "verdict": None if v is None else {
            "source_trial": v.best.source_trial, "placement": v.best.placement,
            "better": v.better, "significant": v.significant, "text": verdict_text(confirmation)},
        "per_placement": _per_placement_json(confirmation),
    }


def render_confirmation(confirmation: Any, console: Console, fmt: str = "table") -> None:
    if fmt == "json":
        _write(console, json.dumps(confirmation_to_json(confirmation), indent=2))
    else:  # `dropsweep confirm` has no --format: the report has every column
        _print_sections(_confirmation_sections(confirmation), console,
                        hint="widen the terminal, or see dropsweep report --format json")


# ----------------------------------------------------------------------------- test set


def test_text(result: Any, family_name: Family | str) -> str:
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


def _gain_words(gain: Any, p_holm: float | None) -> str:
    """"+0.28 points (95% CI -1.02 to +1.58), p = 0.412, Holm p = 0.412"."""
    d = gain.diff
    ci = "" if math.isnan(d.low) else f" (95% CI {d.low * 100:+.2f} to {d.high * 100:+.2f})"
    return (f"{d.mean * 100:+.2f} points{ci}, {_p_words(gain.p)}, Holm "
            f"{_p_words(math.nan if p_holm is None else p_holm)}")


def _two_way_text(result: Any, family_name: Family | str) -> str:
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
            f"{_p_words(d.p)}; trained on every searched row, validation rows included; "
            f"{looked}. It predates the comparison with the tuned no-dropout, which tells "
            f"tuning's share of the gain apart: dropsweep test --study {study} --rescore "
            "scores it (a second look at the test rows, recorded).")


def _test_section(result: Any, family_name: Family | str) -> _Section:
    title = f"Test ({result.study_name}: {result.n_test} test rows, never searched)"
    chosen = f"#{result.chosen.number}"
    if result.tuned is None:  # a test made before issue 25
        rows = [(str(r), str(seed), _percent(a), _percent(b), _points(a - b))
                for r, (seed, a, b) in enumerate(zip(result.seeds, result.chosen_scores,
                                                     result.baseline_scores))]
        rows.append(("mean", "", _percent(result.accuracy.mean),
                     _percent(result.baseline_accuracy.mean),
                     _points(result.vs_baseline.diff.mean)))
        return _Section(title, ("repeat", "seed", chosen, "baseline", "Δ"), rows,
                        frozenset({0, 1, 2, 3, 4}), note=test_text(result, family_name))
    means = (result.accuracy.mean, result.tuned_accuracy.mean, result.baseline_accuracy.mean)
    scored = [*zip(result.seeds, result.chosen_scores, result.tuned_scores,
                   result.baseline_scores)]
    if result.tuned_is_baseline:  # one column: the baseline is the tuned no-dropout
        columns = ("repeat", "seed", f"dropout {chosen}", "baseline = tuned", "dropout Δ")
        rows = [(str(r), str(seed), _percent(a), _percent(b), _points(a - b))
                for r, (seed, a, _, b) in enumerate(scored)]
        rows.append(("mean", "", _percent(means[0]), _percent(means[2]),
                     _points(result.dropout_gain.diff.mean)))
    else:
        columns = ("repeat", "seed", f"dropout {chosen}", f"tuned #{result.tuned.number}",
                   "baseline", "tuning Δ", "dropout Δ")
        rows = [(str(r), str(seed), _percent(a), _percent(t), _percent(b), _points(t - b),
                 _points(a - t)) for r, (seed, a, t, b) in enumerate(scored)]
        rows.append(("mean", "", *(_percent(m) for m in means),
                     _points(result.tuning_gain.diff.mean),
                     _points(result.dropout_gain.diff.mean)))
    return _Section(title, columns, rows, frozenset(range(len(columns))),
                    note=test_text(result, family_name))


def _gain_json(gain: Any, p_holm: float | None) -> dict[str, Any]:
    return {"points": _json_number(gain.diff.mean),
            "ci": [_json_number(gain.diff.low), _json_number(gain.diff.high)],
            "t": _json_number(gain.t), "p": _json_number(gain.p),
            "p_holm": None if p_holm is None else _json_number(p_holm)}


def test_to_json(result: Any, family_name: Family | str) -> dict[str, Any]:
    """The test study as plain data (fractions); ``tuned``, ``tuning_gain`` and
    ``dropout_gain`` are null for a test made before issue 25."""
    iv = _iv_json
    tuned = result.tuned
    return _json_value({
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


def render_test(result: Any, family_name: Family | str, console: Console, fmt: str = "table") -> None:
    if fmt == "json":
        _write(console, json.dumps(test_to_json(result, family_name), indent=2))
    else:
        _print_sections([_test_section(result, family_name)], console)


# ----------------------------------------------------------------------------- comparison


def _comparison_section(names: Sequence[str], rows: Sequence[Any]) -> _Section:
    body = []
    for row in rows:
        cells = []
        for cell in row.cells:
            cells.append(_MISSING if cell is None else
                         f"#{cell.best.number} {_accuracy(cell.best)} "
                         f"({_points(cell.diff_from_baseline)})")
        body.append((row.placement, *cells))
    # Every study asked for stays and no cell wraps ("#4 86.04% ± 5.12 (+1.23 pp)" is one
    # reading): too many studies for the terminal stack, one block per placement.
    return _Section("Best trial of each placement, study by study (Δ vs each study's baseline)",
                    ("placement", *names), body, frozenset(),
                    None if body else "no complete trials yet",
                    whole=frozenset(range(1, len(names) + 1)))


def render_comparison(names: Sequence[str], rows: Sequence[Any], fmt: str,
                      console: Console) -> None:
    if fmt == "json":
        _write(console, json.dumps([{
            "placement": row.placement,
            "studies": {name: None if cell is None else {
                "best_number": cell.best.number, "best": _trial_json(cell.best),
                "diff_from_baseline": _json_number(cell.diff_from_baseline)}
                for name, cell in zip(names, row.cells)}} for row in rows], indent=2))
    elif fmt == "markdown":
        _write(console, _markdown([_comparison_section(names, rows)]))
    else:
        _print_sections([_comparison_section(names, rows)], console)
