"""``dropsweep test``: the chosen dropout set-up, the tuned no-dropout and the baseline,
once, on the test rows.

A search chose its winner on validation (or fold) scores, and a confirmation re-checked it on
new splits of the same rows; neither ever saw the test rows that ``eval.test`` held back.
This scores three configurations on them: the chosen dropout set-up, the *tuned* no-dropout
(the best of the no-dropout placement) and the sweep's baseline, each trained on every row
the search saw (its validation rows included: they have done their job of choosing, and a
final model trained on more rows is the one a user would keep; all get the same),
``repeats`` times with seeds the search never used, then tested. Every candidate had its
learning rate (and the rest) tuned and the baseline did not, so the chosen against the
baseline credits dropout with what tuning did: the two gains are told apart, the tuning gain
(tuned no-dropout - baseline) and the dropout gain (chosen - tuned no-dropout), their
p-values Holm-adjusted over the two. Training randomness is what differs from run to run on
the same test images, so they are compared seed by seed (a paired t-test over seeds;
per-image tests such as McNemar's would treat one training run as the configuration).

The results are a companion study ``NAME:test`` holding a fingerprint of the test rows.
Looking at a test set again and again is how it stops being one: a second ``dropsweep test``
shows the stored answer, and says so; anything more — more seeds, another trial or tuned
no-dropout, a changed test set — is a second look, made only with ``rescore`` and recorded
(each round's time).
A look a stop cut short goes on as it began: its configuration, its seeds.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any, Callable

import numpy as np
import optuna
from optuna.trial import TrialState, create_trial

from dropsweep import records
from dropsweep.study.liveness import now_utc
from dropsweep.sweep.config import Sweep
from dropsweep.data.dataset import Dataset, fingerprint
from dropsweep.errors import DropsweepError, StorageError
from dropsweep.families import train_apart
from dropsweep.answers.rows import best_first, trial_row
from dropsweep.answers.select import select
from dropsweep.sweep.space import Config, config_values, fixed_distributions, space_of
from dropsweep.storage import optuna_private
from dropsweep.storage.faults import describe_failure
from dropsweep.study.open import stored_sweep
from dropsweep.study.stop import StopFlag, at_once
from dropsweep.answers.verdict import Confirmation, best_dropout, build_confirmation, config_key
from dropsweep.answers.tested import (Chosen, TestResult, companion, companion_test, read_test,
                                      roles_of)


DEFAULT_REPEATS = 3


def test_seed(sweep: Sweep, repeat: int) -> int:
    """The training seed of repeat r: from the search's seed, never one a trial used."""
    seed = np.random.SeedSequence([sweep.search.seed, 0x7E57, repeat]).generate_state(1)[0]
    return int(seed & 0x7FFFFFFF)


def choose(study: optuna.Study, sweep: Sweep, rule: str = "best", number: int | None = None,
           confirmation: Confirmation | None = None) -> Chosen:
    """The dropout set-up to test: trial ``number`` as given, else what ``rule`` recommends
    among the trials with dropout; ``best`` once a ``confirmation`` has one: the best
    confirmed dropout set-up (:func:`dropsweep.answers.verdict.best_dropout`)."""
    trials = study.get_trials(deepcopy=False)
    if number is not None:
        trial = next((t for t in trials if t.number == number), None)
        if trial is None or trial.state != TrialState.COMPLETE or \
                records.CONFIG not in trial.user_attrs:
            raise DropsweepError(f"--trial {number}: study '{study.study_name}' has no complete "
                                 "trial of that number")
        return Chosen(Config(trial.user_attrs[records.CONFIG]), number, "trial")
    fam = sweep.family
    if rule == "best" and confirmation is not None:
        row = best_dropout(confirmation, fam)
        if row is not None:
            return Chosen(Config(row.config), row.source_trial, "confirmed")
    by_number = {t.number: t for t in trials if records.CONFIG in t.user_attrs}
    dropout = [trial_row(t) for t in by_number.values()
               if not fam.is_reference(t.user_attrs[records.CONFIG])]
    ranked = best_first(dropout, study.direction)
    selection = select(ranked, rule, sweep.dimensions,
                       study.user_attrs.get(records.VALIDATION_ROWS))
    if selection is None:
        raise DropsweepError(f"study '{study.study_name}' has no complete trial with dropout to "
                             "test yet (--trial N tests any trial)")
    return Chosen(Config(by_number[selection.chosen.number].user_attrs[records.CONFIG]),
                  selection.chosen.number, rule)


