"""Every environment variable dropsweep reads: a bad value is one line naming it, exit 2,
and nothing is written (issue 10, item 6)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from dropsweep import env
from dropsweep.cli import main
from dropsweep.errors import DropsweepError

REPO = Path(__file__).resolve().parents[1]
SONAR_SWEEP = str(REPO / "sweeps" / "sonar.yaml")
TINY = ["--set", "train.epochs=2", "--set", "train.eval_every=1", "--set", "cv.folds=3",
        "--trials", "1"]


def snapshot(db: Path) -> tuple | None:
    """Studies and trials in the storage (its write-ahead log included), read-only."""
    if not db.exists():
        return None
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return (con.execute("select study_name from studies").fetchall(),
                con.execute("select count(*) from trials").fetchone())


def test_integers_choices_and_paths(monkeypatch, tmp_path):
    monkeypatch.setenv("X", "")
    assert env.integer("X", 10, minimum=1) == 10  # empty = unset
    monkeypatch.setenv("X", " 7 ")
    assert env.integer("X", 10, minimum=1) == 7
    for bad in ("abc", "0", "1.5", "-3", "99999999"):
        monkeypatch.setenv("X", bad)
        with pytest.raises(DropsweepError) as err:
            env.integer("X", 10, minimum=1, maximum=3600, unit="seconds")
        assert str(err.value) == (f"environment variable X: must be a whole number of "
                                  f"seconds, from 1 to 3600, not {bad!r}")
    monkeypatch.setenv("X", "TORCH")
    assert env.choice("X", "c", ("c", "torch")) == "torch"
    monkeypatch.setenv("X", "gpu")
    with pytest.raises(DropsweepError, match="X: must be one of c, torch, not 'gpu'"):
        env.choice("X", "c", ("c", "torch"))
    monkeypatch.setenv("X", str(tmp_path))
    assert env.path("X") == tmp_path
    (tmp_path / "f").write_text("")
    monkeypatch.setenv("X", str(tmp_path / "f"))
    with pytest.raises(DropsweepError, match="X: must name a directory; .* is a file"):
        env.path("X")


@pytest.mark.parametrize("name,value,command", [
    ("DROPSWEEP_HEARTBEAT_SECONDS", "abc", "search"),
    ("DROPSWEEP_HEARTBEAT_SECONDS", "0", "confirm"),
    ("DROPSWEEP_STORAGE_RETRY_SECONDS", "soon", "search"),
    ("DROPSWEEP_STORAGE_RETRY_SECONDS", "-1", "report"),
    ("DROPSWEEP_DATA_DIR", "{file}", "search"),
    ("DROPSWEEP_CACHE_DIR", "{file}", "validate"),
    ("XDG_CACHE_HOME", "{file}", "validate"),
])
def test_a_bad_variable_is_one_line_naming_it(tmp_path, monkeypatch, sonar_dir, name, value,
                                              command):
    monkeypatch.chdir(tmp_path)
    if command != "search" or name != "DROPSWEEP_DATA_DIR":  # a study to confirm and report
        assert CliRunner().invoke(main, ["search", SONAR_SWEEP, *TINY]).exit_code == 0
    a_file = tmp_path / "a file"
    a_file.write_text("")
    if name == "XDG_CACHE_HOME":
        monkeypatch.delenv("DROPSWEEP_CACHE_DIR")
    if name != "DROPSWEEP_DATA_DIR":
        monkeypatch.delenv("DROPSWEEP_DATA_DIR")  # Sonar from the cache: the cache is read
        cache = tmp_path / "cache"
        (cache / "datasets").mkdir(parents=True)
        (cache / "datasets" / "sonar.csv").write_bytes((sonar_dir / "sonar.csv").read_bytes())
        if name != "DROPSWEEP_CACHE_DIR" and name != "XDG_CACHE_HOME":
            monkeypatch.setenv("DROPSWEEP_CACHE_DIR", str(cache))
    monkeypatch.setenv(name, value.format(file=a_file))
    args = {"search": ["search", SONAR_SWEEP, *TINY, "--trials", "2"],
            "confirm": ["confirm", "--top", "1", "--repeats", "2"],
            "report": ["report"], "validate": ["validate", SONAR_SWEEP]}[command]
    db = tmp_path / "results" / "dropsweep.db"
    before = snapshot(db)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"Error: environment variable {name}: must "), lines[0]
    assert snapshot(db) == before
