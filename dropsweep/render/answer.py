"""The answer in words: the block that opens ``dropsweep report`` and ends ``dropsweep
search``, its sentence for JSON and its paragraph for markdown — formatting only, from the
numbers :mod:`dropsweep.answers.answer` computed.

At most six lines, each a whole thought, so that at 80 columns they wrap between words and
never inside a number: the question; the verdict; the three accuracies; the two gains (how
sure); the test rows' figures once scored; the next command. :func:`print_answer` prints
the block, each line wrapped between whole pieces (:func:`wrap_whole`).
"""

from __future__ import annotations

import math
import re
import shlex
from typing import Any

from rich.console import Console
from rich.text import Text

from dropsweep.answers.answer import SEARCH, TESTED, Answer, Figures, Gain, Standing
from dropsweep.families import Family


def _pct(x: float) -> str:
    return f"{x * 100:.2f}%"


def _pts(x: float) -> str:
    return f"{x * 100:+.2f}"


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _trial(s: Standing) -> str:
    return "" if s.trial is None else f" (#{s.trial})"


def _ci(gain: Gain) -> str:
    d = gain.diff
    return "" if math.isnan(d.low) else f" (95% CI {_pts(d.low)} to {_pts(d.high)})"


def question(fam: Family, data: str | None) -> str:
    on = f" on {data}" if data else ""
    return f"does dropout help the {fam.name}{on}?"


def stage(answer: Answer) -> str:
    """Where the figures come from, in a few words."""
    if answer.status == SEARCH:
        return (f"search only, {answer.complete} trial{'s' if answer.complete != 1 else ''}: "
                "optimistic")
    how = (f"{answer.repeats} new hold-out splits" if answer.folds < 2
           else f"{answer.repeats} x {answer.folds}-fold CV on new splits")
    return (f"confirmed on {how}" + (", then the test rows" if answer.status == TESTED else "")
            + ("; the search has found new bests since" if answer.stale else ""))


def verdict(answer: Answer, fam: Family) -> str:
    """One sentence answering the question against the tuned no-dropout."""
    f = answer.figures
    if f.best is None:
        return "No dropout set-up has a result yet."
    if f.tuned is None or f.dropout is None:
        return "No no-dropout result yet to compare the dropout set-ups with."
    best = f"{fam.describe(f.best.config)}{_trial(f.best)}"
    g = f.dropout
    diff = g.diff.mean
    if answer.status == SEARCH:
        lead = "leads" if diff > 0 else "trails"
        return (f"Not known yet: the best dropout set-up, {best}, {lead} the tuned no-dropout "
                f"by {abs(diff) * 100:.2f} points on the search's own scores; confirm it on "
                "new splits.")
    p = f"p = {_p(g.p_holm)} after Holm" if not math.isnan(g.p_holm) else "no test yet"
    if diff > 0 and g.significant:
        return (f"Yes: {best} beats the tuned no-dropout by {diff * 100:.2f} points"
                f"{_ci(g)}, {p}.")
    if diff > 0:
        return (f"Not shown: {best} leads the tuned no-dropout by {diff * 100:.2f} points"
                f"{_ci(g)}, but not significantly ({p}).")
    worse = " significantly" if g.significant else ""
    return (f"No: no dropout set-up beats tuned no-dropout: the best, {best}, is{worse} "
            f"{abs(diff) * 100:.2f} points behind{_ci(g)}, {p}.")


def _three(f: Figures) -> str:
    parts = []
    for label, s in (("baseline (untuned)", f.baseline), ("tuned no-dropout", f.tuned),
                     ("best dropout", f.best)):
        if s is not None:
            parts.append(f"{label} {_pct(s.accuracy.mean)}{_trial(s)}")
    return " · ".join(parts) or "no complete trial yet"


def _gain(label: str, g: Gain | None, tested: bool) -> str | None:
    if g is None:
        return None
    if g.same:
        return f"{label} 0 (the tuned no-dropout is the baseline)"
    text = f"{label} {_pts(g.diff.mean)} points"
    if tested and not math.isnan(g.diff.low):
        text += f" [{_pts(g.diff.low)}, {_pts(g.diff.high)}]"
    if tested and not math.isnan(g.p_holm):
        text += f", p = {_p(g.p_holm)}"
    return text