def choose_tuned(study: optuna.Study, sweep: Sweep, per_placement: Any = None) -> Chosen:
    """The tuned no-dropout: the no-dropout placement's entry of a per-placement
    confirmation's record (records.PER_PLACEMENT, ``per_placement``), else the search's best
    complete trial of that placement — the baseline among them, and the baseline when no
    other finished."""
    reference = sweep.family.group_values[0]
    entry = per_placement.get(reference) if isinstance(per_placement, dict) else None
    if isinstance(entry, dict) and isinstance(entry.get("config"), dict):
        return Chosen(Config(entry["config"]), int(entry.get("source_trial", -1)), "confirmed")
    trials = [t for t in study.get_trials(deepcopy=False) if records.CONFIG in t.user_attrs]
    ranked = best_first(trials, study.direction)
    best = next((t for t in ranked if sweep.family.is_reference(t.user_attrs[records.CONFIG])),
                None)
    if best is not None:
        return Chosen(Config(best.user_attrs[records.CONFIG]), best.number, "best")
    baseline = next((t.number for t in trials
                     if t.user_attrs.get(records.ROLE) == records.ROLE_BASELINE), -1)
    return Chosen(sweep.baseline, baseline, "best")


def _test_study_name(study: optuna.Study) -> str:
    return study.study_name + records.TEST_SUFFIX


def _confirmed(study: optuna.Study, sweep: Sweep) -> tuple[Confirmation | None, Any]:
    """The confirmation of ``study`` read (None: none yet) and its per-placement record."""
    confirm = companion(study, records.CONFIRM_SUFFIX)
    if confirm is None:
        return None, None
    return (build_confirmation(confirm, sweep.splits, sweep.family),
            confirm.user_attrs.get(records.PER_PLACEMENT))


