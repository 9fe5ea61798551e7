"""Opening a study: created with its sampler and pruner, or resumed after checking that it
holds the same experiment, read back through today's code.

A study records its sweep (:data:`records.STUDY_SWEEP`) and the schema it was written in
(:data:`records.STUDY_SCHEMA`). A sweep stored by an older dropsweep lacks keys added
since (a model ``family``, ...); rebuilt through today's defaults it is the experiment
today's code would run, so comparisons on resume are between *normalised* sweeps and an old
study resumes and reports exactly as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

import dropsweep
from dropsweep import records
from dropsweep.study.balance import BY, BalancedSampler, PlacementPruner
from dropsweep.study.liveness import had_a_turn
from dropsweep.sweep.config import Sweep, build_sweep
from dropsweep.errors import StorageError, StudyMismatchError, SweepError
from dropsweep.storage.faults import describe_failure
from dropsweep.storage.open import heartbeat_seconds, open_storage, study_names
from dropsweep.storage.urls import mask_url
from dropsweep.storage import optuna_private, trialio
from dropsweep.storage.trialio import SnapshotStorage
from dropsweep.sweep.space import space_of, values_of
from dropsweep.sweep.file import RawSweep

# The sections that define the experiment: a change in any refuses a resume. ``name`` and
# ``search`` may change (``--trials``, a new seed for the next sampler).
EXPERIMENT_SECTIONS = ("data", "model", "train", "cv", "eval", "baseline", "space")


def stored_sweep(study: Any) -> Sweep:
    """The sweep a dropsweep study (an ``optuna.Study``) was made with, rebuilt through
    today's defaults."""
    name, user_attrs = study.study_name, study.user_attrs
    data = user_attrs.get(records.STUDY_SWEEP)
    if data is None:
        raise StorageError(f"study '{name}' was not made by dropsweep")
    check_schema(name, user_attrs)
    return build_sweep(RawSweep(data=data, file=shown_file(
        user_attrs.get(records.STUDY_SWEEP_FILE)) or f"study {name}"))


def check_searched(study: Any) -> None:
    """Refuse a companion study (``NAME:confirm``, ``NAME:test``, known by what it records,
    not by its name) as the study to search, confirm, test or export: it holds results about a
    search, not one, and testing it would be a look at the test rows under another name."""
    for key, what in ((records.CONFIRM_OF, "the confirmation of"),
                      (records.TEST_OF, "the test of")):
        searched = study.user_attrs.get(key)
        if searched is not None:
            raise StorageError(f"study '{study.study_name}' is {what} study '{searched}', not "
                               f"a search: use --study {shlex.quote(str(searched))}")


def check_schema(name: str, user_attrs: Mapping[str, Any]) -> int:
    """The study's schema version (1 for a study made before versions were recorded); a
    study written by a newer dropsweep is refused rather than misread."""
    version = user_attrs.get(records.STUDY_SCHEMA, 1)
    if not isinstance(version, int) or version > records.SCHEMA_VERSION:
        raise StorageError(f"study '{name}' was written by a newer dropsweep (schema "
                           f"{version}, this one reads up to {records.SCHEMA_VERSION}); "
                           "upgrade dropsweep to use it")
    return version


def normalised(data: Mapping[str, Any]) -> dict[str, Any]:
    """A stored sweep as today's code would store it; as stored if it no longer validates
    (the comparison then names what differs)."""
    if not isinstance(data, Mapping):
        return {}
    try:
        return build_sweep(RawSweep(data=dict(data), file="stored sweep")).to_dict()
    except SweepError:
        return dict(data)


def sweep_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Dotted keys of the experiment sections that differ, with old -> new values; the old
    sweep is normalised first, so keys added since it was stored do not count as changes."""
    out: list[str] = []
    old = normalised(old)

    def walk(a: Any, b: Any, key: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in list(dict.fromkeys([*a, *b])):
                walk(a.get(k), b.get(k), f"{key}.{k}")
        elif a != b:
            out.append(f"{key} {a!r} -> {b!r}")

    for section in EXPERIMENT_SECTIONS:
        walk(old.get(section), new.get(section), section)
    return out


def sweep_fingerprint(data: Mapping[str, Any]) -> str:
    """SHA-256 of a stored sweep's experiment sections, normalised: what a checkpoint of the
    study names, so that a file made under another experiment is never taken for its own."""
    sweep = normalised(data)
    sections = {section: sweep.get(section) for section in EXPERIMENT_SECTIONS}
    return hashlib.sha256(json.dumps(sections, sort_keys=True, default=str).encode()
                          ).hexdigest()


# An older study gets its id from the first worker that needs one; two that set it at once
# both read back what the storage kept after this long, so they agree unless their writes
# are further apart than this.
UID_SETTLE_SECONDS = 0.5


def study_uid(study: optuna.Study) -> str:
    """The study's own random id (:data:`records.STUDY_UID`): what binds its checkpoint
    files to it, as its name cannot (two storages may each hold a study of one name). A
    study made before ids existed is given one now, read back after a moment."""
    uid = study.user_attrs.get(records.STUDY_UID)
    if isinstance(uid, str) and uid:
        return uid
    study.set_user_attr(records.STUDY_UID, uuid.uuid4().hex)
    time.sleep(UID_SETTLE_SECONDS)
    return str(study.user_attrs[records.STUDY_UID])


# ----------------------------------------------------------------------------- samplers


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """Each sampler seeded; TPE is multivariate and grouped, which suits a conditional space."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                                 constant_liar=True)
            optuna_private.group_once_per_trial(sampler)  # its groups: GroupsSoFar
            return sampler
        if name == "cmaes":
            return optuna.samplers.CmaEsSampler(
                seed=seed, warn_independent_sampling=False,
                independent_sampler=optuna.samplers.TPESampler(seed=seed))
        if name == "qmc":
            return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    # "random", and "grid", whose points are planned in advance (see space.grid_points).
    return optuna.samplers.RandomSampler(seed=seed)


