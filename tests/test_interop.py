"""Interoperability: a dropsweep study is a plain Optuna study.

A real ``dropsweep search`` writes the study; these tests read it back with Optuna
alone: ``optuna.load_study`` (no dropsweep code reads anything here) and Optuna's own
command line (``optuna trials``, ``optuna best-trial``, ``optuna studies``), which never
imports dropsweep. The names checked are the ones docs/storage.md's "What is stored" documents.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from conftest import SONAR_DIR
from test_cli import FAST, SONAR_SWEEP, run

pytestmark = pytest.mark.slow  # every test reads one real search on the real Sonar file

TRIALS = 4
STORAGE = "sqlite:///results/dropsweep.db"  # dropsweep's default, relative to the cwd
CHECKPOINTS = {3, 6}  # FAST: train.epochs=6, train.eval_every=3
TRIAL_ATTRS = {"fold_accuracies", "accuracy_mean", "accuracy_std", "test_log_loss",
               "train_accuracy", "epochs", "wall_time", "config", "role", "seed"}


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    """One real ``dropsweep search``, shared by every test here (only they read it)."""
    if not (SONAR_DIR / "sonar.csv").exists():
        pytest.skip(f"the real Sonar file is not at {SONAR_DIR} (set DROPSWEEP_DATA_DIR)")
    where = tmp_path_factory.mktemp("interop")
    with pytest.MonkeyPatch.context() as patch:  # module scope: no monkeypatch fixture
        patch.chdir(where)
        patch.setenv("DROPSWEEP_DATA_DIR", str(SONAR_DIR))
        patch.setenv("DROPSWEEP_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        done = run("search", SONAR_SWEEP, *FAST, "--trials", str(TRIALS))
    assert f"{TRIALS} of {TRIALS} trials finished" in done.stdout, done.stdout
    assert (where / "results" / "dropsweep.db").exists()
    return where


@pytest.fixture
def study(study_dir, monkeypatch) -> optuna.Study:
    monkeypatch.chdir(study_dir)
    return optuna.load_study(study_name="sonar", storage=STORAGE)


def optuna_cli(study_dir: Path, *args: str):
    """Optuna's own command line, as a user types it, parsed from its JSON output."""
    script = Path(sys.executable).with_name("optuna")
    if script.exists():
        command = [str(script)]
    elif shutil.which("optuna"):
        command = [shutil.which("optuna")]
    else:  # optuna 5 has no ``python -m optuna``; its console script runs this
        command = [sys.executable, "-c",
                   "import sys; from optuna.cli import main; sys.exit(main())"]
    proc = subprocess.run([*command, *args, "--storage", STORAGE, "-f", "json"], cwd=study_dir,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)


def test_load_study_finds_the_baseline_params_with_optuna_distributions(study):
    trials = study.get_trials(deepcopy=False)
    assert [t.number for t in trials] == list(range(TRIALS))
    baseline = trials[0]
    assert baseline.params == {"placement": "none", "learning_rate": 0.01, "momentum": 0.8,
                               "max_norm": None}
    assert baseline.user_attrs["role"] == "baseline"
    dist = baseline.distributions
    assert set(dist) == set(baseline.params)
    assert dist["placement"] == CategoricalDistribution(("none", "input", "hidden", "both"))
    assert dist["max_norm"] == CategoricalDistribution((None, 2.0, 3.0, 4.0, 5.0))
    assert dist["learning_rate"] == FloatDistribution(0.001, 0.3, log=True)
    assert dist["momentum"] == FloatDistribution(0.5, 0.99)
    for trial in trials[1:]:  # the sampler's trials: a rate only where the placement uses it
        assert trial.user_attrs["role"] == "search"
        placement = trial.params["placement"]
        assert ("input_rate" in trial.params) == (placement in ("input", "both"))
        assert ("hidden_rate" in trial.params) == (placement in ("hidden", "both"))
        for name in ("input_rate", "hidden_rate"):
            if name in trial.params:
                assert isinstance(trial.distributions[name], FloatDistribution)


