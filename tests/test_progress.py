"""Search progress: a bar on a terminal, plain lines (no colour codes) elsewhere."""

from __future__ import annotations

import io
import signal

import optuna
from rich.console import Console

from dropsweep.render.progress import SearchProgress, render_search_summary
from dropsweep.study.summary import SearchSummary


def summary(**kw) -> SearchSummary:
    base = dict(study_name="sonar", storage="sqlite:///results/dropsweep.db", target=4,
                finished_before=1, finished=2, ran=1, best_value=0.8604, best_number=0)
    base.update(kw)
    return SearchSummary(**base)


def a_trial() -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(value=0.8604, user_attrs={})  # number -1: not stored


def test_a_terminal_gets_a_bar_with_done_target_and_best():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with SearchProgress(console) as progress:
        progress.start(summary(finished=1))
        progress.trial_done(summary(finished=2), a_trial())
    text = out.getvalue()
    assert "2/4" in text and "best 86.04% (#0)" in text and "eta" in text
    assert "\x1b[" in text  # a real terminal may get colour


def test_a_pipe_gets_one_plain_line_per_trial():
    out = io.StringIO()
    console = Console(file=out, width=120)
    assert not console.is_terminal
    with SearchProgress(console) as progress:
        progress.start(summary(finished=1))
        progress.trial_done(summary(finished=2), a_trial())
    lines = out.getvalue().splitlines()
    assert lines[-1] == "trial -1 COMPLETE 86.04% [2/4, best 86.04% (#0)]"
    assert "\x1b[" not in out.getvalue()


def test_an_interrupted_summary_names_the_signal_and_the_resume_command():
    out = io.StringIO()
    render_search_summary(summary(stopped_by=signal.SIGINT), Console(file=out, width=300),
                          resume_command="dropsweep search sweeps/sonar.yaml --trials 4")
    text = out.getvalue()
    assert "Interrupted by SIGINT: 2 of 4 trials finished are kept" in text
    assert "Resume with: dropsweep search sweeps/sonar.yaml --trials 4" in text


def test_a_terminal_shows_the_batch_moving_inside_an_epoch():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with SearchProgress(console) as progress:
        progress.start(summary(finished=1))
        progress.epochs(2.5, 60, 16)
    text = out.getvalue()
    assert "epochs" in text and "16 trials: epoch 3" in text and "2/60" in text


def test_a_pipe_hears_of_the_batch_at_most_once_a_minute(monkeypatch):
    out = io.StringIO()
    clock = [1000.0]
    monkeypatch.setattr("dropsweep.render.progress.time.monotonic", lambda: clock[0])
    with SearchProgress(Console(file=out, width=120)) as progress:
        progress.start(summary(finished=1))
        progress.epochs(0.5, 60, 1)  # within the first minute: nothing
        clock[0] += 61
        progress.epochs(1.25, 60, 1)
        clock[0] += 30
        progress.epochs(1.5, 60, 1)  # 30 s later: nothing
    lines = out.getvalue().splitlines()
    assert lines[1:] == ["batch of 1 trial at epoch 2 (1.25 of 60 done)"]
