"""``dropsweep test``: the chosen configuration and the baseline, once, on the test rows.

A search chose its winner on validation (or fold) scores, and a confirmation re-checked it on
new splits of the same rows; neither ever saw the test rows that ``eval.test`` held back.
This scores the winner and the baseline on them: each trained on every row the search saw
(its validation rows included: they have done their job of choosing, and a final model
trained on more rows is the one a user would keep; both get the same), ``repeats`` times
with seeds the search never used, then tested. Training randomness is what differs from run
to run on the same test images, so the two are compared seed by seed (a paired t-test over
seeds; per-image tests such as McNemar's would treat one training run as the
configuration).

The results are a companion study ``NAME:test`` holding a fingerprint of the test rows.
Looking at a test set again and again is how it stops being one: a second ``dropsweep test``
shows the stored answer, and says so; anything more — more seeds, another trial, a changed
test set — is a second look, made only with ``rescore`` and recorded (each round's time).
A look a stop cut short goes on as it began: its configuration, its seeds.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Container

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState, create_trial

from dropsweep import records
from dropsweep.liveness import now_utc
from dropsweep.config import Sweep
from dropsweep.data import Dataset, fingerprint
from dropsweep.errors import DropsweepError, StorageError
from dropsweep.families import train_apart
from dropsweep.rows import best_first, trial_row
from dropsweep.select import select
from dropsweep.space import Config, config_values, fixed_distributions, space_of
from dropsweep.stats import Comparison, Interval, compare, interval
from dropsweep.storage import describe_failure
from dropsweep.study import stored_sweep

if TYPE_CHECKING:  # the runner imports torch: the report reads a test without it
    from dropsweep.runner import StopFlag

DEFAULT_REPEATS = 3


def test_seed(sweep: Sweep, repeat: int) -> int:
    """The training seed of repeat r: from the search's seed, never one a trial used."""
    seed = np.random.SeedSequence([sweep.search.seed, 0x7E57, repeat]).generate_state(1)[0]
    return int(seed & 0x7FFFFFFF)


@dataclass(frozen=True)
class Chosen:
    """What is tested: the configuration, the search trial it came from, and why."""

    config: Config
    number: int
    rule: str  # "best", "1se", or "trial" (--trial N)


def choose(study: optuna.Study, sweep: Sweep, rule: str = "best", number: int | None = None
           ) -> Chosen:
    """The configuration to test: trial ``number``, else what ``rule`` recommends."""
    trials = study.get_trials(deepcopy=False)
    if number is not None:
        trial = next((t for t in trials if t.number == number), None)
        if trial is None or trial.state != TrialState.COMPLETE or \
                records.CONFIG not in trial.user_attrs:
            raise DropsweepError(f"--trial {number}: study '{study.study_name}' has no complete "
                                 "trial of that number")
        return Chosen(Config(trial.user_attrs[records.CONFIG]), number, "trial")
    ranked = best_first([trial_row(t) for t in trials], study.direction)
    selection = select(ranked, rule, sweep.dimensions,
                       study.user_attrs.get(records.VALIDATION_ROWS))
    if selection is None:
        raise DropsweepError(f"study '{study.study_name}' has no complete trial to test yet")
    by_number = {t.number: t for t in trials}
    return Chosen(Config(by_number[selection.chosen.number].user_attrs[records.CONFIG]),
                  selection.chosen.number, rule)


@dataclass(frozen=True)
class TestResult:
    """A test study, read: each seed's test accuracy of the chosen and the baseline."""

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


def _test_study_name(study: optuna.Study) -> str:
    return study.study_name + records.TEST_SUFFIX


def _open(study: optuna.Study, names: Container[str] | None = None) -> optuna.Study | None:
    """The companion test study, if there is one (``names``: the storage's study names, when
    the caller has read them already)."""
    name = _test_study_name(study)
    storage = study._storage  # noqa: SLF001 - the companion lives in the same storage
    if names is None:
        names = {s.study_name for s in storage.get_all_studies()}
    if name not in names:
        return None
    return optuna.load_study(study_name=name, storage=storage)