def test_load_study_finds_every_user_attribute_and_the_checkpoints(study):
    complete = study.get_trials(deepcopy=False, states=[TrialState.COMPLETE])
    assert len(complete) == TRIALS
    seeds = set()
    for trial in complete:
        attrs = trial.user_attrs
        assert TRIAL_ATTRS <= set(attrs), sorted(TRIAL_ATTRS - set(attrs))
        folds = attrs["fold_accuracies"]
        assert len(folds) == 3 and all(0.0 <= a <= 1.0 for a in folds)
        assert attrs["accuracy_mean"] == trial.value
        assert math.isclose(attrs["accuracy_mean"], statistics.fmean(folds), rel_tol=1e-9)
        assert math.isclose(attrs["accuracy_std"], statistics.pstdev(folds), abs_tol=1e-9)
        assert attrs["epochs"] == 6
        assert attrs["role"] in ("baseline", "fixed", "search")
        assert isinstance(attrs["seed"], int)
        seeds.add(attrs["seed"])
        # the resolved configuration agrees with every param Optuna holds
        assert all(attrs["config"][name] == value for name, value in trial.params.items())
        # held-out accuracy at each checkpoint: what the pruner saw, ending at the value
        assert set(trial.intermediate_values) == CHECKPOINTS
        assert trial.intermediate_values[6] == trial.value
        assert all(0.0 <= v <= 1.0 for v in trial.intermediate_values.values())
    assert seeds  # one stream per batch: at least one seed recorded


def test_load_study_finds_the_sweep_and_the_best_trial(study):
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    sweep = study.user_attrs["dropsweep_sweep"]
    assert sweep["name"] == "sonar"
    assert sweep["train"]["epochs"] == 6 and sweep["train"]["eval_every"] == 3  # --set kept
    assert sweep["cv"]["folds"] == 3
    assert sweep["baseline"] == {"learning_rate": 0.01, "momentum": 0.8, "max_norm": None}
    assert sweep["space"]["placement"] == ["none", "input", "hidden", "both"]
    assert study.user_attrs["dropsweep_version"]
    assert study.user_attrs["torch_version"]
    assert study.user_attrs["sweep_file"] == SONAR_SWEEP
    best = study.best_trial
    assert best.value == max(t.value for t in study.trials)
    assert best.params and best.user_attrs["accuracy_mean"] == best.value
    summary = next(s for s in optuna.get_all_study_summaries(STORAGE) if s.study_name == "sonar")
    assert summary.n_trials == TRIALS and summary.best_trial.number == best.number


def test_optuna_trials_command_shows_params_and_user_attrs(study_dir, study):
    rows = optuna_cli(study_dir, "trials", "--study-name", "sonar")
    assert [row["number"] for row in rows] == list(range(TRIALS))
    by_number = {t.number: t for t in study.trials}
    for row in rows:
        trial = by_number[row["number"]]
        assert row["state"] == "COMPLETE"
        assert row["value"] == trial.value
        assert row["params"] == trial.params
        assert row["user_attrs"] == trial.user_attrs
        assert row["user_attrs"]["accuracy_mean"] == row["value"]
        assert len(row["user_attrs"]["fold_accuracies"]) == 3
    assert rows[0]["params"] == {"placement": "none", "learning_rate": 0.01, "momentum": 0.8,
                                 "max_norm": None}
    assert rows[0]["user_attrs"]["role"] == "baseline"


def test_optuna_best_trial_command_is_the_studys_best(study_dir, study):
    row = optuna_cli(study_dir, "best-trial", "--study-name", "sonar")
    best = study.best_trial
    assert row["number"] == best.number and row["value"] == best.value
    assert row["params"] == best.params
    assert row["user_attrs"] == best.user_attrs
    assert TRIAL_ATTRS <= set(row["user_attrs"])


def test_optuna_studies_command_lists_the_study_and_its_sweep(study_dir, study):
    rows = optuna_cli(study_dir, "studies")
    row = next(r for r in rows if r["name"] == "sonar")
    assert row["n_trials"] == TRIALS
    assert row["direction"] == ["MAXIMIZE"]
    assert row["user_attrs"]["dropsweep_sweep"] == study.user_attrs["dropsweep_sweep"]
