"""Balanced budgets: every placement an equal share of a study's trials (``search.balance``).

Left to itself a sampler spends its trials where it liked the first results: in a 200-trial
Sonar study TPE gave one placement 87 complete trials and another 4, and the best of 87 noisy
scores beats the best of 4 by chance alone. Balanced, each trial's placement is the one that
has filled the fewest places so far (the family's order breaks ties: a rotation), and the
sampler chooses the other dimensions *given* that placement: one sampler per placement, with
the placement fixed by Optuna's ``PartialFixedSampler``, learns only from that placement's
trials (a view of the study, as Optuna's Hyperband pruner views one bracket). So each
placement gets the same search: the same budget, the same sampler, its own start-up trials.
The pruner compares a trial with the trials of its own placement for the same reason (a
placement that learns slowly is not cut by the others' early medians).

Counting what fills a place (finished for good, or running) makes it resumable and lets
lost trials be refilled: a trial failed by a kill no longer counts, so its placement is
behind and comes next. Workers that ask at the same moment can still both take a
placement's last place; the trial numbers settle it, as for the study's target
(:func:`over_share`).
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Callable, Container, Mapping, Sequence

import optuna
from optuna.distributions import BaseDistribution
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler, PartialFixedSampler
from optuna.trial import FrozenTrial, TrialState

from dropsweep import records
from dropsweep.study.liveness import abandon, fills_a_place
from dropsweep.answers.rows import best_first
from dropsweep.storage.optuna_private import StudyView

BY = "placement"  # the value of search.balance that balances the family's group dimension


class PlacementView(StudyView):
    """The study as one placement's sampler or pruner sees it: only that placement's trials
    (and the storage, to write as the study would)."""

    def __init__(self, study: optuna.Study, group: str, value: Any) -> None:
        super().__init__(study)
        self.only = (group, value)

    def keeps(self, trial: FrozenTrial) -> bool:
        group, value = self.only
        return trial.params.get(group) == value

    def best_of(self, complete: list[FrozenTrial]) -> FrozenTrial | None:
        ranked = best_first(complete, self.direction)
        return ranked[0] if ranked else None


def filled(trials: Sequence[FrozenTrial], group: str, values: Sequence[Any]) -> dict[Any, int]:
    """Places each placement fills: trials finished for good or running (the study's count)."""
    out = {v: 0 for v in values}
    for t in trials:
        v = t.params.get(group)
        if v in out and fills_a_place(t):
            out[v] += 1
    return out


def next_value(trials: Sequence[FrozenTrial], group: str, values: Sequence[Any]) -> Any:
    """The placement of the next trial: the one with the fewest places, first in order."""
    count = filled(trials, group, values)
    return min(values, key=lambda v: (count[v], values.index(v)))


def shares(target: int, values: Sequence[Any]) -> dict[Any, int]:
    """Each placement's share of ``target`` trials: equal, the first ones one more where it
    does not divide (what :func:`next_value` gives, trial after trial)."""
    k = len(values)
    return {v: target // k + (i < target % k) for i, v in enumerate(values)}


def over_share(trials: Sequence[FrozenTrial], numbers: Container[int], target: int, group: str,
               values: Sequence[Any]) -> set[int]:
    """Of the trials ``numbers`` (a worker's new ones), those beyond their placement's share:
    of each placement's trials that fill a place, the first by number keep the share. The
    baseline is never beyond it: every comparison needs it, so one run again after it
    diverged fills a place of its placement even when that placement's share is full
    (dropping it would leave the study asking for it again, and for nothing else)."""
    share, seen, out = shares(target, values), {v: 0 for v in values}, set()
    for t in sorted((t for t in trials if fills_a_place(t)), key=lambda t: t.number):
        v = t.params.get(group)
        if v not in seen:
            continue
        seen[v] += 1
        if (seen[v] > share[v] and t.number in numbers
                and t.user_attrs.get(records.ROLE) != records.ROLE_BASELINE):
            out.add(t.number)
    return out


def unsettled(trials: Sequence[FrozenTrial], mine: Mapping[int, Any], target: int, group: str,
              values: Sequence[Any]) -> bool:
    """Whether another worker's trials, numbered before some of ``mine`` (number ->
    placement) and running without a placement yet (a worker writes its asks' parameters
    when its batch of asks ends), could put one of ``mine`` beyond its share."""
    last = max(mine, default=-1)
    unknown = sum(t.state == TrialState.RUNNING and group not in t.params and t.number < last
                  and t.number not in mine for t in trials)
    if not unknown:
        return False
    count, share = filled(trials, group, values), shares(target, values)
    return any(count[v] + unknown > share[v] for v in set(mine.values()) if v in count)


def keep_shares(study: optuna.Study, asked: list[tuple[optuna.Trial, Any]], target: int,
                patience: float = 3.0) -> list[tuple[optuna.Trial, Any]]:
    """``asked`` without the trials beyond their placement's share (abandoned, as surplus
    trials are). Where another worker's trials could decide it but have no placement yet,
    wait up to ``patience`` seconds for them (a worker that died meanwhile decides nothing:
    its trials fail as stale)."""
    sampler = study.sampler
    if not isinstance(sampler, BalancedSampler) or not asked:
        return asked
    group, values = sampler.group, sampler.values
    end = time.monotonic() + patience
    while True:
        trials = study.get_trials(deepcopy=False)
        by_number = {t.number: t for t in trials}
        mine = {trial.number: by_number[trial.number].params.get(group) for trial, _ in asked
                if trial.number in by_number}
        if not unsettled(trials, mine, target, group, values) or time.monotonic() > end:
            break
        time.sleep(0.05)
    drop = over_share(trials, mine, target, group, values)
    kept = []
    for trial, config in asked:
        if trial.number in drop:
            abandon(study, trial, records.SURPLUS)
        else:
            kept.append((trial, config))
    return kept


class BalancedSampler(BaseSampler):
    """One sampler per placement, each fixed to it and learning from its trials alone; the
    placement of each new trial chosen by :func:`next_value` as it is created (Optuna's
    ``before_trial``), or the one a queued trial fixes (the baseline). ``reseed(study,
    trial, sampler)``, if given, reseeds the placement's sampler for each trial
    (:func:`dropsweep.study.open.sampler_for`)."""

    def __init__(self, group: str, values: Sequence[Any],
                 make: Callable[[int], BaseSampler],
                 reseed: Callable[[optuna.Study, FrozenTrial, BaseSampler], None] | None = None
                 ) -> None:
        self.group, self.values, self.reseed = group, tuple(values), reseed
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._samplers = {v: PartialFixedSampler({group: v}, make(i))
                              for i, v in enumerate(self.values)}
        self._of: dict[int, Any] = {}  # trial number -> its placement, until it is told

    def _route(self, study: optuna.Study, trial: FrozenTrial) -> tuple[BaseSampler, optuna.Study]:
        value = trial.params.get(self.group, self._of.get(trial.number, self.values[0]))
        if value not in self._samplers:  # a trial the space no longer has: any will do
            value = self.values[0]
        return self._samplers[value], PlacementView(study, self.group, value)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        fixed = trial.system_attrs.get("fixed_params", {})
        self._of[trial.number] = fixed.get(self.group) if self.group in fixed else next_value(
            study.get_trials(deepcopy=False), self.group, self.values)
        sampler, view = self._route(study, trial)
        if self.reseed is not None:
            self.reseed(study, trial, sampler)
        sampler.before_trial(view, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial
                                    ) -> dict[str, BaseDistribution]:
        sampler, view = self._route(study, trial)
        return sampler.infer_relative_search_space(view, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        sampler, view = self._route(study, trial)
        return sampler.sample_relative(view, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        sampler, view = self._route(study, trial)
        return sampler.sample_independent(view, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        sampler, view = self._route(study, trial)
        self._of.pop(trial.number, None)
        sampler.after_trial(view, trial, state, values)

    def reseed_rng(self) -> None:
        for sampler in self._samplers.values():
            sampler.reseed_rng()


class PlacementPruner(BasePruner):
    """``inner``, comparing a trial only with the trials of its own placement."""

    def __init__(self, inner: BasePruner, group: str) -> None:
        self.inner, self.group = inner, group

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        view = PlacementView(study, self.group, trial.params.get(self.group))
        return self.inner.prune(view, trial)