def stored_result(study: optuna.Study, names: Container[str] | None = None
                  ) -> TestResult | None:
    """What ``dropsweep test`` recorded for ``study`` (its latest round), or None."""
    test = _open(study, names)
    return None if test is None else _read(test)


def run_test(study: optuna.Study, dataset: Dataset, *, rule: str = "best",
             number: int | None = None, repeats: int | None = None, device: str = "cpu",
             rescore: bool = False, stop: StopFlag | None = None,
             on_repeat: Callable[[int], None] | None = None,
             on_notice: Callable[[str], None] | None = None) -> TestResult | None:
    """Score the chosen configuration and the baseline on the test rows, or return the
    answer already stored (``rescore``: score again, as asked, recorded); ``on_notice``
    hears, in one line, that an answer shown was stored and how it differs from the one
    asked for. ``repeats``: the seeds (None: DEFAULT_REPEATS, or as many as the answer
    stored). None: stopped before one repeat was scored."""
    from dropsweep.runner import StopFlag, at_once  # torch: only when something may train

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    stop = stop or StopFlag()
    notice = on_notice or (lambda text: None)
    sweep = stored_sweep(study)
    if dataset.X_test is None or dataset.y_test is None:
        raise DropsweepError(f"study '{study.study_name}' has no test rows: its sweep holds none "
                             "back (eval.test: none, and the data has no test split of its "
                             "own); nothing can be tested")
    mark = fingerprint(dataset.X_test, dataset.y_test)  # the same test set, or not
    wanted = choose(study, sweep, rule, number)
    test = _open(study)
    done = None if test is None else _read(test)
    if done is not None and not rescore:
        if test.user_attrs.get(records.TEST_FINGERPRINT) != mark:
            raise DropsweepError(
                f"the test rows of study '{study.study_name}' are not the ones it was "
                "tested on (their fingerprint differs); scoring a changed test set is a "
                "new look at it: --rescore does so, and is recorded")
        more = _second_look(done, wanted, repeats)
        if all(_has(test, done.rounds, r) for r in range(done.repeats)):
            notice(f"the answer stored in '{done.study_name}' is shown, not scored again: "
                   f"{_looked(done.chosen, done.repeats)}"
                   + (more or "; --rescore scores the test rows again, recorded as a second "
                      "look at them"))
            return done  # the stored answer: looking again is not scoring again
        if more:  # stopped part-way: the rest of that look is no second one
            notice("the look at the test rows a stop cut short goes on as it began: "
                   f"{_looked(done.chosen, done.repeats)}{more}")
        chosen, repeats, round_ = done.chosen, done.repeats, done.rounds
    else:
        chosen, repeats = wanted, repeats or DEFAULT_REPEATS
        test = test or _create(study, chosen, sweep)
        round_ = _begin(test, chosen, repeats, mark, int(len(dataset.y_test)),
                        second=rescore and done is not None)
    from dropsweep.devices import resolve_device

    from dropsweep.protocols import one_split  # torch: only when something trains

    # every row the search saw trains; the test rows score
    folds = one_split(dataset, resolve_device(device), score_on_test=True)
    space = space_of(sweep)
    with at_once(stop):  # a second Ctrl-C: what was scored is kept, and shown
        for r in range(repeats):
            if stop():
                break
            if _has(test, round_, r):
                continue
            seed = test_seed(sweep, r)
            results = train_apart(_final(sweep), [chosen.config, sweep.baseline], folds, seed,
                                  should_stop=stop)
            if any(res.interrupted for res in results):
                break
            for role, config, res in ((records.ROLE_CANDIDATE, chosen.config, results[0]),
                                      (records.ROLE_BASELINE, sweep.baseline, results[1])):
                _record(test, sweep, space, config, role, res, r, seed, round_, chosen.number)
            if on_repeat is not None:
                on_repeat(r)
    result = _read(test)
    if result is None and not stop():
        raise DropsweepError("no repeat finished: nothing was scored on the test rows")
    return result


def _begin(test: optuna.Study, chosen: Chosen, repeats: int, mark: str, rows: int, *,
           second: bool) -> int:
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
    test.set_user_attr(records.TEST_CHOSEN, {"config": chosen.config.to_dict(),
                                             "source_trial": chosen.number, "rule": chosen.rule})
    test.set_user_attr(records.TEST_REPEATS, repeats)
    return round_


