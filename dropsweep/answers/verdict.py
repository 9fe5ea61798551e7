"""What a confirmation study says: each configuration's accuracy with its corrected 95%
interval, its difference from the baseline fold by fold with the Nadeau-Bengio p-value, and
the verdict — plain numbers computed from the stored trials (the words are render's).
A per-placement confirmation is also read pair by pair: every placement's best against
every other, the p-values Holm-adjusted over all the pairs."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from dropsweep import records
from dropsweep.families import DEFAULT_FAMILY, Family, family_of_study, stored_model
from dropsweep.answers.stats import LEVEL, Comparison, Interval, compare, holm, interval

ALPHA = 1.0 - LEVEL  # significance level of the verdict


@dataclass(frozen=True)
class ConfirmedRow:
    """One configuration, over every repeat confirmed so far."""

    source_trial: int  # the search trial it came from (-1: the sweep's baseline, never run)
    role: str
    placement: str  # the value of its family's group dimension
    config: dict
    repeats: int
    accuracy: Interval  # over repeats x folds
    vs_baseline: Comparison | None  # None for the baseline itself


@dataclass(frozen=True)
class Verdict:
    """The best confirmed dropout set-up against no dropout."""

    best: ConfirmedRow
    baseline: ConfirmedRow
    significant: bool  # p < ALPHA
    better: bool  # its mean beats the baseline's


def config_key(config: dict) -> str:
    """A configuration as a key: the same configuration always gives the same string."""
    return json.dumps(config, sort_keys=True)


def _scores(trials: Sequence[FrozenTrial]) -> dict[int, list[float]]:
    """repeat -> fold accuracies, for the complete trials of one configuration."""
    out: dict[int, list[float]] = {}
    for t in trials:
        folds = t.user_attrs.get(records.FOLD_ACCURACIES)
        if t.state == TrialState.COMPLETE and folds and records.REPEAT in t.user_attrs:
            out[int(t.user_attrs[records.REPEAT])] = [float(a) for a in folds]
    return out


def _by_config(trials: Sequence[FrozenTrial]) -> dict[str, list[FrozenTrial]]:
    """The trials of each configuration (by :func:`config_key`), in trial order."""
    groups: dict[str, list[FrozenTrial]] = {}
    for t in trials:  # a trial queued but never given its repeat (abandoned, killed) is not one
        if records.CONFIG in t.user_attrs and records.REPEAT in t.user_attrs:
            groups.setdefault(config_key(t.user_attrs[records.CONFIG]), []).append(t)
    return groups


def confirmed_rows(trials: Sequence[FrozenTrial], folds: int, placement: str,
                   ratio: float | None = None) -> list[ConfirmedRow]:
    """Rows for every configuration of a confirmation study, baseline first, then by mean;
    ``placement`` names the family's group dimension."""
    groups = _by_config(trials)
    scored = {key: _scores(group) for key, group in groups.items()}
    base_key = next((key for key, group in groups.items()
                     if group[0].user_attrs.get(records.ROLE) == records.ROLE_BASELINE), None)
    base = scored.get(base_key, {}) if base_key else {}
    rows = []
    for key, group in groups.items():
        by_repeat = scored[key]
        if not by_repeat:
            continue
        flat = [a for r in sorted(by_repeat) for a in by_repeat[r]]
        shared = [r for r in sorted(by_repeat) if r in base and len(base[r]) == len(by_repeat[r])]
        vs = None
        if key != base_key and shared:
            vs = compare([a for r in shared for a in by_repeat[r]],
                         [a for r in shared for a in base[r]], folds, ratio=ratio)
        first = group[0]
        config = first.user_attrs[records.CONFIG]
        rows.append(ConfirmedRow(
            source_trial=int(first.user_attrs.get(records.SOURCE_TRIAL, -1)),
            role=str(first.user_attrs.get(records.ROLE, "")),
            placement=str(config.get(placement, "")), config=config,
            repeats=len(by_repeat), accuracy=interval(flat, folds, ratio=ratio),
            vs_baseline=vs))
    rows.sort(key=lambda r: (r.role != records.ROLE_BASELINE, -r.accuracy.mean))
    return rows


