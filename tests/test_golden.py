"""Golden tests: what a user sees and what is stored, pinned before the seams of issue 11 move
anything (a declarative space, model families, shared steps).

A small fixed Sonar study — 16 trials of `sweeps/sonar.yaml` at 4 epochs, 3 folds, batches
of 4, seed 0, on the C kernel: all four placements (the old study below also has a trial pruned) — is run with today's code and compared with `tests/golden/`:
every trial's state, params, distributions, user attributes and intermediate values, and the
whole `report --format json`. Only what cannot repeat is left out (times, durations, dates);
floats are compared to 1e-6 relative (the kernel is compiled for the CPU it runs on).
`tests/golden/sonar-small.db` is that study as the code before issue 11 stored it (schema 1:
no model family, no schema version): it must keep reporting exactly the same, and resume. It
is never regenerated: it stands for the studies users already have. Since issue 25 the
sampler is reseeded for every trial, so a study made today proposes other points than that
one did: what it stores and reports is pinned in `sonar-small.stored.json` and
`sonar-small.report.json` (the golden files as they were before issue 25; the report
regenerated with the others, for a change of the report alone).

Regenerate only for a change you can name and explain in the commit:
    DROPSWEEP_REGENERATE_GOLDEN=1 DROPSWEEP_DATA_DIR=../shared/data \
        python -m pytest tests/test_golden.py
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner

from conftest import SONAR_DIR
from dropsweep import records
from dropsweep.families.mlp import kernel
from dropsweep.cli import main
from dropsweep.study.open import normalised

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "golden"
SWEEP = str(REPO / "sweeps" / "sonar.yaml")
# search.balance none: the example sweep balances its placements since issue 12; these
# files pin the search as the sampler alone runs it (tests/test_balance.py pins balance)
ARGS = ["--set", "train.epochs=4", "--set", "train.eval_every=2", "--set", "cv.folds=3",
        "--set", "search.balance=none",
        "--trials", "16", "--batch", "4", "--device", "cpu", "--threads", "1"]
REGENERATE = os.environ.get("DROPSWEEP_REGENERATE_GOLDEN") == "1"
# What cannot repeat from one run to the next: clock times and durations.
VOLATILE = {"wall_time", "total_wall_time", "first_start", "last_update", "datetime_start",
            "datetime_complete", "enqueued_at"}

pytestmark = pytest.mark.skipif(
    kernel.load() is None, reason="the golden values are the C kernel's dropout masks; the "
    f"kernel cannot be used here ({kernel.unavailable()})")


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def stored(db: Path) -> list[dict[str, Any]]:
    """Every trial as the storage holds it, through Optuna's own reader."""
    study = optuna.load_study(study_name="sonar", storage=f"sqlite:///{db}")
    return _strip([{
        "number": t.number, "state": t.state.name, "params": t.params,
        "distributions": {k: optuna.distributions.distribution_to_json(d)
                          for k, d in sorted(t.distributions.items())},
        "user_attrs": t.user_attrs,
        "intermediate_values": {str(k): v for k, v in sorted(t.intermediate_values.items())},
        "value": t.value,
    } for t in study.get_trials(deepcopy=False)]) + [_strip({
        # the study's id is random (issue 24: its checkpoints are bound to it)
        "study_user_attrs": {k: _here_free(k, v) for k, v in study.user_attrs.items()
                             if k not in ("dropsweep_version", "torch_version", "sweep_file",
                                          records.STUDY_UID)},
    })]


def _here_free(key: str, value: Any) -> Any:
    """A study attribute without this machine's paths: the rows' record names its file."""
    if key == records.DATA_ROWS and isinstance(value, dict):
        return {k: v for k, v in value.items() if k != "file"}
    return value


def reported(db: Path) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["report", "--storage", f"sqlite:///{db}", "--format",
                                       "json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    # the command the answer suggests names this run's storage, a temporary file
    return _strip(json.loads(result.stdout.replace(f"sqlite:///{db}", "sqlite:///STUDY.db")))


def assert_same(got: Any, want: Any, where: str = "") -> None:
    """Equal, floats to 1e-6 relative; the first difference is named by its path."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), \
            f"{where}: keys {sorted(got) if isinstance(got, dict) else got} != {sorted(want)}"
        for k in want:
            assert_same(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got} != {want}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert isinstance(got, (int, float)) and (
            math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9)
            or (math.isnan(got) and math.isnan(want))), f"{where}: {got} != {want}"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def _golden(name: str, value: Any) -> Any:
    path = GOLDEN / name
    if REGENERATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(value, indent=1, sort_keys=True) + "\n")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small study, run now with today's code."""
    if not (SONAR_DIR / "sonar.csv").exists():
        pytest.skip(f"the real Sonar file is not at {SONAR_DIR} (set DROPSWEEP_DATA_DIR)")
    where = tmp_path_factory.mktemp("golden")
    db = where / "sonar-small.db"
    with pytest.MonkeyPatch.context() as mp:  # module-wide: before the per-test environment
        mp.setenv("DROPSWEEP_DATA_DIR", str(SONAR_DIR))
        mp.setenv("DROPSWEEP_CACHE_DIR", str(where / "cache"))
        mp.chdir(where)
        result = CliRunner().invoke(main, ["search", SWEEP, *ARGS, "--storage",
                                           f"sqlite:///{db}", "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return db


def test_what_is_stored_is_unchanged(fresh, sonar_dir):
    assert_same(stored(fresh), _golden("stored.json", stored(fresh)))


def test_what_the_report_says_is_unchanged(fresh, sonar_dir):
    assert_same(reported(fresh), _golden("report.json", reported(fresh)))


def test_a_study_stored_before_issue_11_reports_the_same_and_resumes(tmp_path, sonar_dir):
    db = tmp_path / "old.db"
    shutil.copy(GOLDEN / "sonar-small.db", db)
    golden = json.loads((GOLDEN / "sonar-small.stored.json").read_text())
    old = stored(db)
    # `batch` (a trial's batch, for checkpoints) came with issue 13: older trials have none
    for trial in golden[:16]:
        trial["user_attrs"].pop(records.BATCH, None)
    assert_same(old[:16], golden[:16])  # the same trials, stored the same way
    # schema 1: no version, no model family; today's code reads it as the same experiment
    attrs = old[16]["study_user_attrs"]
    assert records.STUDY_SCHEMA not in attrs and "family" not in attrs["dropsweep_sweep"]["model"]
    assert_same(normalised(attrs["dropsweep_sweep"]),
                golden[16]["study_user_attrs"]["dropsweep_sweep"])
    assert_same(reported(db), _golden("sonar-small.report.json", reported(db)))
    more = CliRunner().invoke(main, ["search", SWEEP, *ARGS, "--trials", "18", "--storage",
                                     f"sqlite:///{db}", "-q"], catch_exceptions=False)
    assert more.exit_code == 0, more.stderr
    assert "18 of 18 trials finished (2 run now)" in more.stdout
    resumed = stored(db)
    assert_same(resumed[:16], golden[:16])
    # what the old study recorded is untouched; it gains the fingerprint of its rows (issue
    # 24: recorded at its first use since), the same as a study made today on the same file
    now = resumed[-1]["study_user_attrs"]
    assert now.pop(records.DATA_ROWS) == golden[16]["study_user_attrs"][records.DATA_ROWS]
    assert now == attrs