def run_test(study: optuna.Study, dataset: Dataset, *, rule: str = "best",
             number: int | None = None, repeats: int | None = None, device: str = "cpu",
             rescore: bool = False, stop: StopFlag | None = None,
             on_repeat: Callable[[int], None] | None = None,
             on_notice: Callable[[str], None] | None = None) -> TestResult | None:
    """Score the chosen dropout set-up (:func:`choose`), the tuned no-dropout
    (:func:`choose_tuned`) and the baseline on the test rows, seed by seed, or return the
    answer already stored (``rescore``: score again, as asked, recorded); ``on_notice``
    hears, in one line, that an answer shown was stored and how it differs from the one
    asked for. ``repeats``: the seeds (None: DEFAULT_REPEATS, or as many as the answer
    stored). None: stopped before one repeat was scored."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    stop = stop or StopFlag()
    notice = on_notice or (lambda text: None)
    sweep = stored_sweep(study)
    if dataset.X_test is None or dataset.y_test is None:
        raise DropsweepError(f"study '{study.study_name}' has no test rows: its sweep holds none "
                             "back (eval.test: none, and the data has no test split of its "
                             "own); nothing can be tested")
    mark = fingerprint(dataset.X_test, dataset.y_test)  # the same test set, or not
    confirmation, per_placement = _confirmed(study, sweep)
    wanted = choose(study, sweep, rule, number, confirmation)
    wanted_tuned = choose_tuned(study, sweep, per_placement)
    test = companion_test(study)
    done = None if test is None else read_test(test)
    if done is not None and not rescore:
        if test.user_attrs.get(records.TEST_FINGERPRINT) != mark:
            raise DropsweepError(
                f"the test rows of study '{study.study_name}' are not the ones it was "
                "tested on (their fingerprint differs); scoring a changed test set is a "
                "new look at it: --rescore does so, and is recorded")
        more = _second_look(done, wanted, wanted_tuned, repeats)
        roles = roles_of(done.chosen, done.tuned, done.baseline)
        if all(_has(test, done.rounds, r, roles) for r in range(done.repeats)):
            notice(f"the answer stored in '{done.study_name}' is shown, not scored again: "
                   f"{_looked(done.chosen, done.repeats)}"
                   + (more or "; --rescore scores the test rows again, recorded as a second "
                      "look at them"))
            return done  # the stored answer: looking again is not scoring again
        if more:  # stopped part-way: the rest of that look is no second one
            notice("the look at the test rows a stop cut short goes on as it began: "
                   f"{_looked(done.chosen, done.repeats)}{more}")
        chosen, tuned, repeats, round_ = done.chosen, done.tuned, done.repeats, done.rounds
    else:
        chosen, tuned, repeats = wanted, wanted_tuned, repeats or DEFAULT_REPEATS
        if chosen.rule == "trial" and sweep.family.is_reference(chosen.config):
            notice(f"trial #{chosen.number} has no dropout: it is scored as asked, and its "
                   "dropout gain is then one no-dropout set-up against another (the tuned "
                   f"no-dropout, trial #{tuned.number})")
        test = test or _create(study, chosen, sweep)
        round_ = _begin(test, chosen, tuned, repeats, mark, int(len(dataset.y_test)),
                        second=rescore and done is not None)
    _score(test, sweep, dataset, device, roles_of(chosen, tuned, sweep.baseline), repeats,
           round_, stop, on_repeat)
    result = read_test(test)
    if result is None and not stop():
        raise DropsweepError("no repeat finished: nothing was scored on the test rows")
    return result


def _score(test: optuna.Study, sweep: Sweep, dataset: Dataset, device: str,
           roles: list[tuple[str, Config, int]], repeats: int, round_: int, stop: StopFlag,
           on_repeat: Callable[[int], None] | None) -> None:
    """Train each configuration of ``roles`` once a repeat on every row the search saw,
    score it on the test rows and record it in round ``round_``; repeats recorded already
    are skipped, and a stop ends it between repeats (a second Ctrl-C at once)."""
    from dropsweep.train.devices import resolve_device

    from dropsweep.data.protocols import one_split  # torch: only when something trains

    # every row the search saw trains; the test rows score
    folds = one_split(dataset, resolve_device(device), score_on_test=True)
    space = space_of(sweep)
    # each configuration trains once a repeat, however many roles it plays (the tuned
    # no-dropout that is the baseline's configuration has no role of its own)
    configs = list({config_key(config.to_dict()): config for _, config, _ in roles}.values())
    final = _final(sweep)
    with at_once(stop):  # a second Ctrl-C: what was scored is kept, and shown
        for r in range(repeats):
            if stop():
                break
            if _has(test, round_, r, roles):
                continue
            seed = test_seed(sweep, r)
            results = train_apart(final.family, final.sections, configs, folds, seed,
                                  should_stop=stop)
            if any(res.interrupted for res in results):
                break
            by_key = {config_key(c.to_dict()): res for c, res in zip(configs, results)}
            for role, config, source in roles:
                _record(test, sweep, space, config, role, by_key[config_key(config.to_dict())],
                        r, seed, round_, source)
            if on_repeat is not None:
                on_repeat(r)


def _begin(test: optuna.Study, chosen: Chosen, tuned: Chosen, repeats: int, mark: str,
           rows: int, *, second: bool) -> int:
    """Record what a look scores and return its round: the latest (the first look, or one
    no repeat of which was scored), or a new one for a ``second`` look, with its time."""
    round_ = int(test.user_attrs.get(records.TEST_ROUNDS, 1))
    if second:
        round_ += 1
        times = list(test.user_attrs.get(records.TEST_RESCORED, []))
        test.set_user_attr(records.TEST_RESCORED,
                           times + [now_utc().isoformat(timespec="seconds")])
        test.set_user_attr(records.TEST_ROUNDS, round_)
    test.set_user_attr(records.TEST_FINGERPRINT, mark)
    test.set_user_attr(records.TEST_ROWS, rows)
    test.set_user_attr(records.TEST_CHOSEN, _chosen_record(chosen))
    test.set_user_attr(records.TEST_TUNED, _chosen_record(tuned))
    test.set_user_attr(records.TEST_REPEATS, repeats)
    return round_


def _chosen_record(chosen: Chosen) -> dict[str, Any]:
    return {"config": chosen.config.to_dict(), "source_trial": chosen.number,
            "rule": chosen.rule}


_HOW = {"best": "the best validation score", "1se": "--select 1se",
        "confirmed": "the best confirmed dropout set-up"}


def _looked(chosen: Chosen, repeats: int) -> str:
    how = _HOW.get(chosen.rule, f"--trial {chosen.number}")
    return f"trial #{chosen.number} ({how}), {repeats} seed{'s' if repeats != 1 else ''}"


def _second_look(done: TestResult, wanted: Chosen, tuned: Chosen, repeats: int | None
                 ) -> str | None:
    """How what was asked for differs from the look stored, and how to have it (a second
    look, recorded); None when the stored look answers it."""
    seeds = repeats is not None and repeats > done.repeats
    asked = []
    if wanted.number != done.chosen.number:
        how = _HOW.get(wanted.rule, f"--trial {wanted.number}")
        asked.append(f"trial #{wanted.number} ({how})")
    if seeds:
        asked.append("more seeds")
    if done.tuned is None or tuned.config != done.tuned.config:
        asked.append(f"the tuned no-dropout (trial #{tuned.number})")
    if not asked:
        return None
    return ((f", not {repeats}" if seeds else "")
            + ("; it predates the comparison with the tuned no-dropout" if done.tuned is None
               else "")
            + f"; {' and '.join(asked)} on the test rows would be a second look at them: "
            "--rescore scores " + ("it" if len(asked) == 1 and not seeds else "them")
            + ", and is recorded")


def _final(sweep: Sweep) -> Sweep:
    """The sweep's training, evaluated once at the end only: nothing looks at the test rows
    during training."""
    return replace(sweep, train=replace(sweep.train, eval_every=sweep.train.epochs))


def _create(study: optuna.Study, chosen: Chosen, sweep: Sweep) -> optuna.Study:
    name = _test_study_name(study)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            test = optuna.create_study(storage=optuna_private.study_storage(study),
                                       study_name=name, direction="maximize")
        test.set_user_attr(records.TEST_OF, study.study_name)
        test.set_user_attr(records.STUDY_SWEEP, sweep.to_dict())
        test.set_user_attr(records.STUDY_SCHEMA, records.SCHEMA_VERSION)
        test.set_user_attr(records.TEST_ROUNDS, 1)
        test.set_user_attr(records.TEST_INCLUDES_VALIDATION, True)
    except Exception as exc:  # a read-only or failing storage: one line
        raise StorageError(f"cannot write the test study '{name}': "
                           f"{describe_failure(exc)}") from None
    return test


def _has(test: optuna.Study, round_: int, repeat: int,
         roles: list[tuple[str, Config, int]]) -> bool:
    """Whether every role of ``roles`` has a result for ``repeat`` of ``round_``."""
    have = {t.user_attrs.get(records.ROLE) for t in test.get_trials(deepcopy=False)
            if t.user_attrs.get(records.TEST_ROUND) == round_
            and t.user_attrs.get(records.REPEAT) == repeat}
    return {role for role, _, _ in roles} <= have


def _record(test: optuna.Study, sweep: Sweep, space, config: Config, role: str, res,
            repeat: int, seed: int, round_: int, source: int) -> None:
    dims = sweep.dimensions
    ok = res.failure is None and res.fold_accuracies
    test.add_trial(create_trial(
        state=TrialState.COMPLETE if ok else TrialState.FAIL,
        value=float(res.fold_accuracies[0]) if ok else None,
        params=config_values(config, dims, space),
        distributions=fixed_distributions(config, dims, space),
        user_attrs={records.CONFIG: config.to_dict(), records.ROLE: role,
                    records.REPEAT: repeat, records.SEED: seed, records.TEST_ROUND: round_,
                    records.SOURCE_TRIAL: -1 if role == records.ROLE_BASELINE else source,
                    **({} if ok else {records.FAIL_REASON: res.failure or "no result"})}))


