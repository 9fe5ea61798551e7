"""``report --compare``: each placement's best trial, study by study, as a table, Markdown or
JSON."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Sequence

from rich.console import Console

from dropsweep.render.cells import MISSING, accuracy, points
from dropsweep.render.formats import (Section, json_number, markdown, print_sections,
                                      trial_json, write)

if TYPE_CHECKING:  # types only: rendering must not import numpy (answers/select.py does)
    from dropsweep.answers.select import ComparedPlacement

def _comparison_section(names: Sequence[str], rows: Sequence[ComparedPlacement]) -> Section:
    body = []
    for row in rows:
        cells = []
        for cell in row.cells:
            cells.append(MISSING if cell is None else
                         f"#{cell.best.number} {accuracy(cell.best)} "
                         f"({points(cell.diff_from_baseline)})")
        body.append((row.placement, *cells))
    # Every study asked for stays and no cell wraps ("#4 86.04% ± 5.12 (+1.23 pp)" is one
    # reading): too many studies for the terminal stack, one block per placement.
    return Section("Best trial of each placement, study by study (Δ vs each study's baseline)",
                   ("placement", *names), body, frozenset(),
                   None if body else "no complete trials yet",
                   whole=frozenset(range(1, len(names) + 1)))


def render_comparison(names: Sequence[str], rows: Sequence[ComparedPlacement], fmt: str,
                      console: Console) -> None:
    if fmt == "json":
        write(console, json.dumps([{
            "placement": row.placement,
            "studies": {name: None if cell is None else {
                "best_number": cell.best.number, "best": trial_json(cell.best),
                "diff_from_baseline": json_number(cell.diff_from_baseline)}
                for name, cell in zip(names, row.cells)}} for row in rows], indent=2))
    elif fmt == "markdown":
        write(console, markdown([_comparison_section(names, rows)]))
    else:
        print_sections([_comparison_section(names, rows)], console)
