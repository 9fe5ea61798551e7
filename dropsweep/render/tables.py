"""Tables that fit a width without cutting a number (formatting only).

Asked to fit a wide table, rich cuts cells ("84.8…"): in an 80-column terminal a report
would lose digits. Here each column says how much it matters instead. A table is drawn
whole when it fits; otherwise the least important columns are left out, one at a time,
until the rest fit with every number whole and text wrapping only at spaces (the columns
left out are named once under the table); when even the essential columns do not fit, each
row becomes a block of "column  value" lines. Widths are rich's own measurements of the
cells (:class:`rich.measure.Measurement`); this module only shares out the room.

Callers pass strings (numbers already formatted), as :mod:`dropsweep.render.report` does::

    columns = [Column("#", right=True), Column("accuracy", right=True),
               Column("momentum", priority=1, right=True), Column("note", priority=2)]
    print_table(console, columns, rows, title="Top trials")
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from rich import box
from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

__all__ = ["Column", "Fit", "JSON_HINT", "fit_table", "left_out_note", "print_table"]

JSON_HINT = "widen the terminal or use --format json"
_WIDE = 100_000  # "no limit" when measuring what a cell needs
_STACK_GAP = 2  # spaces between a stacked row's column name and its value


@dataclass(frozen=True)
class Column:
    """One column: its header and what may happen to it when room is short.

    ``priority`` 0 is essential (never left out); 1, 2, ... are left out before it, the
    highest number first and, among equals, the rightmost first. A ``whole`` cell (every
    ``right``-aligned one: numbers) is never wrapped nor cut; other cells wrap at spaces.
    """

    header: str
    priority: int = 0
    right: bool = False
    whole: bool = False

    @property
    def unbroken(self) -> bool:
        return self.whole or self.right


@dataclass(frozen=True)
class Fit:
    """A table laid out for a width: what to print, how wide it is, and what it lost."""

    renderable: RenderableType
    width: int  # at most the width asked for, unless nothing could fit (then it overflows)
    left_out: tuple[str, ...]  # headers of the columns left out, in table order
    stacked: bool  # one block per row


def _table(show_header: bool) -> Table:
    # Light rules and two-space gutters: the most columns in the least width.
    return Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0), pad_edge=False,
                 show_header=show_header)


def _overhead(console: Console, n: int) -> int:
    """Columns taken by gutters between ``n`` columns (measured, not assumed)."""
    probe = _table(show_header=False)
    for _ in range(n):
        probe.add_column()
    probe.add_row(*["x"] * n)
    return Measurement.get(console, console.options.update_width(_WIDE), probe).maximum - n


def _needs(console: Console, column: Column, cells: Sequence[str], show_header: bool
           ) -> tuple[int, int, int]:
    """(narrowest, cells, natural) widths of a column's content: a whole cell cannot be
    narrower than itself; wrapping text no narrower than its longest word; a header wraps at
    spaces. ``cells``: the natural width of the cells alone (a longer header may wrap)."""
    options = console.options.update_width(_WIDE)
    body = [Measurement.get(console, options, Text(c)) for c in cells]
    head = [Measurement.get(console, options, Text(column.header))] if show_header else []
    widest = max((m.maximum for m in body), default=0)
    words = max((m.minimum for m in body + head), default=0)
    natural = max([widest] + [m.maximum for m in head])
    return (max(widest, words) if column.unbroken else words), widest, natural


def _share(narrowest: list[int], cells: list[int], natural: list[int], room: int
           ) -> list[int]:
    """Widths from ``narrowest`` towards the cells' widths, then the headers', within
    ``room``: each time the column furthest from its goal grows, so wrapped columns come
    out about even and a header wraps before a cell does."""
    widths = list(narrowest)
    spare = room - sum(widths)
    for goal in (cells, natural):
        while spare > 0:
            short = [i for i in range(len(widths)) if widths[i] < goal[i]]
            if not short:
                break
            grow = max(short, key=lambda i: (goal[i] - widths[i], -i))
            widths[grow] += 1
            spare -= 1
    return widths


def _leave_out_order(columns: Sequence[Column]) -> list[int]:
    optional = [i for i, c in enumerate(columns) if c.priority > 0]
    return sorted(optional, key=lambda i: (-columns[i].priority, -i))


def fit_table(console: Console, columns: Sequence[Column], rows: Sequence[Sequence[str]],
              width: int | None = None, show_header: bool = True) -> Fit:
    """Lay ``rows`` out in ``width`` (the console's by default): whole; else without the
    least important columns; else stacked. Numbers are never cut: should even the stacked
    rows not fit, the result is wider than ``width`` (:func:`print_table` lets it overflow)."""
    width = console.width if width is None else width
    needs = [_needs(console, c, [r[i] for r in rows], show_header)
             for i, c in enumerate(columns)]
    kept = list(range(len(columns)))
    left: list[int] = []
    for drop in [None, *_leave_out_order(columns)]:
        if drop is not None:
            kept.remove(drop)
            left.append(drop)
        room = width - _overhead(console, len(kept))
        narrowest = [needs[i][0] for i in kept]
        if sum(narrowest) > room:
            continue
        natural = [needs[i][2] for i in kept]
        fixed = sum(natural) > room
        widths = _share(narrowest, [needs[i][1] for i in kept], natural, room) if fixed \
            else natural
        table = _table(show_header)
        for i, w in zip(kept, widths):
            c = columns[i]
            table.add_column(c.header, justify="right" if c.right else "left",
                             overflow="fold", width=w if fixed else None)
        for row in rows:
            table.add_row(*(Text(row[i]) for i in kept))
        return Fit(table, sum(widths) + width - room,
                   tuple(columns[i].header for i in sorted(left)), stacked=False)
    return _stack(console, columns, rows, width)


def _stack(console: Console, columns: Sequence[Column], rows: Sequence[Sequence[str]],
           width: int) -> Fit:
    """One block per row: "column  value" lines (empty cells skipped), a blank line between."""
    options = console.options.update_width(_WIDE)
    label = max(Measurement.get(console, options, Text(c.header)).maximum for c in columns)
    cells = [_needs(console, c, [r[i] for r in rows], show_header=False)
             for i, c in enumerate(columns)]
    whole = max((n[0] for n, c in zip(cells, columns) if c.unbroken), default=1)
    natural = max((n[2] for n in cells), default=1)
    value = max(min(natural, width - label - _STACK_GAP), whole, 1)
    grid = Table.grid(padding=(0, _STACK_GAP, 0, 0))
    grid.add_column(no_wrap=True, width=label)
    grid.add_column(overflow="fold", width=value)
    for n, row in enumerate(rows):
        if n:
            grid.add_row("", "")
        for c, cell in zip(columns, row):
            if cell:
                grid.add_row(Text(c.header), Text(cell, justify="left"))
    return Fit(grid, label + _STACK_GAP + value, left_out=(), stacked=True)


def left_out_note(left_out: Sequence[str], width: int, hint: str = JSON_HINT) -> str | None:
    """The one line that says which columns a table left out, and how to see them."""
    if not left_out:
        return None
    return f"(columns left out at {width} columns: {', '.join(left_out)}; {hint})"


def print_table(console: Console, columns: Sequence[Column], rows: Sequence[Sequence[str]],
                title: str | None = None, show_header: bool = True,
                hint: str = JSON_HINT) -> Fit:
    """Print a title, the table fitted to the console, and the note on columns left out."""
    if title:
        console.print(Text(title, style="bold"), soft_wrap=False)
    fit = fit_table(console, columns, rows, show_header=show_header)
    _print_overflowing(console, fit)
    note = left_out_note(fit.left_out, console.width, hint)
    if note:  # Text, never markup; wrapped between words, as a terminal would not
        console.print(Text(note, style="italic"), soft_wrap=False)
    return fit


def _print_overflowing(console: Console, fit: Fit) -> None:
    """Print ``fit``; wider than the console (only stacked rows of very long numbers in a
    very narrow console) it overflows rather than lose digits to rich's cropping."""
    if fit.width <= console.width:
        console.print(fit.renderable)
        return
    width = console.width
    console.width = fit.width  # Console.print clamps its own width argument to the console's
    try:
        console.print(fit.renderable, crop=False)
    finally:
        console.width = width
