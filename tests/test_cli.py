"""End to end: the real commands on the real Sonar file, and every user mistake's one line."""

from __future__ import annotations

import contextlib

import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from dropsweep import __version__
from dropsweep.cli import main
from helpers import SUITE, trials_in_the_file_alone

REPO = Path(__file__).resolve().parents[1]
SONAR_SWEEP = str(REPO / "sweeps" / "sonar.yaml")
FAST = ["--set", "train.epochs=6", "--set", "train.eval_every=3", "--set", "cv.folds=3"]


def run(*args: str, ok: bool = True):
    result = CliRunner().invoke(main, list(args), catch_exceptions=not ok)
    if ok:
        assert result.exit_code == 0, result.stderr + result.stdout
    return result


def one_line_error(result, *parts: str) -> str:
    """A user error: exit 2, exactly one line on stderr, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch, sonar_dir) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.slow
def test_search_resume_extend_and_report(in_tmp):
    first = run("search", SONAR_SWEEP, *FAST, "--trials", "3", "--device", "cpu")
    assert "3 of 3 trials finished (3 run now)" in first.stdout
    assert (in_tmp / "results" / "dropsweep.db").exists()

    again = run("search", SONAR_SWEEP, *FAST, "--trials", "3")
    assert "already has 3 finished trials" in again.stdout and "nothing to run" in again.stdout

    more = run("search", SONAR_SWEEP, *FAST, "--trials", "5")
    assert "5 of 5 trials finished (2 run now)" in more.stdout

    report = json.loads(run("report", "--format", "json").stdout)
    assert len(report["trials"]) == 5
    for trial in report["trials"]:
        if trial["state"] == "FAIL":  # a learning rate that diverges: a result of its own
            assert trial["fail_reason"].startswith("loss became"), trial
            continue
        assert trial["state"] == "COMPLETE"
        assert {"number", "state", "value", "params", "fold_accuracies", "accuracy_mean",
                "accuracy_std"} <= set(trial)
        assert len(trial["fold_accuracies"]) == 3
    assert report["trials"][0]["params"]["placement"] == "none"

    table = run("report").stdout
    assert "Top" in table and "placement" in table and "\x1b[" not in table
    assert re.search(r"\d+\.\d\d% ± \d+\.\d\d", table)

    studies = run("studies").stdout
    assert "sonar" in studies

    # a machine format keeps the parameter's name; a table for people names it in words
    assert "learning_rate" in run("report", "--format", "csv", "--study", "sonar").stdout
    assert "learning rate" in run("report", "--format", "markdown", "--study", "sonar").stdout


def test_validate_prints_the_resolved_configuration(in_tmp):
    out = run("validate", SONAR_SWEEP, "--set", "cv.folds=5").stdout
    assert "folds: 5" in out and "208 rows x 60 features" in out


def test_version_and_help_with_an_example_for_every_command():
    assert __version__ in run("--version").stdout
    for command in ("search", "report", "studies", "validate", "init"):
        text = run(command, "--help").stdout
        assert "Example:" in text and f"dropsweep {command}" in text


def write(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


SWEEP_MISTAKES = [
    ("syntax.yaml", "train:\n  epochs: [1, 2\n", ["syntax.yaml", "line", "invalid YAML"]),
    ("unknown.yaml", "train:\n  epoch: 5\n", ["unknown.yaml", "line 2", "train.epoch",
                                              "did you mean 'epochs'"]),
    ("type.yaml", "train:\n  epochs: many\n", ["line 2", "train.epochs", "integer"]),
    ("rate.yaml", "space:\n  input_rate: {low: 0.1, high: 1.0}\n",
     ["line 2", "space.input_rate.high", "[0, 1)"]),
    ("lr.yaml", "space:\n  learning_rate: 0\n", ["line 2", "space.learning_rate", "> 0"]),
    ("momentum.yaml", "space:\n  momentum: [0.5, 1.2]\n", ["space.momentum.1", "[0, 1)"]),
    ("maxnorm.yaml", "space:\n  max_norm: -3\n", ["line 2", "space.max_norm", "> 0"]),
    ("lowhigh.yaml", "space:\n  hidden_rate: {low: 0.5, high: 0.2}\n",
     ["line 2", "space.hidden_rate", "greater than high"]),
    ("empty.yaml", "space:\n  placement: []\n", ["line 2", "space.placement", "empty"]),
    ("folds.yaml", "cv:\n  folds: 1\n", ["line 2", "cv.folds", "at least 2"]),
    ("manyfolds.yaml", "cv:\n  folds: 98\n", ["line 2", "cv.folds", "'R' has 97"]),
]


@pytest.mark.parametrize("name,text,parts", SWEEP_MISTAKES, ids=[m[0] for m in SWEEP_MISTAKES])
@pytest.mark.parametrize("command", ["validate", "search"])
def test_every_sweep_mistake_is_one_line_exit_2(in_tmp, name, text, parts, command):
    result = run(command, write(in_tmp, name, text), ok=False)
    one_line_error(result, *parts)
    assert not (in_tmp / "results" / "dropsweep.db").exists()  # nothing written to storage


def test_missing_sweep_file_and_bad_set(in_tmp):
    one_line_error(run("search", str(in_tmp / "nope.yaml"), ok=False), "nope.yaml", "no such")
    one_line_error(run("validate", SONAR_SWEEP, "--set", "train.epochs=zero", ok=False),
                   "--set train.epochs=zero", "train.epochs", "integer")
    one_line_error(run("validate", SONAR_SWEEP, "--set", "trian.epochs=3", ok=False),
                   "trian", "did you mean 'train'")
    one_line_error(run("validate", SONAR_SWEEP, "--set", "noequals", ok=False), "--set noequals")


CSV_MISTAKES = [
    ("text.csv", "a,b,label\n1,2,x\n3,abc,y\n", ["text.csv", "row 3", "column 2", "'abc'"]),
    ("missing.csv", "a,b,label\n1,2,x\n3,,y\n", ["missing.csv", "row 3", "column 2", "missing"]),
    ("oneclass.csv", "a,b,label\n1,2,x\n3,4,x\n", ["oneclass.csv", "class"]),
    ("fewrows.csv", "a,b,label\n1,2,x\n3,4,y\n5,6,x\n", ["cv.folds", "class"]),
]


@pytest.mark.parametrize("name,text,parts", CSV_MISTAKES, ids=[m[0] for m in CSV_MISTAKES])
def test_every_csv_mistake_is_one_line_exit_2(in_tmp, name, text, parts):
    write(in_tmp, name, text)
    sweep = write(in_tmp, "s.yaml", f"data:\n  csv: {name}\n  target: label\ncv:\n  folds: 2\n")
    result = run("search", sweep, ok=False)
    one_line_error(result, *parts)
    assert not (in_tmp / "results").exists()


def test_missing_csv_names_the_key(in_tmp):
    sweep = write(in_tmp, "s.yaml", "data:\n  csv: absent.csv\n")
    one_line_error(run("validate", sweep, ok=False), "data.csv", "absent.csv")


def test_offline_without_sonar_says_where_to_put_it(in_tmp, monkeypatch, tmp_path):
    from dropsweep.data import fetch

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("DROPSWEEP_DATA_DIR", str(empty))

    def offline(url, out, timeout, progress):
        raise OSError("network is unreachable")

    monkeypatch.setattr(fetch, "_stream", offline)
    line = one_line_error(run("validate", SONAR_SWEEP, ok=False), "sonar")
    assert "sonar.csv" in line


def test_report_without_storage_or_study_is_one_line(in_tmp):
    one_line_error(run("report", ok=False), "no storage")
    run("search", SONAR_SWEEP, *FAST, "--trials", "1")
    one_line_error(run("report", "--study", "nope", ok=False), "no study 'nope'", "sonar")


def test_cuda_on_a_machine_without_one_is_one_line(in_tmp):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    one_line_error(run("search", SONAR_SWEEP, *FAST, "--device", "cuda", ok=False), "cuda")


@pytest.mark.parametrize("command", [["search", SONAR_SWEEP], ["confirm"], ["test"],
                                     ["export", "-o", "x.yaml"]])
@pytest.mark.parametrize("device", ["gpu", "cuda:x"])
def test_a_device_name_of_another_form_is_one_line_on_every_command(in_tmp, command, device):
    one_line_error(run(*command, "--device", device, ok=False),
                   f"--device must be auto, cpu, cuda or cuda:N, got '{device}'")
    assert not (in_tmp / "results").exists()


def test_a_gpu_index_on_a_machine_without_cuda_is_one_line(in_tmp):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    one_line_error(run("search", SONAR_SWEEP, *FAST, "--device", "cuda:1", ok=False),
                   "--device cuda:1: no CUDA device is available here")
    one_line_error(run("search", SONAR_SWEEP, *FAST, "--device", "cuda", "--workers", "2",
                       ok=False), "--device cuda: no CUDA device is available here")


@pytest.mark.slow
def test_ctrl_c_keeps_finished_trials_and_says_how_to_resume(in_tmp):
    """A real process, a real SIGINT, in the middle of its second trial."""
    args = ["search", SONAR_SWEEP, "--set", "train.epochs=2000", "--set", "cv.folds=3",
            "--trials", "3", "--batch", "1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "dropsweep", *args], cwd=in_tmp, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = in_tmp / "results" / "dropsweep.db"
    _until(db, "select state from trials order by number", proc,
           lambda rows: rows == [("COMPLETE",), ("RUNNING",)])
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "Interrupted by SIGINT" in out and "1 of 3 trials finished" in out
    assert "Resume with: dropsweep search " + SONAR_SWEEP in out
    with sqlite3.connect(db) as con:
        states = [s for (s,) in con.execute("select state from trials order by number")]
    assert states == ["COMPLETE", "FAIL"]  # nothing left RUNNING; the finished trial is kept


def _until(db: Path, query: str, proc: subprocess.Popen, wanted) -> list[tuple]:
    """Poll ``query`` on the storage until ``wanted(rows)``, while ``proc`` runs."""
    deadline = time.monotonic() + 120
    rows: list[tuple] = []
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db) as con:
                    rows = con.execute(query).fetchall()
            except sqlite3.Error:
                rows = []
            if wanted(rows):
                return rows
        time.sleep(0.05)
    raise AssertionError(f"never seen: {query} -> {rows}; exit {proc.poll()}")


def _interrupt_twice(proc: subprocess.Popen) -> tuple[str, str]:
    """Ctrl-C, and 50 ms later Ctrl-C again; then its output, all of it."""
    SUITE["double interrupts"] += 1
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, out, err)
    assert "Traceback" not in err and "Aborted" not in err, err
    return out, err


def _start(cwd: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "dropsweep", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_ctrl_c_50_ms_apart_still_print_the_summary_and_how_to_resume(in_tmp):
    args = ["search", SONAR_SWEEP, "--set", "train.epochs=2000", "--set", "cv.folds=3",
            "--trials", "3", "--batch", "1"]
    proc = _start(in_tmp, *args)
    db = in_tmp / "results" / "dropsweep.db"
    _until(db, "select state from trials order by number", proc,
           lambda rows: rows == [("COMPLETE",), ("RUNNING",)])
    out, err = _interrupt_twice(proc)
    assert "Interrupted by SIGINT" in out and "1 of 3 trials finished" in out
    assert "Resume with: dropsweep search " + SONAR_SWEEP in out
    with sqlite3.connect(db) as con:
        states = [s for (s,) in con.execute("select state from trials order by number")]
    assert states == ["COMPLETE", "FAIL"]  # nothing left RUNNING; the finished trial is kept


@pytest.fixture
def tested_study(in_tmp) -> Path:
    """A small Sonar study with test rows held back, trained long enough to interrupt (500
    epochs no longer were, once small data trained in spans: a confirmation ended before
    the second Ctrl-C came)."""
    run("search", SONAR_SWEEP, "--set", "cv.folds=3", "--set", "eval.test=0.2",
        "--set", "train.epochs=2000", "--trials", "2", "-q")
    return in_tmp / "results" / "dropsweep.db"


@pytest.mark.slow
@pytest.mark.parametrize("command,companion,summary", [
    (["confirm", "--top", "1", "--repeats", "2"], "sonar:confirm",
     r"Interrupted: \d of 4 done\. Resume with: dropsweep confirm --top 1 --repeats 2"),
    (["test", "--repeats", "2"], "sonar:test",
     r"Interrupted: 0 of 2 repeats scored\. Resume with: dropsweep test --repeats 2"),
])
def test_confirm_and_test_under_two_ctrl_c_print_how_to_resume(tested_study, command,
                                                               companion, summary):
    proc = _start(tested_study.parents[1], *command)
    # its companion study written: the command is under way, its handlers installed
    _until(tested_study, f"select * from studies where study_name = '{companion}'", proc,
           lambda rows: len(rows) == 1)
    out, _ = _interrupt_twice(proc)
    assert re.search(summary, out), out
    with sqlite3.connect(tested_study) as con:
        assert con.execute("select count(*) from trials where state = 'RUNNING'").fetchone() \
            == (0,)


def test_a_second_ctrl_c_cuts_training_short_a_third_anything(dataset, storage, monkeypatch):
    """In this process: Ctrl-C twice in the middle of training (a real SIGINT each) stops
    the search at once and still returns its summary; outside that work a second Ctrl-C is
    ignored (the stop is under way) and a third stops wherever it lands."""
    from dropsweep.sweep.config import build_sweep
    from dropsweep.families.mlp import MLP
    from dropsweep.study.runner import run_search
    from dropsweep.study.stop import StopFlag, stop_on_signals
    from dropsweep.sweep.file import parse_sweep_text

    SUITE["double interrupts"] += 1
    sweep = build_sweep(parse_sweep_text(
        "name: t\nmodel: {hidden: [4]}\ntrain: {epochs: 4, eval_every: 2}\ncv: {folds: 2}\n"
        "search: {trials: 3, sampler: random, pruner: none}\n", "t.yaml"))
    original = MLP.train

    def pressed_twice(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # a clean stop asked
        os.kill(os.getpid(), signal.SIGINT)  # and at once
        time.sleep(1)  # the handler runs at the next bytecode: well before this ends
        raise AssertionError("a second Ctrl-C in training did not stop it")

    monkeypatch.setattr(type(MLP), "train", pressed_twice)
    before = signal.getsignal(signal.SIGINT)
    try:
        with stop_on_signals(StopFlag()) as stop:
            try:
                summary = run_search(sweep, dataset, storage_url=storage, batch=3,
                                     device="cpu", stop=stop)
            except KeyboardInterrupt:  # not to pytest: it would end the session
                pytest.fail("a second Ctrl-C in training ended the search with no summary")
        assert summary.stopped_by == signal.SIGINT and summary.finished == 0
        assert summary.states == {"FAIL": 3}  # given back, marked interrupted
        assert signal.getsignal(signal.SIGINT) is before
        monkeypatch.setattr(type(MLP), "train", original)
        with stop_on_signals(StopFlag()) as stop:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # no work to cut short: ignored
            time.sleep(0.1)
            assert stop.signal == signal.SIGINT
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)  # the third
                time.sleep(1)
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("args,parts", [
    (["search", "--trials", "0", "x.yaml"], ["dropsweep search", "--trials"]),
    (["serch"], ["No such command 'serch'", "Did you mean 'search'"]),
    (["report", "--format", "pdf"], ["--format", "pdf"]),
    (["search"], ["Missing argument 'SWEEP'"]),
    (["search", "x.yaml", "--batch", "-1"], ["--batch"]),
])
def test_command_line_mistakes_are_one_line_exit_2(args, parts):
    """A real process: click's own usage errors would print three lines."""
    proc = subprocess.run([sys.executable, "-m", "dropsweep", *args], capture_output=True,
                          text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    assert all(p in lines[0] for p in parts), lines[0]


def test_only_the_command_line_itself_ends_its_process_at_once():
    """``dropsweep`` and ``python -m dropsweep`` end their process once done (atexit
    handlers run first); a program calling ``main`` in its own process goes on after it."""

    def version_then(call: str) -> list[str]:
        """What ``dropsweep --version``, called so, and then the program print."""
        proc = subprocess.run([sys.executable, "-c",
                               "import atexit, sys, runpy\n"
                               "from dropsweep.cli import main\n"
                               "atexit.register(lambda: print('atexit ran'))\n"
                               f"sys.argv = ['dropsweep', '--version']\n{call}\n"
                               "print('went on')\n"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.splitlines()

    version = f"dropsweep, version {__version__}"
    assert version_then("runpy.run_module('dropsweep', run_name='__main__')") == [
        version, "atexit ran"]
    assert version_then("main()") == [version, "went on", "atexit ran"]


def test_a_finished_command_leaves_every_result_in_the_database_file_itself(in_tmp):
    """A real process: the write-ahead log is folded into the ``.db`` when the command ends
    (its connections closed, the writers last); left to Python's shutdown, they stayed open,
    and a copy of the file alone held none of the run's trials."""
    db = in_tmp / "results" / "dropsweep.db"
    for trials in ("2", "3"):  # a new study, then one resumed
        proc = subprocess.run([sys.executable, "-m", "dropsweep", "search", SONAR_SWEEP, *FAST,
                               "--trials", trials, "-q"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert not Path(f"{db}-wal").exists() and not Path(f"{db}-shm").exists()
        assert trials_in_the_file_alone(db, in_tmp / "copy.db") == int(trials)
    # another process with the file open (a report of the moment, idle): the search's last
    # connection is not the file's last, yet the log is in the file
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as reader:
        assert reader.execute("select count(*) from trials").fetchone()[0] == 3
        proc = subprocess.run([sys.executable, "-m", "dropsweep", "search", SONAR_SWEEP, *FAST,
                               "--trials", "4", "-q"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert trials_in_the_file_alone(db, in_tmp / "copy.db") == 4
    # a reader (report: read-only, it cannot fold a log in) hides nothing there either
    proc = subprocess.run([sys.executable, "-m", "dropsweep", "report"], capture_output=True,
                          text=True)
    assert proc.returncode == 0 and "sonar" in proc.stdout, proc.stderr
    assert trials_in_the_file_alone(db, in_tmp / "copy.db") == 4


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
def test_output_that_cannot_be_written_is_one_line_and_the_study_stays(in_tmp):
    """Standard output on a full disk (``> /dev/full``): one line on stderr naming it, exit
    status 1, no traceback (rich's write raised one); the search's trials are stored all the
    same, and a pipe closed early (``| head``) still ends quietly."""
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "dropsweep", "search", SONAR_SWEEP, *FAST,
                               "--trials", "2", "-q"], stdout=full, stderr=subprocess.PIPE,
                              text=True)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.strip().splitlines() == [
            "Error: cannot write to standard output: No space left on device"], proc.stderr
        for command in (["report"], ["report", "--format", "json"], ["studies"]):
            proc = subprocess.run([sys.executable, "-m", "dropsweep", *command], stdout=full,
                                  stderr=subprocess.PIPE, text=True)
            assert proc.returncode == 1, (command, proc.stderr)
            assert proc.stderr.strip().splitlines() == [
                "Error: cannot write to standard output: No space left on device"], command
    assert trials_in_the_file_alone(in_tmp / "results" / "dropsweep.db", in_tmp / "c.db") == 2
    proc = subprocess.run(f"{shlex.quote(sys.executable)} -m dropsweep report | head -1",
                          shell=True, capture_output=True, text=True)
    assert proc.stdout.strip(), proc.stdout  # the first line, then quiet
    assert proc.stderr == "", proc.stderr


@pytest.mark.slow
def test_a_diverging_trial_is_failed_with_its_reason_and_reported(in_tmp):
    sweep = write(in_tmp, "diverge.yaml", """\
name: diverge
train: {epochs: 6, eval_every: 3}
cv: {folds: 3}
space:
  - {placement: none, learning_rate: 0.01, momentum: 0.8}
  - {placement: none, learning_rate: 1.0e+6, momentum: 0.9}
  - {placement: input, input_rate: 0.2, learning_rate: 0.05, momentum: 0.9}
""")
    done = run("search", sweep)
    assert "3 of 3 trials finished" in done.stdout  # the sweep went on after the failure
    table = run("report", "--study", "diverge").stdout
    assert "Failed trials" in table
    assert re.search(r"\n\s*1\s+loss became (NaN|infinite) at epoch \d+, fold \d+", table), table
    data = json.loads(run("report", "--study", "diverge", "--format", "json").stdout)
    states = {t["number"]: t["state"] for t in data["trials"]}
    assert states == {0: "COMPLETE", 1: "FAIL", 2: "COMPLETE"}


# ----------------------------------------------------------------------------- hardening (issue 10, item 8)


@pytest.mark.parametrize("name,problem", [("", "must not be empty"), ("  ", "must not be empty"),
                                          ("a\nb", "control characters"),
                                          ("x\x1b[31m", "control characters")])
def test_an_empty_or_control_character_study_name_is_refused(in_tmp, name, problem):
    for args in (["search", SONAR_SWEEP, *FAST, "--study", name], ["report", "--study", name],
                 ["confirm", "--study", name], ["export", "--study", name, "-o", "x.yaml"]):
        one_line_error(run(*args, ok=False), "--study", problem)
    assert not (in_tmp / "results").exists()


def test_a_control_character_in_the_sweeps_name_is_refused(in_tmp):
    sweep = in_tmp / "s.yaml"
    sweep.write_text('name: "sonar\\nfake row"\n')
    one_line_error(run("validate", str(sweep), "--no-data", ok=False), "s.yaml: line 1: name",
                   "control characters")


@pytest.mark.slow
def test_every_printed_command_is_quoted_for_the_shell(in_tmp):
    name = "$(touch pwned) it's"
    searched = run("search", SONAR_SWEEP, *FAST, "--trials", "1", "--study", name)
    hint = searched.stdout.split("See: ")[1].splitlines()[0].strip()
    assert hint == "dropsweep report --study '$(touch pwned) it'\"'\"'s'", hint
    # the answer that follows suggests its next command quoted alike
    assert "Next: dropsweep confirm --study '$(touch pwned) it'\"'\"'s'" in searched.stdout
    # the printed command, pasted into a shell, runs the report and nothing else
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    shell = subprocess.run(["bash", "-c", hint.replace("dropsweep", f"{sys.executable} -m "
                                                       "dropsweep", 1)],
                           cwd=in_tmp, capture_output=True, text=True, env=env, timeout=120)
    assert shell.returncode == 0, shell.stderr
    assert not (in_tmp / "pwned").exists()
    exported = run("export", "--study", name, "-o", "my best.yaml")
    assert "run it with: dropsweep search 'my best.yaml'" in exported.stdout
    other = run("search", SONAR_SWEEP, *FAST, "--trials", "1", "--storage",
                "sqlite:///other dir/x.db")
    assert "See: dropsweep report --storage 'sqlite:///other dir/x.db' --study sonar" \
        in other.stdout


def test_confirm_on_a_mistyped_storage_creates_nothing(in_tmp):
    missing = in_tmp / "typo" / "x.db"
    one_line_error(run("confirm", "--storage", f"sqlite:///{missing}", ok=False),
                   "no storage at", str(missing))
    assert not missing.parent.exists()


@pytest.mark.parametrize("command", [["report"], ["studies"], ["confirm"],
                                     ["export", "-o", "x.yaml"], ["search", SONAR_SWEEP]])
def test_a_file_that_is_not_sqlite_is_named_as_such(in_tmp, command):
    notes = in_tmp / "notes.txt"
    notes.write_text("my notes, not a database\n" * 50)
    before = notes.read_bytes()
    line = one_line_error(run(*command, "--storage", f"sqlite:///{notes}", ok=False),
                          "not an SQLite database", str(notes))
    assert "max length" not in line
    assert notes.read_bytes() == before


# ----------------------------------------------------------------------------- example sweeps (issue 11, item 6)


def using(name: str) -> str:
    from dropsweep.sweep.examples import example_path

    return f"using the example sweep {example_path(name)} (dropsweep init {name} copies it here to edit)"


@pytest.mark.parametrize("given", ["sonar.yaml", "sonar"])
def test_a_bare_name_is_the_packaged_example_from_any_directory(in_tmp, given):
    result = run("validate", given, "--no-data")
    assert result.stdout.startswith("name: sonar\n")
    assert result.stderr.splitlines() == [using("sonar")]


def test_search_by_name_makes_the_study_the_repositorys_file_resumes(in_tmp):
    first = run("search", "sonar.yaml", *FAST, "--trials", "1")
    assert using("sonar") in first.stderr.splitlines()
    assert "1 of 1 trials finished (1 run now)" in first.stdout
    again = run("search", SONAR_SWEEP, *FAST, "--trials", "1")  # the same stored sweep
    assert "already has 1 finished trials" in again.stdout and "nothing to run" in again.stdout
    assert "using the example sweep" not in again.stderr


def test_a_file_here_is_used_not_the_example(in_tmp):
    (in_tmp / "sonar.yaml").write_text("name: mine\n")
    result = run("validate", "sonar.yaml", "--no-data")
    assert result.stdout.startswith("name: mine\n") and result.stderr == ""


@pytest.mark.parametrize("command", ["search", "validate"])
def test_an_unknown_name_is_one_line_naming_the_examples(in_tmp, command):
    one_line_error(run(command, "nope.yaml", ok=False),
                   "Error: nope.yaml: no such sweep file, nor an example sweep of that name "
                   "(the examples: brownlee, cifar10, digits, digits-cnn, fashion-mnist, sonar)")
    assert list(in_tmp.iterdir()) == []


def test_the_readmes_path_outside_a_checkout_says_what_works(in_tmp):
    one_line_error(run("search", "sweeps/sonar.yaml", ok=False),
                   "sweeps/sonar.yaml: no such sweep file", "dropsweep search sonar.yaml")


def test_init_copies_an_example_here_and_never_overwrites(in_tmp):
    from dropsweep.sweep.examples import example_path

    result = run("init")
    assert result.stdout == ("wrote sonar.yaml, a copy of the example sweep sonar; edit it, "
                             "then run: dropsweep search sonar.yaml\n")
    assert (in_tmp / "sonar.yaml").read_bytes() == example_path("sonar").read_bytes()
    assert run("validate", "sonar.yaml", "--no-data").stderr == ""  # the copy, now

    (in_tmp / "sonar.yaml").write_text("name: edited\n")
    one_line_error(run("init", "sonar", ok=False), "Error: sonar.yaml: already exists; not "
                   "overwritten (remove it, or give another file with -o)")
    assert (in_tmp / "sonar.yaml").read_text() == "name: edited\n"

    other = run("init", "brownlee.yaml", "-o", "my sweep.yaml")
    assert other.stdout.strip().endswith("dropsweep search 'my sweep.yaml'")
    assert (in_tmp / "my sweep.yaml").read_bytes() == example_path("brownlee").read_bytes()


def test_init_of_an_unknown_example_is_one_line(in_tmp):
    one_line_error(run("init", "nope", ok=False),
                   "Error: nope: no example sweep of that name (the examples: brownlee, cifar10, digits, digits-cnn, fashion-mnist, sonar)")
    assert list(in_tmp.iterdir()) == []


# ---------------------------------------------------------------- rows changed under a study


ROWS_SWEEP = """name: rows
data: {DATA}
model: {hidden: [4]}
train: {epochs: 2, batch_size: 16, eval_every: 1}
eval: {protocol: holdout, validation: 0.25, test: 0.2}
cv: {seed: 3}
search: {trials: 2, sampler: random, seed: 0, pruner: none}
space: {placement: [none, input], input_rate: {low: 0.1, high: 0.3}}
"""
ROWS_COMMANDS = {
    "search": ["search", "rows.yaml", "--trials", "3"],  # a resume
    "confirm": ["confirm", "--study", "rows", "--top", "1", "--repeats", "2"],
    "test": ["test", "--study", "rows", "--repeats", "2"],
    "export": ["export", "--study", "rows", "-o", "e.yaml", "--model", "e.pt"],
}


def _rows_file(tmp: Path, kind: str, change: str | None = None) -> Path:
    """60 rows of 4x4 8-bit pixels in 3 balanced classes, as an npz or a CSV; ``change``
    "pixels" adds 1 to every row's first value, "labels" moves every row to the next class,
    "rows" drops the last six."""
    import numpy as np

    x = np.random.default_rng(0).integers(0, 200, (60, 4, 4)).astype(np.uint8)
    y = np.arange(60) % 3
    if change == "pixels":
        x[:, 0, 0] += 1
    elif change == "labels":
        y = (y + 1) % 3
    elif change == "rows":
        x, y = x[:-6], y[:-6]
    if kind == "npz":
        path = tmp / "d.npz"
        np.savez(path, x=x, y=y)
    else:
        path = tmp / "d.csv"
        path.write_text("".join(",".join(map(str, [*row.ravel(), label])) + "\n"
                                for row, label in zip(x, y)))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["npz", "csv"])
@pytest.mark.parametrize("change", ["pixels", "labels", "rows"])
def test_rows_changed_under_a_study_are_refused_by_every_command(tmp_path, monkeypatch, kind,
                                                                  change):
    """Resume, confirm, test and export refuse a data file whose rows changed since the
    search (one line naming the file, exit 2, before anything trains or is written); the
    file restored, each works."""
    monkeypatch.chdir(tmp_path)
    path = _rows_file(tmp_path, kind)
    (tmp_path / "rows.yaml").write_text(ROWS_SWEEP.replace("{DATA}", f"{{{kind}: {path.name}}}"))
    run("search", "rows.yaml")
    db = sqlite3.connect(tmp_path / "results" / "dropsweep.db")
    trials = db.execute("select count(*) from trials").fetchone()[0]
    _rows_file(tmp_path, kind, change)
    for name, command in ROWS_COMMANDS.items():
        SUITE["hostile data files"] += 1
        line = one_line_error(run(*command, ok=False), "its rows differ from those study "
                              "'rows' was searched on", "restore the file")
        # named as the sweep names it: relative to its (relative) sweep file, here
        assert line.startswith(f"Error: {path.name}: ") and line.count(path.name) == 1, line
        said = {"pixels": "the same labels, other values in its 48 rows",
                "labels": "other labels on its 48 rows",
                "rows": "48 rows of 16 features then, 43 of 16 now"}[change]
        assert f"({said})" in line, line
    assert db.execute("select count(*) from trials").fetchone()[0] == trials  # nothing ran
    assert not (tmp_path / "e.pt").exists() and not (tmp_path / "e.yaml").exists()
    _rows_file(tmp_path, kind)  # restored: the same rows, so every command works
    for command in ROWS_COMMANDS.values():
        run(*command)
    assert (tmp_path / "e.pt").exists()


def test_a_study_made_before_rows_were_recorded_records_them_at_its_next_use(tmp_path,
                                                                             monkeypatch):
    """An older dropsweep recorded no fingerprint: the next command records the rows it
    finds (saying so once), and from then on other rows are refused."""
    from dropsweep.study.runner import open_search
    from dropsweep.sweep.file import load_sweep
    from dropsweep.sweep.config import build_sweep

    monkeypatch.chdir(tmp_path)
    path = _rows_file(tmp_path, "npz")
    (tmp_path / "rows.yaml").write_text(ROWS_SWEEP.replace("{DATA}", "{npz: d.npz}"))
    open_search(build_sweep(load_sweep(tmp_path / "rows.yaml")),
                storage_url="sqlite:///results/dropsweep.db")  # as an older dropsweep did
    first = run("search", "rows.yaml")
    assert first.stderr.count("recorded no fingerprint of its rows") == 1, first.stderr
    assert f"recorded now from {path.name}" in first.stderr
    again = run("search", "rows.yaml", "--trials", "3")
    assert "fingerprint" not in again.stderr
    _rows_file(tmp_path, "npz", "pixels")
    one_line_error(run("confirm", "--study", "rows", "--repeats", "2", ok=False),
                   f"{path.name}: its rows differ")


def test_a_built_in_set_whose_rows_changed_is_refused_too(tmp_path, monkeypatch):
    """The built-in sets go through the same check: digits from another scikit-learn whose
    pixels differ is not the set the study searched."""
    from dropsweep.data import images

    monkeypatch.chdir(tmp_path)
    (tmp_path / "dig.yaml").write_text(
        ROWS_SWEEP.replace("{DATA}", "{dataset: digits}").replace("name: rows", "name: dig"))
    run("search", "dig.yaml")
    real = images.load_digits

    def other_digits():
        got = real()
        got.x_train[:, 0, 0, 0] += 1
        return got

    monkeypatch.setattr(images, "load_digits", other_digits)
    SUITE["hostile data files"] += 1
    one_line_error(run("test", "--study", "dig", "--repeats", "2", ok=False),
                   "digits", "its rows differ from those study 'dig' was searched on")


# ----------------------------------------------------------------------------- conventions (issue 26, item 7)


def test_storage_takes_a_plain_path_as_its_sqlite_file(in_tmp):
    """``--storage results.db`` is ``sqlite:///results.db``: the search writes that file (and
    nothing under results/), the command it suggests works, and either spelling reads it."""
    import shlex

    searched = run("search", SONAR_SWEEP, *FAST, "--trials", "1", "--storage", "results.db")
    assert (in_tmp / "results.db").is_file() and not (in_tmp / "results").exists()
    hint = re.search(r"See: (dropsweep report .*)$", searched.stdout, re.M).group(1)
    assert hint == "dropsweep report --storage sqlite:///results.db --study sonar"
    assert "sonar" in run(*shlex.split(hint)[1:]).stdout  # the printed command, as printed
    for spelling in ("results.db", "./results.db", f"{in_tmp}/results.db",
                     f"sqlite:///{in_tmp}/results.db"):
        assert "sonar" in run("studies", "--storage", spelling).stdout, spelling
    # a path in a directory that does not exist yet: made by a writer, refused to a reader
    deep = in_tmp / "runs" / "x" / "study.db"
    one_line_error(run("report", "--storage", str(deep), ok=False), "no storage at", str(deep))
    assert not (in_tmp / "runs").exists()
    run("search", SONAR_SWEEP, *FAST, "--trials", "1", "--storage", str(deep))
    assert deep.is_file()


def test_workers_are_given_the_storage_as_a_url(in_tmp, monkeypatch):
    """Normalised once, where the option is read: every worker's command names the same URL
    (the checkpoints' owner and the study's identity key on its spelling)."""
    from dropsweep.study import workers
    from dropsweep.study.workers import WorkerArgs

    seen: list = []

    class Started(Exception):
        pass

    def run_workers(args, stop, watch):
        seen.extend(args)
        raise Started

    monkeypatch.setattr(workers, "run_workers", run_workers)
    result = run("search", SONAR_SWEEP, *FAST, "--trials", "2", "--workers", "2", "--device",
                 "cpu", "--storage", "results.db", ok=False)
    assert isinstance(result.exception, Started), (result.exit_code, result.stderr)
    assert len(seen) == 2
    for worker in seen:
        command = worker.command()
        told = WorkerArgs.from_json(command[command.index("--worker-options") + 1])
        assert told.storage == "sqlite:///results.db", command


@pytest.mark.parametrize(("given", "parts"), [
    ("sqlite:results.db", ["not a storage URL", "sqlite:///PATH", "the file's path"]),
    ("sqlite//results.db", ["no storage at"]),  # a plain (odd) path: read-only, nothing made
    ("nosuchdb://u@host/db", ["unknown database 'nosuchdb'", "sqlite:///PATH"]),
    ("postgresql://u@host:notaport/db", ["not a storage URL", "'notaport'", "sqlite:///PATH"]),
])
def test_a_storage_that_is_no_url_names_how_to_write_one(in_tmp, given, parts):
    for command in (["report"], ["studies"], ["export", "-o", "x.yaml"], ["confirm"]):
        line = one_line_error(run(*command, "--storage", given, ok=False), *parts)
        assert "Could not parse" not in line and "Traceback" not in line
    assert sorted(p.name for p in in_tmp.iterdir()) == []


def test_init_into_a_directory_makes_it(in_tmp):
    made = run("init", "brownlee", "-o", "experiments/")
    assert "wrote experiments/brownlee.yaml" in made.stdout
    assert (in_tmp / "experiments" / "brownlee.yaml").is_file()
    run("init", "-o", "a/b/mine.yaml")
    assert (in_tmp / "a" / "b" / "mine.yaml").is_file()
    run("init", "-o", "experiments")  # an existing directory: the example under its own name
    assert (in_tmp / "experiments" / "sonar.yaml").is_file()
    (in_tmp / "experiments" / "sonar.yaml").write_text("name: mine\n")
    one_line_error(run("init", "-o", "experiments/", ok=False), "experiments/sonar.yaml",
                   "already exists; not overwritten")
    assert (in_tmp / "experiments" / "sonar.yaml").read_text() == "name: mine\n"
    (in_tmp / "notes").write_text("a file\n")
    one_line_error(run("init", "-o", "notes/", ok=False), "notes/sonar.yaml",
                   "cannot create its directory: notes is a file")


def test_a_tab_in_the_sweep_file_says_to_indent_with_spaces(in_tmp):
    (in_tmp / "tabs.yaml").write_text("name: tabs\ntrain:\n\tepochs: 3\n")
    line = one_line_error(run("validate", "tabs.yaml", ok=False))
    assert line == ("Error: tabs.yaml: line 3: invalid YAML: a tab (column 1): indent with "
                    "spaces, not tabs"), line


# What each option's --help says it does when it is not given, as the code does it:
# (command, option) -> the words after "default: " ("*": every command that takes it).
# An option that says nothing of a default, or shows click's own [default: X] of a value the
# command really uses as given, is not listed.
def _stated_defaults() -> dict[tuple[str, str], str]:
    from dropsweep.records import DEFAULT_STORAGE
    from dropsweep.study import testset
    from dropsweep.study.runner import AUTO_BATCH
    from dropsweep.sweep.config import Sweep
    from dropsweep.train.checkpoints import DEFAULT_EVERY

    stored = "the most recently updated study in the storage"
    stated = {
        ("*", "--storage"): DEFAULT_STORAGE,
        ("search", "--study"): f"the sweep's name key, else '{Sweep.name}'",
        ("run", "--study"): f"the sweep's name key, else '{Sweep.name}'",
        ("report", "--study"): stored, ("confirm", "--study"): stored,
        ("test", "--study"): stored, ("export", "--study"): stored,
        ("*", "--trials"): "the sweep's search.trials",
        ("*", "--batch"): str(AUTO_BATCH),
        ("search", "--threads"): "PyTorch's own count, shared among the workers",
        ("run", "--threads"): "PyTorch's own count, shared among the workers",
        ("confirm", "--threads"): "PyTorch's own count",
        ("test", "--threads"): "PyTorch's own count",
        ("*", "--checkpoint-every"): f"{DEFAULT_EVERY:g}",
        ("*", "--checkpoints"): "the one the study recorded, else checkpoints beside an "
                                "SQLite storage's file, results/checkpoints here for a server",
        ("test", "--repeats"): f"{testset.DEFAULT_REPEATS}, or as many as a stored result has",
        ("export", "--trial"): "the best complete one",
        ("init", "--output"): "NAME.yaml here",
    }
    return stated


def _claims(text: str) -> list[str]:
    return [" ".join(c.split()) for c in re.findall(r"default: ([^;)\]]*)", text)]


def test_every_help_states_the_defaults_the_commands_really_have():
    import click

    stated = _stated_defaults()
    checked = set()
    for name, command in main.commands.items():
        ctx = click.Context(command, info_name=name)
        for param in command.params:
            if not isinstance(param, click.Option) or param.hidden or param.name == "help":
                continue
            option = max(param.opts, key=len)
            key = (name, option) if (name, option) in stated else ("*", option)
            expected = stated.get(key)
            if key in stated:
                checked.add(key)
            elif param.show_default:  # click's own [default: X]: the value the command gets
                if param.is_flag and param.secondary_opts:  # --data/--no-data: the flag's name
                    expected = (param.opts if param.default else
                                param.secondary_opts)[0].lstrip("-")
                else:
                    expected = str(param.default)
            record = param.get_help_record(ctx)
            text = record[1] if record else ""
            assert _claims(text) == ([] if expected is None else [expected]), \
                (name, option, text)
        # a command's own text states its arguments' defaults the same way
        for param in command.params:
            if isinstance(param, click.Argument) and isinstance(param.default, str):
                assert f"default: {param.default})" in command.help, (name, param.name)
    assert checked == set(stated), set(stated) - checked  # no stale entry
    # the --study every command takes says what it is without one
    for name in ("search", "run", "report", "confirm", "test", "export"):
        assert (name, "--study") in checked


def test_the_default_study_is_the_one_the_help_names(in_tmp, monkeypatch):
    """report, confirm, test and export without --study take the most recently updated
    study; search names its study after the sweep."""
    from dropsweep.study import confirm, testset

    run("search", SONAR_SWEEP, *FAST, "--trials", "1", "--study", "older")
    run("search", SONAR_SWEEP, *FAST, "--trials", "1", "--study", "newer")
    assert json.loads(run("report", "--format", "json").stdout)["study"]["name"] == "newer"
    assert "study 'newer'" in run("export", "-o", "x.yaml").stdout
    run("search", SONAR_SWEEP, *FAST, "--trials", "2", "--study", "older")  # updated last
    assert json.loads(run("report", "--format", "json").stdout)["study"]["name"] == "older"

    class Reached(Exception):
        pass

    def reached(study, *args, **kwargs):
        raise Reached(study.study_name)

    monkeypatch.setattr(confirm, "run_confirm", reached)
    monkeypatch.setattr(testset, "run_test", reached)
    for command in ("confirm", "test"):
        result = run(command, "--repeats", "2", ok=False)
        assert isinstance(result.exception, Reached), (command, result.stderr)
        assert str(result.exception) == "older"
    assert "Study 'sonar'" in run("search", SONAR_SWEEP, *FAST, "--trials", "1").stdout


def test_the_checkpoints_default_is_where_the_help_says():
    from dropsweep.study.checkpoint_dirs import default_checkpoints

    assert default_checkpoints("sqlite:////tmp/x/study.db") == Path("/tmp/x/checkpoints")
    assert default_checkpoints("sqlite:///results/dropsweep.db") == \
        Path.cwd() / "results" / "checkpoints"
    assert default_checkpoints("postgresql://u@h/db") == Path.cwd() / "results" / "checkpoints"


def test_the_help_lists_the_examples_that_ship():
    from dropsweep.sweep.examples import example_names

    listed = f"({','.join(example_names())}"
    for command in ("search", "run", "init"):
        text = "".join(run(command, "--help").stdout.split())  # click wraps at a hyphen too
        assert listed in text, (command, text)
        assert "(sonar,brownlee)" not in text


def test_a_ctrl_c_that_lands_in_a_finalizer_prints_nothing_once_a_stop_is_asked(monkeypatch):
    """A second Ctrl-C raises KeyboardInterrupt where it lands; in a finalizer (a weakref's
    callback, a __del__) Python cannot raise it and printed "Exception ignored" and a
    traceback (CI, confirm under two Ctrl-C). Once a stop is asked it is dropped silently;
    before one, and for any other exception, Python's own report (the hook before) stands."""
    import gc

    from dropsweep.study.stop import StopFlag, stop_on_signals

    reported: list[BaseException] = []

    def python_report(info) -> None:
        reported.append(info.exc_value)

    monkeypatch.setattr(sys, "unraisablehook", python_report)

    class Finalized:
        def __init__(self, error: BaseException) -> None:
            self.error = error

        def __del__(self) -> None:
            raise self.error

    def finalize(error: BaseException) -> list[str]:
        reported.clear()
        Finalized(error)
        gc.collect()
        return [type(e).__name__ for e in reported]

    with stop_on_signals(StopFlag()) as stop:
        assert finalize(KeyboardInterrupt()) == ["KeyboardInterrupt"]  # no stop asked yet
        stop.signal = signal.SIGINT
        assert finalize(KeyboardInterrupt()) == []
        assert finalize(ValueError("not ours")) == ["ValueError"]
    assert sys.unraisablehook is python_report
