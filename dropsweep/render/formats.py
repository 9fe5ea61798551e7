"""The four formats every answer is shown in — "table", "json", "csv", "markdown" — and what
they share: an answer's tables as :class:`Section` s (strings already), printed fitted to the
terminal or as Markdown; raw text written as ``Console.out`` would; numbers made JSON-ready
(fractions, not percent; NaN as null) and CSV-ready (full precision)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Sequence

from rich.console import Console
from rich.control import strip_control_codes
from rich.segment import Segment, Segments
from rich.text import Text

from dropsweep.render.tables import JSON_HINT, Column, print_table

if TYPE_CHECKING:  # types only: rendering must not import Optuna (answers/rows.py does)
    from dropsweep.answers.rows import TrialRow
    from dropsweep.answers.stats import Interval

FORMATS = ("table", "json", "csv", "markdown")


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def write(console: Console, text: str) -> None:
    """Raw text: no highlighting, markup, emoji or wrapping, so it parses as written."""
    end = "" if text.endswith("\n") else "\n"
    plain = strip_control_codes(text)  # as Console.out would
    if "\t" in plain:  # Console.out expands tabs; only it knows exactly how
        console.out(text, end=end, highlight=False)
        return
    # The same characters as Console.out, as one segment: out() makes a Text of every line
    # (~12 s for the 25 MB JSON of a 10,000-trial study).
    console.print(Segments([Segment(plain + end)]), crop=False)


@dataclass(frozen=True)
class Section:
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


def print_sections(sections: Sequence[Section], console: Console,
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


def markdown(sections: Sequence[Section]) -> str:
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


def json_number(value: float | None) -> float | None:
    """NaN and infinity are not JSON; scripts get null instead."""
    return value if value is None or math.isfinite(value) else None


def json_value(value: Any) -> Any:
    """``value`` made JSON-ready, whatever it holds: NaN as null, a date in ISO form."""
    if isinstance(value, float):
        return json_number(value)
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def csv_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # full precision: the CSV is for further analysis
    return str(value)


def trial_json(row: TrialRow | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return json_value(
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


def interval_json(i: Interval) -> dict[str, Any]:
    return {"mean": json_number(i.mean), "low": json_number(i.low),
            "high": json_number(i.high), "n": i.n}
