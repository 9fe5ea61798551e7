"""The answer to dropsweep's one question: which dropout set-up generalises best, and does it
beat no dropout — against the *tuned* no-dropout, with what tuning alone did apart.

A search tunes learning rate, momentum and max-norm for every placement, the no-dropout one
(``none``) included. Comparing the best dropout set-up with the sweep's fixed baseline would
credit dropout with what tuning did, so the answer names three set-ups and two gains:

- the baseline: the sweep's fixed no-dropout set-up (untuned);
- the tuned no-dropout: the best trial of placement ``none`` (the baseline among them);
- the best dropout set-up: the best of the other placements;
- the tuning gain (tuned no-dropout − baseline) and the dropout gain (best dropout − tuned
  no-dropout).

It is read at the furthest stage the study has reached: the search's own scores (the best of
many noisy scores: optimistic, so no test is drawn from them), a confirmation on new splits
(corrected paired t-tests, Holm-adjusted over every comparison the answer draws on: the
tuning gain and each dropout placement against the tuned no-dropout, since the best dropout
set-up is picked among them), and the test rows (seed-paired). Plain numbers; the words are
:mod:`dropsweep.render.answer`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from dropsweep import records
from dropsweep.families import Family
from dropsweep.answers.stats import Comparison, Interval, compare, holm

SEARCH, CONFIRMED, TESTED = "search", "confirmed", "tested"  # how far the answer has come
ALPHA = 0.05  # what the verdict calls significant (Holm-adjusted p below it)


@dataclass(frozen=True)
class Standing:
    """One of the answer's three set-ups and what it scored where the answer was read."""

    trial: int | None  # the search trial it is (None: the sweep's baseline never ran)
    placement: str
    config: Mapping[str, Any]
    accuracy: Interval  # its mean with a 95% interval (NaN bounds where there is none)


@dataclass(frozen=True)
class Gain:
    """One set-up minus another: the difference with its 95% interval and p-values."""

    diff: Interval
    p: float  # the paired test's (NaN: no test, as on the search's own scores)
    p_holm: float  # Holm-adjusted over the answer's comparisons (NaN: none)
    same: bool = False  # the two are one configuration: exactly zero, nothing to test

    @property
    def significant(self) -> bool:
        return not math.isnan(self.p_holm) and self.p_holm < ALPHA


@dataclass(frozen=True)
class Figures:
    """The three set-ups and the two gains as read at one stage."""

    baseline: Standing | None
    tuned: Standing | None
    best: Standing | None
    tuning: Gain | None  # tuned no-dropout − baseline
    dropout: Gain | None  # best dropout − tuned no-dropout
    comparisons: int  # how many tests Holm adjusted over (0 on the search's scores)


@dataclass(frozen=True)
class Answer:
    """Where a study stands on the question, and the command that would make it surer."""

    study: str
    status: str  # SEARCH, CONFIRMED or TESTED
    figures: Figures  # the confirmation's once there is one, else the search's
    test: Figures | None  # on the test rows, once ``dropsweep test`` scored them
    complete: int  # complete search trials: the figures of SEARCH are the best of these
    repeats: int = 0  # confirmation repeats (CONFIRMED, TESTED)
    folds: int = 0  # folds per repeat (1: a hold-out split)
    seeds: int = 0  # test seeds (TESTED)
    test_rows: int | None = None  # rows held back for `test` (None: not known)
    # the command that would make the answer surer, as argv (None: nothing more to do)
    next: tuple[str, ...] | None = None
    # the search found other placement bests since the confirmation: it answers for those
    stale: bool = False


# ----------------------------------------------------------------------------- the search


def from_search(rows: Sequence[Any], baseline: Any | None, fam: Family) -> Figures:
    """The three set-ups among the search's complete trials (``rows``: TrialRow, best
    first): no interval is drawn from them, since each is the best of several noisy scores.
    """
    def standing(row: Any | None) -> Standing | None:
        if row is None or row.accuracy_mean is None:
            return None
        return Standing(row.number, str(row.params.get(fam.group, "")), dict(row.params),
                        Interval(row.accuracy_mean, math.nan, math.nan,
                                 len(row.fold_accuracies)))

    tuned = next((r for r in rows if fam.is_reference(r.params)), None)
    best = next((r for r in rows if not fam.is_reference(r.params)), None)
    base, tuned_s, best_s = standing(baseline), standing(tuned), standing(best)
    return Figures(base, tuned_s, best_s, _plain(tuned_s, base), _plain(best_s, tuned_s), 0)


def _plain(a: Standing | None, b: Standing | None) -> Gain | None:
    """a − b in means only (no test: the search's scores are selected maxima)."""
    if a is None or b is None:
        return None
    same = a.trial is not None and a.trial == b.trial
    return Gain(Interval(a.accuracy.mean - b.accuracy.mean, math.nan, math.nan, 0),
                math.nan, math.nan, same)


# ----------------------------------------------------------------------------- confirmed