# Samplers that keep a sequence of their own across trials (CMA-ES's generations, QMC's
# low-discrepancy points): reseeding them for every trial would break it, so they are not.
OWN_SEQUENCE = ("cmaes", "qmc")


def sampler_for(sweep: Sweep, seed: int) -> optuna.samplers.BaseSampler:
    """The sweep's sampler, made with ``seed``; balanced (``search.balance: placement``), one
    per placement, each made with ``seed`` and the placement's index
    (:mod:`dropsweep.study.balance`). Random and TPE are then reseeded for every trial from the
    sweep's seed and the trial's ordinal (:class:`PerTrialSeed`), so that a study stopped or
    killed and resumed proposes what it would have proposed, and workers asking at once
    propose apart; CMA-ES and QMC keep their own sequences (:data:`OWN_SEQUENCE`)."""
    name = sweep.search.sampler
    per_trial = None if name in OWN_SEQUENCE else sweep.search.seed
    if not sweep.balanced:
        sampler = make_sampler(name, seed)
        return sampler if per_trial is None else PerTrialSeed(sampler, per_trial)
    group = sweep.family.group

    def reseed(study: optuna.Study, trial: FrozenTrial, sampler: BaseSampler) -> None:
        if per_trial is not None:
            reseed_for_trial(study, trial, sampler, per_trial)

    return BalancedSampler(group, values_of(space_of(sweep).get(group)),
                           lambda i: make_sampler(name, trial_seed(seed, i)), reseed)


def trial_ordinal(study: optuna.Study, trial: FrozenTrial) -> int:
    """:func:`ordinal` of ``trial``, read afresh once it exists: two workers asking at once
    get two ordinals (the later-numbered sees the other running).

    Afresh means the trials' states as stored now (one light read): a running or waiting
    trial has had its turn whatever else it holds, and a finished one never changes, so the
    copies at hand serve unless a trial finished since they were read — only then are the
    trials read again whole (a batch's first ask; its others were 11 ms each, whole)."""
    states = trialio.trial_states(study)
    if states is not None:
        known = {t.number: t for t in study.get_trials(deepcopy=False)}
        below = {n: state for n, state in states.items() if n < trial.number}
        if all(state in (TrialState.RUNNING, TrialState.WAITING)
               or (n in known and known[n].state == state) for n, state in below.items()):
            return sum(state in (TrialState.RUNNING, TrialState.WAITING) or had_a_turn(known[n])
                       for n, state in below.items())
    with trialio.released(study):
        return ordinal(study.get_trials(deepcopy=False), trial.number)


def ordinal(trials: Sequence[FrozenTrial], number: int) -> int:
    """How many of ``trials`` numbered before ``number`` fill a place (finished for good, or
    running), or did (:func:`dropsweep.study.liveness.had_a_turn`): trial ``number``'s place in a
    run never stopped, whose seeds it takes (its sampler's, its batch's) — a trial lost to a
    stop or a dead worker does not count, the trial that goes on with it does, in its
    place."""
    return sum(t.number < number and had_a_turn(t) for t in trials)


def sampler_seed(search_seed: int, ordinal: int) -> int:
    """The sampler's seed for the trial of this ordinal (a stream apart from the batches')."""
    return int(np.random.SeedSequence([search_seed, ordinal, 1]).generate_state(1)[0]
               & 0x7FFFFFFF)


