"""``dropsweep run``: search, confirm and test in one command, ending with the answer; every
stage resumes."""

from __future__ import annotations

import optuna
from click.testing import CliRunner

from dropsweep.cli import main

DIGITS = ["run", "digits", "--set", "train.epochs=3", "--set", "search.trials=8",
          "--repeats", "2", "--batch", "4"]


def _trials(name: str) -> int:
    return len(optuna.load_study(study_name=name,
                                 storage="sqlite:///results/dropsweep.db").trials)


def test_run_ends_with_the_tested_answer_and_a_rerun_does_nothing_more(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    first = runner.invoke(main, DIGITS, catch_exceptions=False)
    assert first.exit_code == 0, first.stderr
    # the stages said on stderr; the answer alone on stdout, then where the tables are
    assert [line for line in first.stderr.splitlines() if line[:2] in ("1.", "2.", "3.")] == [
        "1. search", "2. confirm", "3. test"]
    out = first.stdout.strip()
    words = " ".join(out.split())  # the block is wrapped to the terminal's width
    assert words.startswith("Answer: does dropout help the mlp on digits? (confirmed on 2 "
                            "new hold-out splits, then the test rows)")
    assert "On the 360 test rows (3 seeds)" in words
    assert out.endswith("The tables behind it: dropsweep report --study digits")
    counts = {name: _trials(name) for name in ("digits", "digits:confirm", "digits:test")}
    assert counts["digits"] == 8
    # again: every stage finds its work done, and the answer is the same
    again = runner.invoke(main, DIGITS, catch_exceptions=False)
    assert again.exit_code == 0, again.stderr
    assert again.stdout == first.stdout
    assert {name: _trials(name) for name in counts} == counts
    assert "note: the answer stored in 'digits:test' is shown, not scored again" in again.stderr
    # the same block opens the report
    report = runner.invoke(main, ["report"], catch_exceptions=False).stdout
    assert report.startswith(out.split("\n\nThe tables behind it")[0])


def test_run_without_test_rows_stops_after_the_confirmation(tmp_path, monkeypatch, sonar_dir):
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(main, ["run", "sonar", "--set", "train.epochs=3",
                                     "--set", "cv.folds=3", "--trials", "8", "--repeats", "2"],
                              catch_exceptions=False)
    assert done.exit_code == 0, done.stderr
    assert "3. test" not in done.stderr
    assert "(confirmed on 2 x 3-fold CV on new splits)" in " ".join(done.stdout.split())
