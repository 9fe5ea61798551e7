"""What ``dropsweep search`` shows while it runs and when it stops (formatting only).

A rich progress bar (trials done / target, elapsed, ETA, current best) on stderr when it is
a terminal, with a second bar for the batch in training (epochs, moving within an epoch:
a Fashion-MNIST epoch is minutes); otherwise one plain line per trial, and a line on the
batch at most once a minute, so logs stay readable and free of colour codes.
"""

from __future__ import annotations

import shlex
import signal
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from dropsweep.records import DEFAULT_STORAGE

if TYPE_CHECKING:  # drawing imports neither torch nor optuna
    from dropsweep.study.summary import SearchSummary


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


class SearchProgress:
    """Receives the runner's events and draws them."""

    LOG_EVERY = 60.0  # seconds between plain lines on the batch in training

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bar: Progress | None = None
        self.task: Any = None
        self.batch_task: Any = None
        self.logged = time.monotonic()

    def __enter__(self) -> SearchProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def _best(self, summary: SearchSummary) -> str:
        if summary.best_value is None:
            return "best -"
        return f"best {_percent(summary.best_value)} (#{summary.best_number})"

    def start(self, summary: SearchSummary) -> None:
        remaining = max(summary.target - summary.finished, 0)
        self.console.print(
            f"study '{summary.study_name}' in {summary.storage}: {summary.finished} of "
            f"{summary.target} trials finished, {remaining} to run")
        if remaining and self.console.is_terminal:
            self.bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("elapsed"), TimeElapsedColumn(), TextColumn("eta"),
                TimeRemainingColumn(), TextColumn("{task.fields[best]}"),
                console=self.console, transient=False)
            self.bar.start()
            self.task = self.bar.add_task("trials", total=summary.target,
                                          completed=summary.finished, best=self._best(summary))

    def epochs(self, done: float, total: int, trials: int) -> None:
        """The batch in training has trained ``done`` of its ``total`` epochs."""
        what = f"{trials} trial{'s' if trials != 1 else ''}: epoch {min(int(done) + 1, total)}"
        if self.bar is not None:
            if self.batch_task is None:
                self.batch_task = self.bar.add_task("epochs", total=total, best=what)
            self.bar.update(self.batch_task, completed=done, total=total, best=what)
            return
        now = time.monotonic()
        if now - self.logged >= self.LOG_EVERY:
            self.logged = now
            self.console.print(f"batch of {what.replace(': epoch', ' at epoch')} "
                               f"({done:.2f} of {total} done)", markup=False)

    def notice(self, text: str) -> None:
        """A line the user should read, above the bar (or in the log)."""
        self.console.print(f"note: {text}", markup=False)

    def trial_done(self, summary: SearchSummary, trial: Any) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=summary.finished, best=self._best(summary))
            return
        value = trial.value if trial.value is not None else None
        reason = trial.user_attrs.get("fail_reason") or (
            "interrupted" if trial.user_attrs.get("interrupted") else "")
        self.console.print(
            f"trial {trial.number} {trial.state.name} {_percent(value)}"
            f"{' ' + reason if reason else ''} [{summary.finished}/{summary.target}, "
            f"{self._best(summary)}]", markup=False)


def render_search_summary(summary: SearchSummary, console: Console, resume_command: str) -> None:
    """The closing lines: what was done, and how to resume when interrupted."""
    best = "" if summary.best_value is None else (
        f"; best {_percent(summary.best_value)} (trial {summary.best_number})")
    if summary.stopped_by is not None:
        name = signal.Signals(summary.stopped_by).name
        console.print(f"Interrupted by {name}: {summary.finished} of {summary.target} trials "
                      f"finished are kept in study '{summary.study_name}'{best}.", markup=False)
        console.print(f"Resume with: {resume_command}", markup=False)
        return
    if summary.ran == 0 and summary.finished >= summary.target:
        console.print(f"Study '{summary.study_name}' already has {summary.finished} finished "
                      f"trials (target {summary.target}): nothing to run. Raise --trials to "
                      f"run more{best}.", markup=False)
        return
    console.print(f"Study '{summary.study_name}': {summary.finished} of {summary.target} trials "
                  f"finished ({summary.ran} run now){best}. "
                  f"See: {report_command(summary)}", markup=False)


def report_command(summary: SearchSummary) -> str:
    """The command that reports this study, quoted for a shell (a study name is any text).
    A password in the storage URL stays masked: the user types it."""
    storage = [] if summary.storage == DEFAULT_STORAGE else ["--storage", summary.storage]
    return shlex.join(["dropsweep", "report", *storage, "--study", summary.study_name])