def reseed_for_trial(study: optuna.Study, trial: FrozenTrial, sampler: BaseSampler,
                     search_seed: int) -> None:
    """``sampler`` reseeded for ``trial`` from the sweep's seed and the trial's ordinal; a
    trial queued with all its parameters (planned, or a lost trial's again), or made with
    them (one that goes on with a lost trial), samples none, and is left alone."""
    if "fixed_params" in trial.system_attrs or trial.params:
        return
    # its random streams seeded again, what it learnt kept: Optuna has no public call for it
    optuna_private.reseed_sampler(sampler, sampler_seed(search_seed, trial_ordinal(study, trial)))


class PerTrialSeed(BaseSampler):
    """``inner``, reseeded for every trial it samples from the sweep's seed and the trial's
    ordinal (:func:`reseed_for_trial`); the rest is ``inner``'s."""

    def __init__(self, inner: BaseSampler, search_seed: int) -> None:
        self.inner, self.search_seed = inner, search_seed

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        reseed_for_trial(study, trial, self.inner, self.search_seed)
        self.inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial
                                    ) -> dict[str, BaseDistribution]:
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


def pruner_for(sweep: Sweep) -> optuna.pruners.BasePruner:
    """The sweep's pruner; balanced, it compares a trial with its own placement's trials."""
    pruner = make_pruner(sweep.search.pruner, sweep.train.epochs, sweep.train.eval_every)
    if not sweep.balanced or isinstance(pruner, optuna.pruners.NopPruner):
        return pruner
    return PlacementPruner(pruner, sweep.family.group)


PRUNE_STARTUP_TRIALS = 10  # complete trials before the median means anything


def pruning_warmup(train_epochs: int, eval_every: int) -> int:
    """No pruning before a quarter of the epochs: early accuracy is mostly noise."""
    return max(eval_every, train_epochs // 4)


def make_pruner(name: str, train_epochs: int, eval_every: int) -> optuna.pruners.BasePruner:
    if name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=PRUNE_STARTUP_TRIALS,
                                       n_warmup_steps=pruning_warmup(train_epochs, eval_every))


# ----------------------------------------------------------------------------- counting


def trial_seed(search_seed: int, number: int) -> int:
    """A trial's seed depends only on the sweep's seed and the trial's number."""
    return int(np.random.SeedSequence([search_seed, number]).generate_state(1)[0] & 0x7FFFFFFF)


# ----------------------------------------------------------------------------- open


def prepare_study(sweep: Sweep, storage_url: str, study_name: str,
                  rows: Mapping[str, Any] | None = None,
                  notice: Callable[[str], None] | None = None) -> optuna.Study:
    """Create the study, or load it and refuse it (one line) if it holds another experiment,
    was searched on other rows (``rows``, :func:`dropsweep.data.dataset.rows_record`: recorded when
    the study is made, checked by :func:`check_rows` when it resumes; None checks nothing) or
    was not made by dropsweep; any storage failure on the way is one line too. ``notice``
    hears what the user should read (rows recorded late on an older study)."""
    # Optuna would put its own cache in front of the RDB storage; this one is that cache,
    # whose reads the search can hold (see trialio.py).
    storage = SnapshotStorage(open_storage(storage_url, heartbeat=heartbeat_seconds()))
    new_sweep = sweep.to_dict()
    try:
        if study_name not in study_names(storage):
            try:
                return _create_study(sweep, storage, study_name, rows)
            except optuna.exceptions.DuplicatedStudyError:
                pass  # another worker created it a moment ago: join it
        # Made with a seed of how far the study has come: the same seed again would propose
        # the points it proposed at the start (CMA-ES and QMC; random and TPE are reseeded
        # for each trial by its ordinal anyway, see sampler_for).
        resumed_seed = trial_seed(sweep.search.seed, len(storage.get_all_trials(
            storage.get_study_id_from_name(study_name), deepcopy=False)))
        study = optuna.load_study(study_name=study_name, storage=storage,
                                  sampler=sampler_for(sweep, resumed_seed),
                                  pruner=pruner_for(sweep))
        old = study.user_attrs.get(records.STUDY_SWEEP)
        for _ in range(50):  # a study another worker is creating gets its attributes next
            if old is not None or study.get_trials(deepcopy=False):
                break
            time.sleep(0.1)
            old = study.user_attrs.get(records.STUDY_SWEEP)
        if old is None:
            raise StorageError(f"study '{study_name}' in {mask_url(storage_url)} was not made "
                               "by dropsweep; choose another --study name")
        check_schema(study_name, study.user_attrs)
        check_searched(study)  # a search would add its trials to a confirmation's or test's
        changed = sweep_differences(old, new_sweep)
        if changed:
            raise StudyMismatchError(
                f"study '{study_name}' was made with a different experiment "
                f"({'; '.join(changed)}); resume with the original sweep or choose "
                "another --study name")
        note = None if rows is None else check_rows(study, rows)
        if note and notice:
            notice(note)
        _record_balance(study, sweep)
        return study
    except StorageError:  # StudyMismatchError included
        raise
    except Exception as exc:  # a storage that fails mid-way (locked, read-only, dropped)
        reason = describe_failure(exc)
        raise StorageError(f"storage {mask_url(storage_url)}: {reason}") from None


