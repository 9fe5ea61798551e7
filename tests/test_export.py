"""``dropsweep export``: a sweep file that re-runs exactly one trial, and weights that
``torch.load(..., weights_only=True)`` reads into a plain ``nn.Sequential``."""

from __future__ import annotations

import optuna
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from dropsweep.cli import main
from dropsweep.sweep.config import build_sweep
from dropsweep.data.dataset import load_dataset
from dropsweep.sweep.file import load_sweep

from test_cli import FAST, SONAR_SWEEP, in_tmp  # noqa: F401 - fixture


def run(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.stderr + result.stdout
    return result


@pytest.mark.slow
def test_an_exported_trial_runs_again_with_the_same_configuration(in_tmp):  # noqa: F811
    run("search", SONAR_SWEEP, *FAST, "--trials", "4")
    study = optuna.load_study(study_name="sonar", storage="sqlite:///results/dropsweep.db")
    best = max((t for t in study.trials if t.value is not None), key=lambda t: t.value)
    run("export", "-o", "out/best.yaml")  # the best trial by default
    sweep = build_sweep(load_sweep(in_tmp / "out" / "best.yaml"))
    assert sweep.configs is not None and len(sweep.configs) == 1
    assert sweep.configs[0].to_dict() == best.user_attrs["config"]
    assert (sweep.train.epochs, sweep.cv.folds, sweep.cv.seed) == (6, 3, 7)

    run("search", "out/best.yaml")
    again = optuna.load_study(study_name=f"sonar-trial-{best.number}",
                              storage="sqlite:///results/dropsweep.db")
    rerun = [t for t in again.trials if t.user_attrs["config"] == best.user_attrs["config"]]
    assert len(rerun) == 1 and rerun[0].params == best.params
    assert len(again.trials) == (1 if best.number == 0 else 2)  # and the baseline


@pytest.mark.slow
def test_the_exported_weights_load_safely_into_a_plain_sequential(in_tmp):  # noqa: F811
    run("search", SONAR_SWEEP, *FAST, "--trials", "2")
    run("export", "--trial", "1", "-o", "t1.yaml", "--model", "t1.pt")
    saved = torch.load(in_tmp / "t1.pt", weights_only=True)
    study = optuna.load_study(study_name="sonar", storage="sqlite:///results/dropsweep.db")
    assert saved["config"] == study.trials[1].user_attrs["config"]
    assert saved["classes"] == ["M", "R"] and saved["hidden"] == [60, 30]
    net = nn.Sequential(nn.Linear(60, 60), nn.ReLU(), nn.Linear(60, 30), nn.ReLU(),
                        nn.Linear(30, 1))
    net.load_state_dict(saved["state_dict"])
    data = load_dataset(build_sweep(load_sweep(SONAR_SWEEP)))
    x = (torch.from_numpy(data.X) - saved["mean"]) / saved["scale"]
    with torch.no_grad():
        predicted = (net(x).squeeze(-1) > 0).long()
    accuracy = float((predicted == torch.from_numpy(data.y)).float().mean())
    assert accuracy == pytest.approx(saved["train_accuracy"], abs=1e-6)
    assert accuracy > 0.7  # six epochs on all 208 rows: well above chance


def test_export_mistakes_are_one_line(in_tmp):  # noqa: F811
    run("search", SONAR_SWEEP, *FAST, "--trials", "2")
    result = CliRunner().invoke(main, ["export", "--trial", "99", "-o", "x.yaml"])
    assert result.exit_code == 2 and "--trial 99" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (in_tmp / "x.yaml").exists()