def verdict(rows: Sequence[ConfirmedRow]) -> Verdict | None:
    """None until the baseline and at least one other configuration are confirmed."""
    baseline = next((r for r in rows if r.role == records.ROLE_BASELINE), None)
    others = [r for r in rows if r.vs_baseline is not None]
    if baseline is None or not others:
        return None
    best = max(others, key=lambda r: (r.accuracy.mean, -r.source_trial))
    p = best.vs_baseline.p if best.vs_baseline else math.nan
    return Verdict(best=best, baseline=baseline, significant=bool(p < ALPHA),
                   better=best.accuracy.mean > baseline.accuracy.mean)


@dataclass(frozen=True)
class PairComparison:
    """Two confirmed rows, fold by fold on the repeats both have."""

    ahead: ConfirmedRow  # the higher mean on those repeats
    behind: ConfirmedRow
    comparison: Comparison  # ahead - behind
    p_adjusted: float  # Holm, over every pair of its PlacementVerdict

    @property
    def significant(self) -> bool:
        return bool(self.p_adjusted < ALPHA)


@dataclass(frozen=True)
class PlacementVerdict:
    """Every placement's best and the baseline, each pair compared."""

    rows: list[ConfirmedRow]  # baseline, then each placement's best in family order; distinct
    placements: dict[str, ConfirmedRow]  # placement -> its row (the baseline may stand for one)
    pairs: list[PairComparison]  # every pair of rows with shared repeats, in row order

    @property
    def comparisons(self) -> int:
        """How many tests Holm adjusted over (a pair without a p-value is not one)."""
        return sum(not math.isnan(p.comparison.p) for p in self.pairs)

    @property
    def largest(self) -> PairComparison | None:
        """The pair furthest apart: what to name when no difference is significant."""
        return max((p for p in self.pairs if not math.isnan(p.comparison.diff.mean)),
                   key=lambda p: p.comparison.diff.mean, default=None)

    def like_reference(self, fam: Family) -> list[ConfirmedRow]:
        """The dropout rows that differ significantly from no no-dropout row they were
        compared with (the baseline, the ``none`` placement's best): "does dropout help?"."""
        out = []
        for row in self.rows:
            if fam.is_reference(row.config):
                continue
            against = [p for p in self.pairs if (p.ahead is row or p.behind is row)
                       and fam.is_reference((p.behind if p.ahead is row else p.ahead).config)]
            if against and not any(p.significant for p in against):
                out.append(row)
        return out


def _pair(a: ConfirmedRow, b: ConfirmedRow, sa: dict[int, list[float]],
          sb: dict[int, list[float]], folds: int, ratio: float | None = None
          ) -> tuple[ConfirmedRow, ConfirmedRow,
                                                           Comparison] | None:
    """a against b on the repeats both have (same number of folds), the one ahead first;
    None when they share no repeat."""
    shared = [r for r in sorted(sa) if r in sb and len(sa[r]) == len(sb[r])]
    if not shared:
        return None
    xa = [x for r in shared for x in sa[r]]
    xb = [x for r in shared for x in sb[r]]
    cmp = compare(xa, xb, folds, ratio=ratio)
    if cmp.diff.mean < 0:
        return b, a, compare(xb, xa, folds, ratio=ratio)
    return a, b, cmp