def check_rows(study: optuna.Study, rows: Mapping[str, Any], record: bool = True
               ) -> str | None:
    """Refuse rows other than those the study was searched on, in one line naming the file:
    a study whose data changed under it would mix two data sets. A study an older dropsweep
    made recorded no rows: they are recorded now (``record``; from then on other rows are
    refused) and the note returned says so; without ``record`` (a read-only command) the
    note says they are not checked. None when the rows are the study's."""
    name, stored = study.study_name, study.user_attrs.get(records.DATA_ROWS)
    if not isinstance(stored, Mapping) or "sha256" not in stored:
        if not record:
            return (f"study '{name}' was made by an older dropsweep, which recorded no "
                    f"fingerprint of its rows: {rows['file']}'s rows are not checked")
        study.set_user_attr(records.DATA_ROWS, dict(rows))
        return (f"study '{name}' was made by an older dropsweep, which recorded no fingerprint "
                f"of its rows; recorded now from {rows['file']}: other rows are refused "
                "from here on")
    if stored["sha256"] == rows["sha256"]:
        return None
    raise StudyMismatchError(
        f"its rows differ from those study '{name}' was searched on ({_rows_change(stored, rows)})"
        "; restore the file, or search these rows under another --study name",
        file=rows["file"])


def _rows_change(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """What differs between the rows a study recorded and these, in words."""
    if (old.get("rows"), old.get("features")) != (new["rows"], new["features"]):
        change = (f"{old.get('rows')} rows of {old.get('features')} features then, "
                  f"{new['rows']} of {new['features']} now")
    elif old.get("labels") != new["labels"]:
        change = f"other labels on its {new['rows']} rows"
    else:
        change = f"the same labels, other values in its {new['rows']} rows"
    if old.get("file") not in (None, new["file"]):
        change += f"; searched on {old['file']}"
    return change


def _record_balance(study: optuna.Study, sweep: Sweep) -> None:
    """Say how this run shares out its trials, from which trial on, where that changes (the
    search section may change between runs; the report says what the study was)."""
    recorded = study.user_attrs.get(records.BALANCE)
    old = recorded.get("by") if isinstance(recorded, dict) else "none"
    now = BY if sweep.balanced else "none"
    if old != now:
        since = len(study.get_trials(deepcopy=False))
        study.set_user_attr(records.BALANCE, {"by": now, "since": since})


def _create_study(sweep: Sweep, storage: optuna.storages.BaseStorage, study_name: str,
                  rows: Mapping[str, Any] | None) -> optuna.Study:
    study = optuna.create_study(
        storage=storage, study_name=study_name, direction="maximize",
        sampler=sampler_for(sweep, sweep.search.seed), pruner=pruner_for(sweep),
    )
    # before the sweep, which tells a joining worker the study is made: it finds these too
    study.set_user_attr(records.STUDY_UID, uuid.uuid4().hex)
    if rows is not None:
        study.set_user_attr(records.DATA_ROWS, dict(rows))
    study.set_user_attr(records.STUDY_SWEEP, sweep.to_dict())
    study.set_user_attr(records.STUDY_SCHEMA, records.SCHEMA_VERSION)
    study.set_user_attr(records.STUDY_VERSION, dropsweep.__version__)
    study.set_user_attr(records.STUDY_TORCH_VERSION, _torch_version())
    study.set_user_attr(records.STUDY_SWEEP_FILE, resolved_file(sweep.file))
    _record_balance(study, sweep)
    return study


def resolved_file(file: str) -> str:
    """The sweep file as an absolute path: the paths written in it (``data.csv``, a custom
    module's file) are relative to it, so commands that read the stored sweep back
    (``confirm``, ``test``, ``export``) find them from any directory. The stored sweep keeps
    them as written: a worker on another machine, its copy elsewhere, runs the same
    experiment (a study recorded before kept the file as typed, relative to its search's
    directory, and is read back from there as before)."""
    return str(Path(file).resolve()) if file else file


def shown_file(recorded: str | None) -> str | None:
    """A recorded sweep file as messages name it from here: relative to this directory when
    it lies in it (as typed, when the search ran here), else absolute. Either way the
    paths in the sweep resolve to the same files; a path recorded relative (before issue 24)
    is kept as it is."""
    if not recorded or not os.path.isabs(recorded):
        return recorded
    try:
        here = os.path.relpath(recorded, Path.cwd().resolve())
    except (OSError, ValueError):  # no current directory; another drive
        return recorded
    return recorded if here.startswith(os.pardir) else here


def _torch_version() -> str:
    import torch

    return torch.__version__
