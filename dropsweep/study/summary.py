"""What a search did, counted: the summary ``dropsweep search`` prints and draws, the
events it draws with, and the watcher with which the parent of ``--workers`` follows the
trials its workers finish.

Apart from the loop (:mod:`dropsweep.study.runner`) so that what only reads a summary (the
CLI's progress, the parent of the workers) has it without the loop's training and storage
writes; a batch tallies what it records here too (:mod:`dropsweep.study.batch`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from dropsweep.answers.rows import best_first, better
from dropsweep.study.liveness import counts_toward_target


@dataclass
class SearchSummary:
    """What one ``dropsweep search`` invocation did, for the CLI to print."""

    study_name: str
    storage: str  # masked
    target: int
    finished_before: int
    finished: int = 0  # finished trials in the study now
    ran: int = 0  # trials this invocation finished
    best_value: float | None = None
    best_number: int | None = None
    stopped_by: int | None = None  # signal number when interrupted
    states: dict[str, int] = field(default_factory=dict)


@dataclass
class SearchEvents:
    """Hooks the CLI uses to draw progress; all optional."""

    on_start: Callable[[SearchSummary], None] | None = None
    on_trial: Callable[[SearchSummary, FrozenTrial], None] | None = None
    on_notice: Callable[[str], None] | None = None  # one line the user should read
    # the training batch's progress: (epochs done, a float, of epochs; trials in the batch)
    on_epochs: Callable[[float, int, int], None] | None = None

    def notice(self, text: str) -> None:
        if self.on_notice:
            self.on_notice(text)


def summarize(study: optuna.Study, summary: SearchSummary,
               trials: list[FrozenTrial] | None = None) -> None:
    """``summary`` counted from the storage (or from ``trials``, just read)."""
    if trials is None:
        trials = study.get_trials(deepcopy=False)
    summary.finished = sum(counts_toward_target(t) for t in trials)
    summary.states = {}
    for t in trials:
        summary.states[t.state.name] = summary.states.get(t.state.name, 0) + 1
    ranked = best_first(trials, study.direction)
    if ranked:
        summary.best_value, summary.best_number = ranked[0].value, ranked[0].number


def tally(summary: SearchSummary, was: TrialState, told: FrozenTrial,
           direction: optuna.study.StudyDirection) -> None:
    """``summary`` after this worker told one of its trials: what :func:`summarize` would
    count now, as far as this worker's trials go, without reading the study again."""
    summary.states[was.name] = summary.states.get(was.name, 0) - 1
    if summary.states[was.name] <= 0:
        del summary.states[was.name]
    summary.states[told.state.name] = summary.states.get(told.state.name, 0) + 1
    summary.finished += counts_toward_target(told)
    if best_first([told]) and (summary.best_number is None or better(
            (told.value, told.number), (summary.best_value, summary.best_number), direction)):
        summary.best_value, summary.best_number = told.value, told.number


def watcher(study: optuna.Study, summary: SearchSummary, events: SearchEvents
            ) -> Callable[[], None]:
    """A callable that refreshes ``summary`` from the storage and reports trials that other
    processes finished since the last call (the parent of ``--workers`` draws with it)."""
    seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}

    def watch() -> None:
        trials = study.get_trials(deepcopy=False)  # one read serves the count and the news
        summarize(study, summary, trials)
        summary.ran = summary.finished - summary.finished_before
        for t in trials:
            if t.state.is_finished() and t.number not in seen:
                seen.add(t.number)
                if events.on_trial:
                    events.on_trial(summary, t)

    return watch