def placement_verdict(trials: Sequence[FrozenTrial], rows: Sequence[ConfirmedRow],
                      chosen: Mapping[str, Any], folds: int, fam: Family,
                      ratio: float | None = None
                      ) -> PlacementVerdict | None:
    """The rows ``chosen`` names (records.PER_PLACEMENT: placement -> {"config": ...}) and
    the baseline, compared pair by pair; None until two of them have results.

    Comparing k rows makes k(k-1)/2 tests, so one of them looks significant by chance far
    more often than 5%: the p-values are Holm-adjusted over all of them."""
    by_key = {config_key(r.config): r for r in rows}
    placements: dict[str, ConfirmedRow] = {}
    for value in fam.group_values:
        entry = chosen.get(value)
        row = by_key.get(config_key(entry.get("config"))) if isinstance(entry, dict) else None
        if row is not None:
            placements[value] = row
    ordered = [r for r in rows if r.role == records.ROLE_BASELINE][:1]
    for row in placements.values():
        if all(row is not r for r in ordered):
            ordered.append(row)
    if len(ordered) < 2:
        return None
    scores = {key: _scores(group) for key, group in _by_config(trials).items()}
    raw = []
    for i, a in enumerate(ordered):
        for b in ordered[i + 1:]:
            found = _pair(a, b, scores[config_key(a.config)], scores[config_key(b.config)],
                          folds, ratio)
            if found is not None:
                raw.append(found)
    adjusted = holm([cmp.p for _, _, cmp in raw])
    pairs = [PairComparison(a, b, cmp, p) for (a, b, cmp), p in zip(raw, adjusted)]
    return PlacementVerdict(rows=ordered, placements=placements, pairs=pairs)


@dataclass(frozen=True)
class Confirmation:
    """A confirmation study, read: rows baseline first, and the verdict when there is one."""

    study_name: str
    confirms: str  # the search study
    folds: int
    repeats: int  # the most repeats any configuration has
    rows: list[ConfirmedRow]
    verdict: Verdict | None
    family: str = DEFAULT_FAMILY  # whose words describe its configurations
    # the search's stored model section: the family bound to it (families.family_of_rows)
    model: dict[str, Any] | None = None
    per_placement: PlacementVerdict | None = None  # a --per-placement confirmation's pairs
    # n_test / n_train of its splits, which the corrected tests use: recorded by confirm
    # (a hold-out split's measured ratio), else k-fold's 1/(k-1)
    ratio: float | None = None
    # config_key -> repeat -> fold accuracies: what paired comparisons are computed from
    scores: Mapping[str, Mapping[int, list[float]]] = field(default_factory=dict)

    @property
    def holdout(self) -> bool:
        """Scored on one validation split a repeat, not on k folds."""
        return self.folds < 2


def build_confirmation(study: optuna.Study, folds: int, fam: Family | None = None
                       ) -> Confirmation:
    """Read a confirmation study (of a search of family ``fam``: the one it recorded)."""
    attrs = study.user_attrs
    fam = fam or family_of_study(attrs)
    trials = study.get_trials(deepcopy=False)
    recorded = attrs.get(records.TEST_TRAIN_RATIO)
    ratio = float(recorded) if isinstance(recorded, (int, float)) else None
    rows = confirmed_rows(trials, folds, fam.group, ratio)
    chosen = attrs.get(records.PER_PLACEMENT)
    per = (placement_verdict(trials, rows, chosen, folds, fam, ratio)
           if isinstance(chosen, dict) else None)
    return Confirmation(study_name=study.study_name,
                        confirms=str(attrs.get(records.CONFIRM_OF, "")),
                        folds=folds, repeats=max((r.repeats for r in rows), default=0),
                        rows=rows, verdict=verdict(rows), family=fam.name,
                        model=stored_model(attrs), per_placement=per,
                        ratio=ratio, scores={key: _scores(group) for key, group
                                             in _by_config(trials).items()})


def best_dropout(confirmation: Confirmation, fam: Family) -> ConfirmedRow | None:
    """The best confirmed dropout set-up: of the confirmed rows with dropout, the highest
    confirmed mean (the earlier search trial on a tie), as the answer ranks them; None
    without one. What ``dropsweep test`` holds against the tuned no-dropout."""
    return max((r for r in confirmation.rows if not fam.is_reference(r.config)),
               key=lambda r: (r.accuracy.mean, -r.source_trial), default=None)