def gains(f: Figures, tested: bool) -> str:
    """The tuning gain (against the sweep's baseline, untuned) and the dropout gain."""
    parts = [t for t in (_gain("tuning gain", f.tuning, tested),
                         _gain("dropout gain", f.dropout, tested)) if t]
    text = " · ".join(parts) or "no gain to show yet"
    if tested and f.comparisons:
        text += f" (Holm over {f.comparisons} comparison{'s' if f.comparisons > 1 else ''})"
    elif not tested and any(g is not None and not g.same for g in (f.tuning, f.dropout)):
        text += " (search maxima: no interval)"
    return text


def _test_line(answer: Answer) -> str | None:
    t = answer.test
    if t is None:
        return None
    rows = f" {answer.test_rows}" if answer.test_rows else ""
    head = f"On the{rows} test rows ({answer.seeds} seed{'s' if answer.seeds != 1 else ''}): "
    if t.tuned is None:
        return head + (f"{_three(t)}; scored before the tuned no-dropout was: "
                       "--rescore scores it (a second look)")
    return head + f"{_three(t)}; {gains(t, tested=True)}"


def lines(answer: Answer, fam: Family, data: str | None = None) -> list[str]:
    """The answer block, at most six lines."""
    f = answer.figures
    tested = answer.status != SEARCH
    out = [f"Answer: {question(fam, data)} ({stage(answer)})", verdict(answer, fam),
           _three(f), gains(f, tested)]
    test = _test_line(answer)
    if test:
        out.append(test)
    if answer.next:
        out.append(f"Next: {shlex.join(answer.next)}")
    return out


def paragraph(answer: Answer, fam: Family, data: str | None = None) -> str:
    """The answer as one markdown paragraph to paste."""
    first, *rest = lines(answer, fam, data)
    body = " ".join(line.rstrip(".") + "." for line in rest if not line.startswith("Next:"))
    nxt = next((line for line in rest if line.startswith("Next:")), None)
    text = f"**{first}** {body}"
    if nxt:
        text += f" Next: `{nxt[len('Next: '):]}`."
    return text


def _standing_json(s: Standing | None) -> dict[str, Any] | None:
    if s is None:
        return None
    a = s.accuracy
    return {"trial": s.trial, "placement": s.placement or None, "accuracy": _num(a.mean),
            "ci": None if math.isnan(a.low) else [_num(a.low), _num(a.high)]}


def _gain_json(g: Gain | None) -> dict[str, Any] | None:
    if g is None:
        return None
    d = g.diff
    return {"points": _num(d.mean * 100),
            "ci": None if math.isnan(d.low) else [_num(d.low * 100), _num(d.high * 100)],
            "p": None if math.isnan(g.p_holm) else _num(g.p_holm),
            "p_unadjusted": None if math.isnan(g.p) else _num(g.p), "same": g.same}


def _figures_json(f: Figures) -> dict[str, Any]:
    return {"baseline": _standing_json(f.baseline), "tuned_no_dropout": _standing_json(f.tuned),
            "best_dropout": _standing_json(f.best), "tuning_gain": _gain_json(f.tuning),
            "dropout_gain": _gain_json(f.dropout), "comparisons": f.comparisons}


def to_json(answer: Answer, fam: Family) -> dict[str, Any]:
    """``report --format json``'s ``answer``: accuracies as fractions (as the rest of the
    JSON), gains in percentage points, p Holm-adjusted (``p_unadjusted`` beside it)."""
    test = None
    if answer.test is not None:
        test = {**_figures_json(answer.test), "rows": answer.test_rows, "seeds": answer.seeds}
    return {"status": answer.status, "verdict": verdict(answer, fam),
            **_figures_json(answer.figures), "test": test,
            "next": None if answer.next is None else shlex.join(answer.next)}


def _num(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


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


def print_answer(answer: Answer, fam: Family, data: str | None, console: Console) -> None:
    """The answer block (:func:`lines`): each of its lines wrapped here, between
    whole pieces (a terminal would cut a number or an interval in two), whatever the width."""
    for n, line in enumerate(lines(answer, fam, data)):
        for part in wrap_whole(line, console.width):
            console.print(Text(part, style="bold" if n == 0 else ""), highlight=False,
                          soft_wrap=True)
    console.print()
