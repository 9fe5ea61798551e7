"""A batch's memory, estimated before anything is written (issue 10, item 6)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dropsweep.train import memory
from dropsweep.cli import main
from dropsweep.errors import DropsweepError
from dropsweep.train.memory import Need, fit_batch, trial_need

REPO = Path(__file__).resolve().parents[1]
SONAR_SWEEP = str(REPO / "sweeps" / "sonar.yaml")
TINY = ["--set", "train.epochs=2", "--set", "train.eval_every=1", "--set", "cv.folds=3"]


def test_a_trials_need_from_the_formula():
    # Brownlee's 60 -> 60 -> 30 -> 1: 60*60+60 + 60*30+30 + 30*1+1 = 5521 parameters a model
    need = trial_need([60, 60, 30, 1], folds=10, max_rows=208)
    assert need.parameters == 10 * 5521 * 5 * 4
    assert need.activations == 10 * 208 * 2 * 60 * 4
    assert need.inputs == 10 * 208 * 60 * 4
    assert need.total == need.parameters + need.activations + need.inputs


def test_a_batch_shrinks_to_what_fits_and_a_trial_that_cannot_fit_is_one_line():
    need = Need(parameters=900, activations=60, inputs=40)
    assert fit_batch(need, 16, 100_000, file="s.yaml", device="cpu") == 16
    assert fit_batch(need, 16, 5_000, file="s.yaml", device="cpu") == 4  # 80% of 5,000
    assert fit_batch(need, 16, None, file="s.yaml", device="cpu") == 16  # cannot tell
    with pytest.raises(DropsweepError) as err:
        fit_batch(Need(parameters=480 * 10**9, activations=10**6, inputs=0,
                       network_key="model.hidden"), 16, 23 * 10**9,
                  file="s.yaml", device="cpu")
    assert str(err.value) == (
        "s.yaml: model.hidden: one trial needs about 480 GB of memory to train (480 GB for "
        "the network's parameters, 1 MB for its rows and activations) and cpu has 23 GB "
        "available: make the network smaller")
    with pytest.raises(DropsweepError, match=r"^s.yaml: data: .*use fewer rows"):
        fit_batch(Need(parameters=10, activations=10, inputs=10**12), 1, 10**9, file="s.yaml",
                  device="cpu")


def test_sizes_read_at_a_glance():
    assert [memory.gigabytes(n) for n in (2.9e12, 480e9, 23.8e9, 1e6, 3e3)] == [
        "2.9 TB", "480 GB", "23.8 GB", "1 MB", "0.003 MB"]


def test_the_memory_this_machine_has_is_read():
    free = memory.available(torch.device("cpu"))
    assert free is not None and 10**8 < free < 10**14


def test_a_network_no_machine_holds_is_refused_before_anything_is_written(tmp_path, monkeypatch,
                                                                          sonar_dir):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["search", SONAR_SWEEP, *TINY, "--set",
                                       "model.hidden=[100000000]"])
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "sonar.yaml: model.hidden: one trial needs about" in lines[0]
    assert "available: make the network smaller" in lines[0]
    assert not (tmp_path / "results").exists()  # no study, no failed trials


def test_a_batch_too_big_for_the_memory_trains_fewer_at_once(tmp_path, monkeypatch, sonar_dir):
    monkeypatch.chdir(tmp_path)
    one = trial_need([60, 60, 30, 1], folds=3, max_rows=208).total
    monkeypatch.setattr(memory, "available", lambda device: int(2.5 * one / 0.8))
    result = CliRunner().invoke(main, ["search", SONAR_SWEEP, *TINY, "--trials", "5"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert "note: training 2 trials at a time, not 16: more would not fit in memory" \
        in result.stderr
    assert "5 of 5 trials finished" in result.stdout


def test_each_gpu_shares_its_own_memory_among_its_own_workers(monkeypatch):
    """Three workers on two GPUs: the two on cuda:0 share its memory; cuda:1's one has all
    of its own (monkeypatched: this machine has no GPU)."""
    from dropsweep.sweep.config import build_sweep
    from dropsweep.data.dataset import Dataset
    from dropsweep.study.memory_fit import batch_that_fits, worker_batches
    from dropsweep.sweep.file import apply_overrides, load_sweep

    sweep = build_sweep(apply_overrides(load_sweep(SONAR_SWEEP), ("cv.folds=3",)))
    dataset = Dataset(X=np.zeros((208, 60), np.float32), y=np.zeros(208, np.int64),
                      classes=("M", "R"), name="zeros", source="zeros",
                      feature_names=tuple(f"f{i}" for i in range(60)))
    one = sweep.family.need(sweep.sections, dataset, sweep.splits).total
    free = {"cuda:0": 10 * one, "cuda:1": 10 * one, "cpu": 10 * one}
    asked: list[str] = []

    def available(device):
        asked.append(str(device))
        return free[str(device)]

    monkeypatch.setattr(memory, "available", available)
    assert worker_batches(sweep, dataset, 16, ["cuda:0", "cuda:1", "cuda:0"]) == [4, 8, 4]
    assert sorted(asked) == ["cuda:0", "cuda:1"]  # each device asked once
    assert worker_batches(sweep, dataset, 16, ["cpu"] * 3) == [2, 2, 2]  # 8 / 3 workers
    assert worker_batches(sweep, dataset, 3, ["cuda:1"]) == [3]
    assert batch_that_fits(sweep, dataset, 16, torch.device("cuda:0"), 2) == 4
