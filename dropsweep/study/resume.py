"""Going on with lost batches: a batch whose worker was killed or stopped goes on from its
last checkpoint (claimed by one worker, read, and checked against the study before any trial
is made for it), else from its start (a replay), with new trials numbered in the order of the
trials it goes on with, so that the study ends holding what a run never stopped would hold.

:class:`Resuming` is that part of a search's worker (``_Search`` in
:mod:`dropsweep.study.runner` mixes it in): the one part that reads checkpoint files and
rebuilds trials from them, apart from the ask -> train -> record loop. What it hands the loop
for each batch is a :class:`Resumed`.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from dropsweep import records
from dropsweep.data.protocols import Folds
from dropsweep.storage import GRACE_BEATS, optuna_private, trialio
from dropsweep.study import liveness
from dropsweep.study.liveness import counts_toward_target
from dropsweep.study.summary import SearchEvents
from dropsweep.sweep.config import Sweep
from dropsweep.sweep.space import Config
from dropsweep.train.hooks import TrainHooks
from dropsweep.train import checkpoints


@dataclass(frozen=True)
class _Lost:
    """A lost batch a worker could go on with: from its checkpoint file (``item``), else
    from its start (``replay``); ``roots``, in order: the trials first asked in its places
    (whose order its new trials keep)."""

    roots: tuple[int, ...]
    item: checkpoints.Found | None = None
    replay: liveness.Replay | None = None


@dataclass
class _Plan:
    """How a lost batch goes on: its header and state (a checkpoint's ``payload``, or a
    replay's header), its claimed file (None: from its start), whether it trains from the
    start (``fresh``) and whether its file is retired by the batch's own."""

    payload: dict[str, Any]
    claim: checkpoints.Found | None
    fresh: bool
    retire: bool


@dataclass
class Resumed:
    """A batch going on: claimed from a checkpoint (its file, renamed to the claim, and
    state), or lost with none and gone on with from its start (no claim, no state)."""

    claim: checkpoints.Found | None
    state: dict[str, Any]
    seed: int
    fresh: bool = False  # its state cannot be gone on from: the batch trains from the start
    retire: bool = True  # the file is superseded by the batch's own (not one set aside)
    # its places recorded for good before the stop (by index): they train along, and one
    # that was pruned stops where it was pruned, so the batch computes what it computed
    recorded: dict[int, FrozenTrial] = field(default_factory=dict)


class Resuming:
    """The lost batches a worker goes on with (:meth:`_resume`) and the checkpoint files it
    could go on from (:meth:`_checkpointed`), as part of the search that mixes it in; what of
    the search's state it reads is declared here."""

    study: optuna.Study
    sweep: Sweep
    folds: Folds
    events: SearchEvents
    held: liveness.Heartbeat  # the trials this worker holds, beating
    seconds: int  # the heartbeat's period
    owner: checkpoints.Owner | None  # whose checkpoint files this worker may go on from
    saves: Path | None  # the study's checkpoint files (None: no checkpoints)
    passed: set[str]  # checkpoint files found to be another study's: never looked at again

    def _checkpointed(self) -> frozenset[int]:
        """The batches with a checkpoint file to go on from, written or claimed (not one
        found to be another study's): their trials go on from it, and are not run again
        from the start."""
        if self.saves is None:
            return frozenset()
        return frozenset(item.batch for item in checkpoints.found(self.saves)
                         if item.path.name not in self.passed)

    def _resume(self, trials: list[FrozenTrial]
                ) -> list[tuple[list[tuple[optuna.Trial | None, Config]], Resumed]]:
        """The batches whose trials were killed or stopped that this worker goes on with
        now, each with new trials (None in the places of trials already recorded for good:
        pruned or diverged before the stop): from its last checkpoint, claimed; else, with
        none, from its start (:func:`liveness.replays`). The oldest such batch, with those
        asked together with it (one ask's batches, one per optimizer): their new trials
        are numbered in the order of the trials they go on with, as a run never stopped
        numbered them. Empty when there is none. A file whose batch was recorded after all
        is deleted, once it is known to be this study's."""
        by_number = {t.number: t for t in trials}
        for _ in range(3):  # a file refused or set aside: its batch goes on from its start
            refused = len(self.passed)
            lost = sorted(self._lost(trials, by_number), key=lambda lost: lost.roots[0])
            if not lost:
                return []
            chosen, last = [lost[0]], lost[0].roots[-1]
            for other in lost[1:]:  # asked with it: their trials interleave
                if other.roots[0] < last:
                    chosen.append(other)
                    last = max(last, other.roots[-1])
            plans, spoilt = [], False
            for each in chosen:
                plan = self._plan(each, by_number)
                spoilt = spoilt or plan is None
                if plan is not None:
                    plans.append(plan)
            going = self._go_on(plans, by_number) if plans else []
            if going or not (spoilt or len(self.passed) > refused):
                return going
        return []

    def _lost(self, trials: list[FrozenTrial], by_number: dict[int, FrozenTrial]
              ) -> list[_Lost]:
        """The lost batches this worker could go on with now: those with a checkpoint file
        (not one running somewhere, nor a fresh claim whose claimant may still be making its
        trials), then those with none."""
        out: list[_Lost] = []
        if self.saves is not None:
            by_batch: dict[int, list[FrozenTrial]] = {}
            by_claim: dict[str, list[FrozenTrial]] = {}
            for t in trials:
                if records.BATCH in t.user_attrs:
                    by_batch.setdefault(int(t.user_attrs[records.BATCH]), []).append(t)
                went_on = t.user_attrs.get(records.RESUMED)
                if isinstance(went_on, dict) and went_on.get("claim"):
                    by_claim.setdefault(str(went_on["claim"]), []).append(t)
            grace = GRACE_BEATS * self.seconds
            for item in checkpoints.found(self.saves):
                if item.path.name in self.passed:
                    continue  # another study's
                members = (by_claim.get(item.token, []) if item.token
                           else by_batch.get(item.batch, []))
                recorded = bool(members) and all(counts_toward_target(t) for t in members)
                if not recorded and any(not t.state.is_finished() for t in members):
                    continue  # still training somewhere
                if not members and (item.token is None or checkpoints.age(item) < grace):
                    continue  # a claimant that may still be making its trials
                if recorded:
                    taken = self._take(item, by_number)
                    if taken is not None:  # all recorded after all: nothing to go on from
                        checkpoints.remove(taken[0].path)
                    continue
                roots = sorted({liveness.root(t, by_number) for t in members}) or [item.batch]
                out.append(_Lost(tuple(roots), item=item))
        for replay in liveness.replays(trials, self._checkpointed()):
            out.append(_Lost(replay.trials, replay=replay))
        return out

    def _plan(self, lost: _Lost, by_number: dict[int, FrozenTrial]) -> _Plan | None:
        """How ``lost`` goes on: its file claimed, read and checked (None when another worker
        took it first, or it is another study's or unreadable), or its start."""
        if lost.replay is not None:
            return _Plan(lost.replay.payload(), None, fresh=True, retire=False)
        assert lost.item is not None
        taken = self._take(lost.item, by_number)
        if taken is None:
            return None
        mine, payload = taken
        sound = self._sound(lost.item, mine, payload)
        return _Plan(payload, mine, fresh=sound != "sound", retire=sound != "aside")

    def _sound(self, item: checkpoints.Found, mine: checkpoints.Found,
               payload: dict[str, Any]) -> str:
        """Whether the batch can go on from the state in ``payload`` (the study's own,
        :meth:`_take`), every field checked against the batch it names before any trial is
        made for it: "sound"; "elsewhere", made by another engine, device or form; "aside",
        not what the batch would hold (the file is set aside). If not sound, one line says
        why and the batch trains from the start, with its seed: to the numbers it would
        have had."""
        configs = [Config(values) for values in payload["configs"]]
        try:
            self.sweep.family.check_resume(configs, self.folds, self.sweep.sections,
                                           int(payload["seed"]),
                                           TrainHooks(resume=payload["state"],
                                                      on_notice=self.events.notice))
        except checkpoints.Elsewhere as exc:
            self.events.notice(f"checkpoint {item.path} cannot continue here ({exc}): its "
                               "configurations train from the start")
            return "elsewhere"
        except checkpoints.Unusable as exc:
            aside = checkpoints.set_aside(mine, item)
            self.events.notice(f"checkpoint {item.path} cannot be used ({exc}): set aside "
                               f"as {aside.name}; its configurations train from the start")
            return "aside"
        return "sound"

    def _take(self, item: checkpoints.Found, by_number: dict[int, FrozenTrial]
              ) -> tuple[checkpoints.Found, dict[str, Any]] | None:
        """``item`` claimed and read: (the claim, what it holds) when it is this study's.
        None when another worker took it first; when it cannot be read (dropped, with one
        line); or when it is another study's: given back its name, left alone and passed
        over from now on, with one line naming the file and what is not this study's."""
        assert self.owner is not None
        mine = checkpoints.claim(item)
        if mine is None:
            return None  # another worker took it a moment ago
        try:
            payload = checkpoints.read(mine.path)
        except checkpoints.Unusable as exc:
            aside = checkpoints.set_aside(mine, item)
            self.events.notice(f"checkpoint {item.path} cannot be used ({exc}): set aside "
                               f"as {aside.name}; its configurations train from the start")
            return None
        differ = [*self.owner.differences(payload),
                  *_header_differences(payload, item.batch, by_number)]
        if differ:
            checkpoints.give_back(mine, item)
            self.passed.add(item.path.name)
            words = ", ".join(differ[:-1]) + (" and " if len(differ) > 1 else "") + differ[-1]
            self.events.notice(
                f"checkpoint {item.path} is not this study's: it differs in its {words} "
                f"from study '{self.owner.study}' in {self.owner.storage}; left where it "
                "is, and nothing goes on from it")
            return None
        return mine, payload

    def _go_on(self, plans: list[_Plan], old: dict[int, FrozenTrial]
               ) -> list[tuple[list[tuple[optuna.Trial | None, Config]], Resumed]]:
        """New RUNNING trials for the batches of ``plans``, each in its order, all numbered in
        the order of the trials first asked in their places: each with its predecessor's
        parameters, role and configuration, the learning curve up to the checkpoint (the
        pruner sees the whole curve; a fresh plan: none, the batch trains from the start),
        and where it went on from; None where the predecessor was recorded for good. A batch
        gone on with from its start that another worker went on with at the same moment,
        and keeps, is left out. Any failure gives back what it made."""
        made: list[tuple[optuna.Trial, FrozenTrial]] = []
        try:
            return self._make_trials(plans, old, made)
        except BaseException:
            for trial, _ in made:  # none may stay RUNNING with no one training it
                self.held.discard(trial)
                liveness.abandon(self.study, trial)
            raise

    def _make_trials(self, plans: list[_Plan], old: dict[int, FrozenTrial],
                     made: list[tuple[optuna.Trial, FrozenTrial]]
                     ) -> list[tuple[list[tuple[optuna.Trial | None, Config]], Resumed]]:
        study = self.study
        storage = optuna_private.study_storage(study)  # a RUNNING trial from a template
        # the last trial that carries each place on: the trial the file names, or (a claim
        # whose claimant died) the one that went on from it
        after = liveness.carriers(list(old.values()))
        asked: list[list[tuple[optuna.Trial | None, Config]]] = []
        recorded: list[dict[int, FrozenTrial]] = []
        todo = []  # (the trial first asked in the place, plan, place, predecessor, its curve)
        for p, plan in enumerate(plans):
            payload = plan.payload
            results = ([{"curve": []}] * len(payload["trials"]) if plan.fresh
                       else payload["state"]["results"])
            asked.append([(None, Config(values)) for values in payload["configs"]])
            recorded.append({})
            for i, (number, result) in enumerate(zip(payload["trials"], results)):
                before = old[number]
                while before.number in after and after[before.number].number > before.number:
                    before = after[before.number]
                if before.state != TrialState.FAIL or counts_toward_target(before):
                    recorded[p][i] = before  # recorded for good before the stop
                    continue
                todo.append((liveness.root(before, old), p, i, before, result["curve"]))
        mine: list[list[tuple[optuna.Trial, FrozenTrial]]] = [[] for _ in plans]
        for _, p, i, before, curve in sorted(todo, key=lambda item: item[:3]):
            plan = plans[p]
            # No role yet: a trial killed before its first beat has none, and liveness
            # fails such a trial once it is older than the grace (Optuna's own stale check
            # skips a trial that never beat). Role and beat come together below.
            attrs = {records.CONFIG: before.user_attrs[records.CONFIG],
                     records.SEED: int(plan.payload["seed"]),
                     records.RESUMED: {
                         "trial": before.number,
                         "epoch": 0 if plan.fresh else int(plan.payload["state"]["epoch"]),
                         "claim": None if plan.claim is None else plan.claim.token}}
            template = FrozenTrial(
                number=-1, state=TrialState.RUNNING, value=None,
                datetime_start=datetime.datetime.now(), datetime_complete=None,
                params=before.params, distributions=before.distributions, user_attrs=attrs,
                system_attrs={}, intermediate_values={int(e): float(v) for e, v in curve},
                trial_id=-1)
            trial_id = storage.create_new_trial(optuna_private.study_id(study),
                                                template_trial=template)
            trial = optuna.Trial(study, trial_id)
            self.held.add([trial])
            made.append((trial, before))
            mine[p].append((trial, before))
            asked[p][i] = (trial, asked[p][i][1])
        going = []
        for p, plan in enumerate(plans):
            if not mine[p]:
                if plan.claim is not None and plan.retire:
                    checkpoints.remove(plan.claim.path)  # every place recorded: nothing left
                continue
            if plan.claim is None and self._replayed_twice(mine[p]):
                for trial, _ in mine[p]:  # before their role and batch: they carry nothing
                    self.held.discard(trial)
                    liveness.abandon(study, trial)
                continue
            liveness.beat(study, [t for t, _ in mine[p]])
            first = mine[p][0][0].number
            with trialio.holding(study):
                for trial, before in mine[p]:
                    trialio.set_user_attrs(trial, {
                        records.BATCH: first, records.ROLE: before.user_attrs[records.ROLE]})
            going.append((asked[p], Resumed(plan.claim, plan.payload,
                                             int(plan.payload["seed"]), plan.fresh,
                                             plan.retire, recorded[p])))
        return going

    def _replayed_twice(self, made: list[tuple[optuna.Trial, FrozenTrial]]) -> bool:
        """Whether another worker went on with this lost batch from its start at the same
        moment, and keeps it (:func:`liveness.replayed_twice`), read afresh."""
        with trialio.released(self.study):
            now = self.study.get_trials(deepcopy=False)
        return liveness.replayed_twice(now, {t.number for t, _ in made},
                                       {before.number for _, before in made})


def _header_differences(payload: dict[str, Any], batch: int,
                        by_number: dict[int, FrozenTrial]) -> list[str]:
    """What of a checkpoint's batch, trials, configurations and seed the study does not
    hold, in words: its batch is the file's (``batch``), and each trial it names exists,
    with that seed, that configuration and that batch — or, a place recorded for good
    before the batch went on from a checkpoint, an earlier trial."""
    trials, configs, seed = payload.get("trials"), payload.get("configs"), payload.get("seed")
    if payload.get("batch") != batch or not isinstance(trials, list) or not trials:
        return ["batch"]
    if not all(type(n) is int and n in by_number for n in trials):
        return ["trials"]
    if (not isinstance(configs, list) or len(configs) != len(trials)
            or not all(isinstance(c, dict) for c in configs)):
        return ["configurations"]
    out = []
    for number, config in zip(trials, configs):
        t = by_number[number]
        if t.user_attrs.get(records.CONFIG) != config and "configurations" not in out:
            out.append("configurations")
        if (type(seed) is not int or t.user_attrs.get(records.SEED) != seed) \
                and "seed" not in out:
            out.append("seed")
        if t.user_attrs.get(records.BATCH) != batch and not (
                number < batch and counts_toward_target(t)) and "batch" not in out:
            out.append("batch")
    return out
