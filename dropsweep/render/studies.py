"""``dropsweep studies``: every study of a storage — its kind (a search, or the confirmation
or test of one), its trials by state, a search's best, its last update — in the four formats."""

from __future__ import annotations

import csv
import io
import json
from typing import TYPE_CHECKING, Any, Sequence

from rich.console import Console

from dropsweep.render.cells import percent, states, when
from dropsweep.render.formats import (Section, check_format, csv_cell, json_value, markdown,
                                      print_sections, write)

if TYPE_CHECKING:  # types only: rendering must not import Optuna (answers/rows.py does)
    from dropsweep.answers.rows import StudyRow

def _kind_words(row: StudyRow) -> str:
    """"search", "confirmation of sonar", "test of digits": what a stored study is."""
    if row.kind == "search":
        return "search"
    return row.kind if row.of is None else f"{row.kind} of {row.of}"


def _studies_section(rows: Sequence[StudyRow]) -> Section:
    body = [
        (
            row.name,
            _kind_words(row),
            states(row.counts, row.n_trials),
            # a search's best only: a companion's best would be its luckiest seed or repeat
            percent(row.best_value) if row.kind == "search" else "",
            when(row.last_update),
        )
        for row in rows
    ]
    note = None if body else "no studies"
    # the counts and the date wrap; a narrow terminal loses the date, then the counts
    return Section("Studies", ("study", "kind", "trials", "best", "last update"), body,
                   frozenset({3}), note, priority=(0, 0, 1, 0, 2))


def studies_to_json(rows: Sequence[StudyRow]) -> list[dict[str, Any]]:
    return [
        json_value(
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


def render_studies(rows: list[StudyRow], fmt: str, console: Console) -> None:
    """Print the ``studies`` listing: name, kind (a search, or the confirmation or test of
    one), trials by state, a search's best value, last update."""
    check_format(fmt)
    if fmt == "json":
        write(console, json.dumps(studies_to_json(rows), indent=2))
    elif fmt == "table":
        print_sections([_studies_section(rows)], console)
    elif fmt == "markdown":
        write(console, markdown([_studies_section(rows)]))
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
                    csv_cell(row.best_value),
                    row.last_update.isoformat() if row.last_update else "",
                ]
            )
        write(console, buffer.getvalue())
