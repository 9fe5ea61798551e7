"""What ``dropsweep test`` found, read back: the test study ``NAME:test`` as plain numbers.

:mod:`dropsweep.study.testset` trains and records; this reads what it recorded (each seed's
test accuracy of the chosen dropout set-up, the tuned no-dropout and the baseline, and the two
gains), so the report shows a test without importing what trains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Container

import optuna
from optuna.trial import FrozenTrial, TrialState

from dropsweep import records
from dropsweep.answers.stats import Comparison, Interval, compare, holm, interval
from dropsweep.storage import optuna_private
from dropsweep.sweep.space import Config


@dataclass(frozen=True)
class Chosen:
    """What is tested: the configuration, the search trial it came from, and why."""

    config: Config
    number: int
    # the dropout set-up: "best" (the best validation score; before issue 25 of any
    # placement, since of the dropout ones), "confirmed" (the best confirmed dropout set-up),
    # "1se", or "trial" (--trial N); the tuned no-dropout: "confirmed" (the confirmation's) or
    # "best" (the search's)
    rule: str


@dataclass(frozen=True)
class TestResult:
    """A test study, read: each seed's test accuracy of the chosen dropout set-up, the tuned
    no-dropout and the baseline, and the two gains. A test study made before issue 25 scored
    the chosen and the baseline only: its tuned fields are None."""

    study_name: str
    chosen: Chosen
    baseline: Config
    n_test: int
    seeds: list[int]
    chosen_scores: list[float]  # test accuracy, seed by seed
    baseline_scores: list[float]
    accuracy: Interval  # the chosen one's, over seeds (a plain t interval)
    baseline_accuracy: Interval
    vs_baseline: Comparison  # chosen - baseline, paired by seed
    rounds: int  # how many times the test set has been scored (1 + rescores)
    fingerprint: str
    repeats: int  # the seeds its round was asked for (len(seeds) until a stopped one ends)
    tuned: Chosen | None = None  # the tuned no-dropout; None: a test made before issue 25
    tuned_scores: list[float] | None = None  # the baseline's when it is the baseline
    tuned_accuracy: Interval | None = None
    # tuned no-dropout - baseline, paired by seed; exactly 0 with no test (t and p NaN) when
    # the tuned no-dropout is the baseline
    tuning_gain: Comparison | None = None
    dropout_gain: Comparison | None = None  # chosen - tuned no-dropout, paired by seed
    tuning_p_holm: float | None = None  # the p-values Holm-adjusted over the two gains
    dropout_p_holm: float | None = None  # (NaN: no test; a NaN one is not counted)

    @property
    def tuned_is_baseline(self) -> bool:
        """The tuned no-dropout is the baseline's configuration: trained once, no tuning
        gain to test."""
        return self.tuned is not None and self.tuned.config == self.baseline


def companion(study: optuna.Study, suffix: str, names: Container[str] | None = None
              ) -> optuna.Study | None:
    """The companion study NAME + ``suffix``, if there is one (``names``: the storage's
    study names, when the caller has read them already)."""
    name = study.study_name + suffix
    storage = optuna_private.study_storage(study)  # the companion lives in the same storage
    if names is None:
        names = {s.study_name for s in storage.get_all_studies()}
    if name not in names:
        return None
    return optuna.load_study(study_name=name, storage=storage)


def companion_test(study: optuna.Study, names: Container[str] | None = None) -> optuna.Study | None:
    """The companion test study, if there is one."""
    return companion(study, records.TEST_SUFFIX, names)


def stored_result(study: optuna.Study, names: Container[str] | None = None
                  ) -> TestResult | None:
    """What ``dropsweep test`` recorded for ``study`` (its latest round), or None."""
    test = companion_test(study, names)
    return None if test is None else read_test(test)


def roles_of(chosen: Chosen, tuned: Chosen | None, baseline: Config
             ) -> list[tuple[str, Config, int]]:
    """(role, configuration, search trial) of each configuration a look scores: the chosen,
    the tuned no-dropout unless it is the baseline's configuration (or a look made before
    issue 25: None), and the baseline."""
    roles = [(records.ROLE_CANDIDATE, chosen.config, chosen.number)]
    if tuned is not None and tuned.config != baseline:
        roles.append((records.ROLE_TUNED, tuned.config, tuned.number))
    return roles + [(records.ROLE_BASELINE, baseline, -1)]


def chosen_of(record: Any) -> Chosen | None:
    """A chosen configuration as recorded in the test study (records.TEST_CHOSEN, _TUNED)."""
    if not isinstance(record, dict):
        return None
    return Chosen(Config(record["config"]), int(record["source_trial"]), str(record["rule"]))


def read_test(test: optuna.Study) -> TestResult | None:
    """The latest round's scores, paired by repeat; None until one repeat has every role."""
    attrs = test.user_attrs
    round_ = int(attrs.get(records.TEST_ROUNDS, 1))
    by: dict[tuple[str, int], FrozenTrial] = {}
    for t in test.get_trials(deepcopy=False):
        if t.user_attrs.get(records.TEST_ROUND) == round_ and t.state == TrialState.COMPLETE:
            by[(t.user_attrs[records.ROLE], int(t.user_attrs[records.REPEAT]))] = t
    chosen, tuned = chosen_of(attrs.get(records.TEST_CHOSEN)), chosen_of(
        attrs.get(records.TEST_TUNED))
    base = next((t.user_attrs[records.CONFIG] for (role, _), t in by.items()
                 if role == records.ROLE_BASELINE), None)
    if chosen is None or base is None:
        return None
    roles = {role for role, _, _ in roles_of(chosen, tuned, Config(base))}
    repeats = sorted(r for role, r in by if role == records.ROLE_CANDIDATE
                     and all((other, r) in by for other in roles))
    if not repeats:
        return None

    def scores(role: str) -> list[float]:
        return [float(by[(role, r)].value) for r in repeats]

    a, b = scores(records.ROLE_CANDIDATE), scores(records.ROLE_BASELINE)
    result = TestResult(
        study_name=test.study_name, chosen=chosen, baseline=Config(base),
        n_test=int(attrs.get(records.TEST_ROWS, 0)),
        seeds=[int(by[(records.ROLE_CANDIDATE, r)].user_attrs[records.SEED]) for r in repeats],
        chosen_scores=a, baseline_scores=b,
        accuracy=interval(a, ratio=0.0), baseline_accuracy=interval(b, ratio=0.0),
        vs_baseline=compare(a, b, ratio=0.0), rounds=round_,
        fingerprint=str(attrs.get(records.TEST_FINGERPRINT, "")),
        repeats=max(int(attrs.get(records.TEST_REPEATS, 0)), len(repeats)))
    if tuned is None:  # a test made before issue 25: the chosen and the baseline only
        return result
    if records.ROLE_TUNED in roles:
        t = scores(records.ROLE_TUNED)
        tuning = compare(t, b, ratio=0.0)
    else:  # the tuned no-dropout is the baseline: trained once, nothing to test
        t = b
        tuning = Comparison(Interval(0.0, 0.0, 0.0, len(b)), math.nan, math.nan)
    dropout = compare(a, t, ratio=0.0)
    p_tuning, p_dropout = holm([tuning.p, dropout.p])
    return replace(result, tuned=tuned, tuned_scores=t, tuned_accuracy=interval(t, ratio=0.0),
                   tuning_gain=tuning, dropout_gain=dropout, tuning_p_holm=p_tuning,
                   dropout_p_holm=p_dropout)
