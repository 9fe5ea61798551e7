"""One batch trained and recorded: the family's engine trains its trials together and calls
back as it goes (a checkpoint's accuracies reported and pruned, a stop asked, its progress
drawn); out of device memory it trains again in halves, each with its own checkpoints; then
each trial's result is told, and the trials another worker took meanwhile are named.

Apart from the loop (:mod:`dropsweep.study.runner`), which decides what to ask and when:
this is what one batch, once asked, does with the storage, its checkpoint files and the
engine. What it reads of the search that trains it is :class:`Search`.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Protocol, Sequence

import optuna
from optuna.trial import TrialState

from dropsweep import records
from dropsweep.data.protocols import Folds
from dropsweep.storage import GRACE_BEATS, optuna_private, trialio
from dropsweep.storage.results import record_batch
from dropsweep.study import liveness
from dropsweep.study.checkpoint_dirs import record_checkpoints
from dropsweep.study.open import PRUNE_STARTUP_TRIALS
from dropsweep.study.resume import Resumed
from dropsweep.study.stop import StopFlag
from dropsweep.study.summary import SearchEvents, SearchSummary, tally
from dropsweep.sweep.config import Sweep
from dropsweep.sweep.space import Config
from dropsweep.train import checkpoints, retry
from dropsweep.train.devices import oom_failure, out_of_memory, release_cached_memory
from dropsweep.train.hooks import TrainHooks
from dropsweep.train.loop import TrialResult


class Search(Protocol):
    """What a batch reads and calls of the search that trains it (``_Search`` in
    :mod:`dropsweep.study.runner`)."""

    study: optuna.Study
    sweep: Sweep
    folds: Folds
    summary: SearchSummary
    events: SearchEvents
    stop: StopFlag
    held: liveness.Heartbeat  # the trials the worker holds, beating
    seconds: int  # the heartbeat's period
    warmup: int  # epochs before the pruner is asked
    saves: Path | None  # the study's checkpoint files (None: no checkpoints)
    root: Path | None  # their root, recorded with the study once a file is written
    owner: checkpoints.Owner | None
    every: float  # seconds of training between checkpoints


class Batch:
    """One batch in training: its trials and configurations, its checkpointers (the batch's,
    then, out of memory, each half's own), the places it may no longer record (``lost``),
    and what the family's engine calls back as it trains (:meth:`on_checkpoint`,
    :meth:`should_stop`, :meth:`on_progress`)."""

    def __init__(self, search: Search, asked: list[tuple[optuna.Trial | None, Config]],
                 resumed: Resumed | None) -> None:
        self.search, self.asked, self.resumed = search, asked, resumed
        self.study, self.sweep = search.study, search.sweep
        self.trials = [trial for trial, _ in asked]
        self.configs = [config for _, config in asked]
        self.done_before = {i for i, t in enumerate(self.trials) if t is None}
        self.first = next(t for t in self.trials if t is not None).number
        # as _ask_batch stored it (a resumed batch: the stream it continues)
        self.seed = resumed.seed if resumed else int(
            optuna_private.trial_record(self.trials[0]).user_attrs[records.SEED])  # as set
        saver = self._saver()
        # the checkpointers of the attempts: the batch's, then (out of memory) each half's own
        self.saving: list[checkpoints.Saver] = [] if saver is None else [saver]
        # Asking the pruner costs two storage reads a trial; skip it where its answer is
        # known to be no (no pruner, too few complete trials, still warming up). The
        # baseline is never pruned: every comparison the report makes is against it.
        self.may_prune = (self.sweep.search.pruner != "none"
                          and search.summary.states.get("COMPLETE", 0) >= PRUNE_STARTUP_TRIALS)
        self.prunable = [config != self.sweep.baseline for config in self.configs]
        # a place pruned before the stop, trained along from an earlier state, is stopped at
        # the epoch it was pruned at (as the pruner stopped it then)
        self.pruned_at = {i: max(t.intermediate_values) for i, t in
                          (resumed.recorded.items() if resumed else ())
                          if t.state == TrialState.PRUNED and t.intermediate_values}
        # Trials another worker failed as stale while this one was paused (SIGSTOP, a
        # suspended laptop, a stalled disk): they are no longer ours to record (nor are the
        # places of a resumed batch recorded before its stop).
        self.lost: set[int] = set(self.done_before)

    def _saver(self) -> checkpoints.Saver | None:
        """The batch's checkpointer (None: no checkpoints), a file named after its first
        trial; a resumed batch's supersedes the file it went on from."""
        search, resumed = self.search, self.resumed
        if search.saves is None or search.owner is None:
            return None
        numbers = [resumed.state["trials"][i] if t is None else t.number  # type: ignore[union-attr]
                   for i, t in enumerate(self.trials)]
        return self._file(self.first, numbers, self.configs,
                          resumed.claim.path if resumed and resumed.retire else None)

    def _half_saver(self, todo: list[int]) -> checkpoints.Saver:
        """The checkpointer of a half of a batch that ran out of memory: a file named after
        its first trial, with the half's trials alone, and those trials marked as that batch,
        so that a worker resuming it goes on with them (not with the whole batch's)."""
        trials = [self.trials[i] for i in todo]
        first = trials[0].number  # type: ignore[union-attr]
        with trialio.holding(self.study):
            for trial in trials:
                trialio.set_user_attrs(trial, {records.BATCH: first})
        return self._file(first, [t.number for t in trials],  # type: ignore[union-attr]
                          [self.configs[i] for i in todo])

    def _file(self, first: int, numbers: list[int], configs: Sequence[Config],
              retire: Path | None = None) -> checkpoints.Saver:
        """A checkpointer writing ``first``'s file in the study's checkpoint directory: these
        trials and configurations, the batch's seed; ``retire``: the file it supersedes."""
        search = self.search
        assert search.saves is not None and search.owner is not None
        return checkpoints.Saver(
            search.saves / f"{first}{checkpoints.SUFFIX}",
            {**search.owner.header(), "batch": first, "trials": numbers,
             "configs": [dict(config) for config in configs], "seed": self.seed},
            search.every, resumed=retire,
            first=lambda: record_checkpoints(self.study, search.root),
            on_error=search.events.notice)

    # ------------------------------------------------------------ what the engine calls

    def on_checkpoint(self, epoch: int, accuracies: list[float | None]) -> list[int]:
        """Report the batch's accuracies at ``epoch``; the places to stop training: taken
        by another worker (their results cannot be recorded), pruned before a stop, or
        pruned now."""
        ask_pruner = self.may_prune and epoch >= self.search.warmup
        values = {i: value for i, value in enumerate(accuracies)
                  if value is not None and i not in self.lost}
        taken = trialio.report_all(self.trials, values, epoch)
        if taken and self.saving:
            self.saving[-1].every = 0.0  # the batch is another worker's to go on with now
        self.lost.update(taken)
        stopped = sorted(taken)  # stop training them: their results cannot be recorded
        stopped += [i for i, at in self.pruned_at.items() if at == epoch]
        for i in values:
            if i in taken:
                continue
            try:
                if ask_pruner and self.prunable[i] and self.trials[i].should_prune():
                    stopped.append(i)
            except optuna.exceptions.UpdateFinishedTrialError:
                self.lost.add(i)
                stopped.append(i)
        return stopped

    def should_stop(self) -> bool:
        """Whether the search was asked to stop (Ctrl-C, SIGTERM)."""
        return self.search.stop()

    def on_progress(self, epochs: float) -> None:
        events = self.search.events
        if events.on_epochs:
            events.on_epochs(epochs, self.sweep.train.epochs, len(self.asked))

    def _on_part_checkpoint(self, todo: list[int], epoch: int,
                            accuracies: list[float | None]) -> list[int]:
        """:meth:`on_checkpoint` for the places ``todo`` of the batch, indexed as they are."""
        where = {i: j for j, i in enumerate(todo)}
        spread: list[float | None] = [None] * len(self.asked)
        for i, value in zip(todo, accuracies):
            spread[i] = value
        return [where[i] for i in self.on_checkpoint(epoch, spread) if i in where]

    # ------------------------------------------------------------ training and retrying

    def _go(self, todo: list[int], resume: dict[str, Any] | None) -> list[TrialResult]:
        """The family's engine trains the places ``todo``, from ``resume`` if given."""
        return self.sweep.family.train(
            [self.configs[i] for i in todo], self.search.folds, self.sweep.sections, self.seed,
            TrainHooks(on_checkpoint=partial(self._on_part_checkpoint, todo),
                       should_stop=self.should_stop, on_progress=self.on_progress,
                       save=self.saving[-1] if self.saving else None, resume=resume,
                       on_notice=self.search.events.notice))

    def train(self, part: Sequence[int]) -> list[TrialResult]:
        """The places ``part`` of the batch: all of them at first (from the checkpoint it
        resumed, if any); after running out of memory, a half from the start, with its own
        checkpoints, leaving out the places recorded already."""
        whole = len(part) == len(self.asked)
        todo = list(part) if whole else [i for i in part if i not in self.lost]
        if not todo:
            return [TrialResult() for _ in part]  # nothing of them is recorded
        if not whole:
            return self._train_half(part, todo)
        resumed = self.resumed
        if resumed is None or resumed.fresh:
            return self._go(todo, None)
        try:
            return self._go(todo, resumed.state["state"])
        except checkpoints.Unusable as exc:
            # made by another engine (no C compiler here, another device): from epoch 0
            self.search.events.notice(f"batch {resumed.claim.batch}'s checkpoint cannot be "
                                      f"used here ({exc}): its configurations train from the "
                                      "start")
            return self._go(todo, None)

    def _train_half(self, part: Sequence[int], todo: list[int]) -> list[TrialResult]:
        """A half of a batch that ran out of memory: from the start, with its own
        checkpoints; each place's share of the time as the whole batch's would be."""
        if self.saving:
            self.saving.append(self._half_saver(todo))
        trained = dict(zip(todo, self._go(todo, None)))
        for result in trained.values():  # record_batch gives each 1/len(asked)
            result.wall_time *= len(self.asked) / len(todo)
        return [trained.get(i, TrialResult()) for i in part]  # lost: not recorded

    def before_retry(self, part: Sequence[int], error: BaseException) -> None:
        """A part ran out of memory: its checkpointer is done, memory released, its reports
        forgotten; it trains again in halves."""
        if self.saving:  # it covers the failed attempt, not the halves
            self.saving[-1].every = 0.0
            self.saving[-1].done()
        release_cached_memory()
        trialio.forget_reports([self.trials[i] for i in part if i not in self.lost])
        if len(part) > 1:
            a, b = retry.halves(len(part))
            self.search.events.notice(f"{len(part)} trials ran out of memory on "
                                      f"{self.search.folds.rows.device} trained together: "
                                      f"they train again in halves of {a} and {b}")

    def fail(self, i: int, error: BaseException) -> TrialResult:
        return TrialResult(failure=oom_failure(self.search.folds.rows.device, error))

    # ------------------------------------------------------------ the batch, recorded

    def run(self) -> None:
        """Train (in halves if memory runs out), record, and say which trials were lost."""
        # The pruner compares with the complete trials of one read (renewed once a
        # heartbeat period), not of a read for every trial at every checkpoint.
        with trialio.holding(self.study, max_age=self.search.seconds):
            results = retry.train_in_halves(list(range(len(self.asked))), self.train,
                                            out_of_memory, self.fail, self.before_retry)
        if any(r.interrupted for r in results) and len(self.saving) <= 1:
            # Stopped: the batch goes on as a whole, each place a new trial numbered in its
            # order (what a run never stopped would hold, trial for trial), so what it ended
            # before the stop (pruned, diverged) goes on with it, from its checkpoint or
            # again from its start, and is recorded then, not here.
            for result in results:
                result.interrupted = True
        self._record(results)
        if not any(r.interrupted for r in results):
            for each in self.saving:
                each.done()  # recorded: a stopped batch keeps its checkpoint to go on from
        lost = self.lost - self.done_before
        if lost:
            numbers = ", ".join(f"#{self.trials[i].number}" for i in sorted(lost))
            self.search.events.notice(taken_notice(
                f"trial{'s' if len(lost) > 1 else ''} {numbers} of this worker", len(lost),
                self.search.seconds))

    def _record(self, results: list[TrialResult]) -> None:
        """Each trial's result, told; each beats until its result is recorded: a worker
        slowed by a locked storage must not see its finished trials failed as stale by
        another."""
        study, summary, events = self.study, self.search.summary, self.search.events
        for i, frozen in record_batch(study, self.trials, results, self.lost):
            self.search.held.discard(self.trials[i])
            if frozen is None:
                continue
            tally(summary, TrialState.RUNNING, frozen, study.direction)
            if not results[i].interrupted:
                summary.ran += 1
            if events.on_trial:
                events.on_trial(summary, frozen)


def taken_notice(what: str, count: int, seconds: int) -> str:
    """The line saying that ``what`` (``count`` trials of this worker) went stale while it was
    paused and another worker took them: the loop says it of a trial it was asking, a batch of
    the trials it was training."""
    it, its = ("them", "their results") if count > 1 else ("it", "its result")
    return (f"{what} went {GRACE_BEATS * seconds} s without a heartbeat (the process was "
            f"paused or stalled), so another worker failed {it} to run {it} again: {its} "
            "here dropped, this worker goes on")