def from_confirmation(confirmation: Any, fam: Family) -> Figures | None:
    """The three set-ups as a confirmation re-scored them on new splits (None until the
    baseline and one other set-up have results), with corrected paired tests on the repeats
    each pair shares and Holm over the tuning gain and every dropout placement's best
    against the tuned no-dropout."""
    rows = list(confirmation.rows)
    base = next((r for r in rows if r.role == records.ROLE_BASELINE), None)
    if base is None or len(rows) < 2:
        return None
    chosen = (confirmation.per_placement.placements
              if confirmation.per_placement is not None else {})
    tuned = chosen.get(fam.group_values[0]) or max(
        (r for r in rows if fam.is_reference(r.config)), key=_rank, default=base)
    dropout: dict[str, Any] = {}  # placement -> its best confirmed row
    for r in rows:
        if not fam.is_reference(r.config):
            held = dropout.get(r.placement)
            dropout[r.placement] = r if held is None else max(held, r, key=_rank)
    best = max(dropout.values(), key=_rank, default=None)

    def scores(row: Any) -> dict[int, list[float]]:
        return confirmation.scores.get(_key(row.config), {})

    folds, ratio = confirmation.folds, confirmation.ratio
    tuning = None if _key(tuned.config) == _key(base.config) else _paired(
        scores(tuned), scores(base), folds, ratio)
    against = {p: _paired(scores(r), scores(tuned), folds, ratio) for p, r in dropout.items()}
    tests = [c for c in (tuning, *against.values()) if c is not None and not math.isnan(c.p)]
    adjusted = dict(zip(map(id, tests), holm([c.p for c in tests])))

    def gain(c: Comparison | None, same: bool = False) -> Gain | None:
        if same:
            return Gain(Interval(0.0, 0.0, 0.0, 0), math.nan, math.nan, True)
        if c is None:
            return None
        return Gain(c.diff, c.p, adjusted.get(id(c), math.nan))

    def standing(row: Any) -> Standing:
        trial = None if row.source_trial < 0 else row.source_trial
        return Standing(trial, row.placement, row.config, row.accuracy)

    return Figures(standing(base), standing(tuned),
                   None if best is None else standing(best),
                   gain(tuning, same=tuning is None),
                   None if best is None else gain(against[best.placement]),
                   len(tests))


def _rank(row: Any) -> tuple[float, int]:
    """Higher confirmed mean first; the earlier search trial on a tie."""
    return (row.accuracy.mean, -row.source_trial)


def _key(config: Mapping[str, Any]) -> str:
    from dropsweep.answers.verdict import config_key

    return config_key(dict(config))


def _paired(a: Mapping[int, list[float]], b: Mapping[int, list[float]], folds: int,
            ratio: float | None) -> Comparison | None:
    """a − b fold by fold on the repeats both have (None: none shared)."""
    shared = [r for r in sorted(a) if r in b and len(a[r]) == len(b[r])]
    if not shared:
        return None
    return compare([x for r in shared for x in a[r]], [x for r in shared for x in b[r]],
                   folds, ratio=ratio)


# ----------------------------------------------------------------------------- the test rows


def from_test(result: Any) -> Figures:
    """The three set-ups as ``dropsweep test`` scored them on the test rows, seed-paired,
    the two gains Holm-adjusted over the two (:class:`dropsweep.answers.tested.TestResult`);
    a test study stored before the tuned no-dropout was scored has none, and no gains."""
    base = Standing(None, "", result.baseline.to_dict(), result.baseline_accuracy)
    best = Standing(result.chosen.number, "", result.chosen.config.to_dict(), result.accuracy)
    if result.tuned is None:
        return Figures(base, None, best, None, None, 0)
    tuned = Standing(result.tuned.number, "", result.tuned.config.to_dict(),
                     result.tuned_accuracy)

    def gain(c: Comparison | None, p_holm: float | None) -> Gain | None:
        return None if c is None else Gain(c.diff, c.p, math.nan if p_holm is None else p_holm)

    tuning = (Gain(Interval(0.0, 0.0, 0.0, 0), math.nan, math.nan, True)
              if result.tuned_is_baseline else gain(result.tuning_gain, result.tuning_p_holm))
    dropout = gain(result.dropout_gain, result.dropout_p_holm)
    tests = sum(g is not None and not g.same and not math.isnan(g.p) for g in (tuning, dropout))
    return Figures(base, tuned, best, tuning, dropout, tests)


# ----------------------------------------------------------------------------- the answer


def stale(confirmation: Any, bests: Mapping[str, int]) -> bool:
    """Whether the search has other placement bests (``bests``: placement -> trial) than a
    per-placement confirmation confirmed: it then answers for set-ups no longer the best."""
    chosen = confirmation.per_placement.placements if confirmation.per_placement else {}
    return any(row.source_trial >= 0 and bests.get(p, row.source_trial) != row.source_trial
               for p, row in chosen.items())


def build_answer(study: str, searched: Figures, complete: int, *,
                 confirmation: Any | None = None, confirmed: Figures | None = None,
                 tested: Figures | None = None, seeds: int = 0,
                 test_rows: int | None = None, storage_args: Sequence[str] = (),
                 is_stale: bool = False) -> Answer:
    """The answer at the furthest stage reached, and the command that would make it surer:
    a confirmation after a search (again, when the search has found new bests since:
    ``is_stale``); the test rows after a confirmation (where the sweep holds some back);
    more repeats where a confirmed difference is not yet significant."""
    where = ["--study", study, *storage_args]
    if tested is not None:
        status, figures, after = TESTED, confirmed or searched, None
    elif confirmed is not None and is_stale:
        status, figures, after = CONFIRMED, confirmed, ("dropsweep", "confirm", *where)
    elif confirmed is not None:
        status, figures = CONFIRMED, confirmed
        if test_rows:
            after = ("dropsweep", "test", *where)
        elif figures.dropout is not None and not figures.dropout.significant:
            after = ("dropsweep", "confirm", *where, "--repeats",
                     str(2 * max(confirmation.repeats, 5)))
        else:
            after = None
    else:
        status, figures, after = SEARCH, searched, ("dropsweep", "confirm", *where)
    return Answer(study=study, status=status, figures=figures, test=tested,
                  complete=complete,
                  repeats=confirmation.repeats if confirmation is not None else 0,
                  folds=confirmation.folds if confirmation is not None else 0,
                  seeds=seeds, test_rows=test_rows, next=after,
                  stale=is_stale and confirmed is not None)