_HOW = {"best": "the best validation score", "1se": "--select 1se"}


def _looked(chosen: Chosen, repeats: int) -> str:
    how = _HOW.get(chosen.rule, f"--trial {chosen.number}")
    return f"trial #{chosen.number} ({how}), {repeats} seed{'s' if repeats != 1 else ''}"


def _second_look(done: TestResult, wanted: Chosen, repeats: int | None) -> str | None:
    """How what was asked for differs from the look stored, and how to have it (a second
    look, recorded); None when the stored look answers it."""
    if wanted.number != done.chosen.number:
        how = _HOW.get(wanted.rule, f"--trial {wanted.number}")
        return (f"; trial #{wanted.number} ({how}) on the test rows would be a second look "
                "at them: --rescore scores it, and is recorded")
    if repeats is not None and repeats > done.repeats:
        return (f", not {repeats}: more seeds are a second look at the test rows: "
                "--rescore scores them, and is recorded")
    return None


def _final(sweep: Sweep) -> Sweep:
    """The sweep's training, evaluated once at the end only: nothing looks at the test rows
    during training."""
    return replace(sweep, train=replace(sweep.train, eval_every=sweep.train.epochs))


def _create(study: optuna.Study, chosen: Chosen, sweep: Sweep) -> optuna.Study:
    name = _test_study_name(study)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            test = optuna.create_study(storage=study._storage,  # noqa: SLF001
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


def _has(test: optuna.Study, round_: int, repeat: int) -> bool:
    roles = {t.user_attrs.get(records.ROLE) for t in test.get_trials(deepcopy=False)
             if t.user_attrs.get(records.TEST_ROUND) == round_
             and t.user_attrs.get(records.REPEAT) == repeat}
    return {records.ROLE_CANDIDATE, records.ROLE_BASELINE} <= roles


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
                    records.SOURCE_TRIAL: source if role == records.ROLE_CANDIDATE else -1,
                    **({} if ok else {records.FAIL_REASON: res.failure or "no result"})}))


def _read(test: optuna.Study) -> TestResult | None:
    """The latest round's scores, paired by repeat; None until one repeat has both."""
    attrs = test.user_attrs
    round_ = int(attrs.get(records.TEST_ROUNDS, 1))
    by: dict[tuple[str, int], FrozenTrial] = {}
    for t in test.get_trials(deepcopy=False):
        if t.user_attrs.get(records.TEST_ROUND) == round_ and t.state == TrialState.COMPLETE:
            by[(t.user_attrs[records.ROLE], int(t.user_attrs[records.REPEAT]))] = t
    repeats = sorted(r for role, r in by if role == records.ROLE_CANDIDATE
                     and (records.ROLE_BASELINE, r) in by)
    chosen_attr = attrs.get(records.TEST_CHOSEN)
    if not repeats or not isinstance(chosen_attr, dict):
        return None
    a = [float(by[(records.ROLE_CANDIDATE, r)].value) for r in repeats]
    b = [float(by[(records.ROLE_BASELINE, r)].value) for r in repeats]
    base = by[(records.ROLE_BASELINE, repeats[0])].user_attrs[records.CONFIG]
    return TestResult(
        study_name=test.study_name,
        chosen=Chosen(Config(chosen_attr["config"]), int(chosen_attr["source_trial"]),
                      str(chosen_attr["rule"])),
        baseline=Config(base), n_test=int(attrs.get(records.TEST_ROWS, 0)),
        seeds=[int(by[(records.ROLE_CANDIDATE, r)].user_attrs[records.SEED]) for r in repeats],
        chosen_scores=a, baseline_scores=b,
        accuracy=interval(a, ratio=0.0), baseline_accuracy=interval(b, ratio=0.0),
        vs_baseline=compare(a, b, ratio=0.0), rounds=round_,
        fingerprint=str(attrs.get(records.TEST_FINGERPRINT, "")),
        repeats=max(int(attrs.get(records.TEST_REPEATS, 0)), len(repeats)))
