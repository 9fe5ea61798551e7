"""Wall-clock time of ``dropsweep report`` on a 10,000-trial study (README, "Scale of reporting").

The study is written straight into a temporary SQLite storage (no training) but looks like
one a long Sonar sweep leaves: a baseline trial 0, then search trials over all four
placements, about 70% complete, 25% pruned and 5% failed (with their reason), each with the
user attributes and the every-10-epochs intermediate values the runner records. Trials are
made with ``optuna.trial.create_trial``; ``Study.add_trials`` would store them at ~30 ms a
trial (one query per value), so by default they are inserted in bulk, a chunk per
transaction, through the tables of Optuna's own RDB models (``--via add_trials`` takes the
public, slow path; both read back as the same trials). The report is then timed as a user
runs it, a fresh ``python -m dropsweep report`` process each time (imports included), best
of several runs, once per format.

    DROPSWEEP_DATA_DIR=../shared/data python benchmarks/report_scale.py
    DROPSWEEP_DATA_DIR=../shared/data python benchmarks/report_scale.py --trials 2000 --repeats 1
    DROPSWEEP_DATA_DIR=../shared/data python benchmarks/report_scale.py --keep /tmp/big.db
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import optuna
import sqlalchemy
from optuna import distributions
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.storages import RDBStorage
from optuna.storages._rdb import models
from optuna.trial import FrozenTrial, TrialState, create_trial

from dropsweep import __version__, records
from dropsweep.families.mlp import PLACEMENTS
from dropsweep.storage.open import open_storage

STUDY = "sonar-10k"
EPOCHS, EVAL_EVERY, FOLDS = 300, 10, 10
FOLD_ROWS = (21,) * 8 + (20,) * 2  # Sonar's 208 rows in 10 stratified folds
MAX_NORMS = (None, 2.0, 3.0, 4.0, 5.0)
BATCH = 8  # trials trained together share a seed and a start time

# The space of sweeps/sonar.yaml, as the runner records it in each trial's distributions.
DISTRIBUTIONS = {
    "placement": CategoricalDistribution(PLACEMENTS),
    "input_rate": FloatDistribution(0.05, 0.5),
    "hidden_rate": FloatDistribution(0.1, 0.7),
    "learning_rate": FloatDistribution(0.001, 0.3, log=True),
    "momentum": FloatDistribution(0.5, 0.99),
    "max_norm": CategoricalDistribution(MAX_NORMS),
}
SWEEP = {
    "name": "sonar",
    "data": {"dataset": "sonar", "csv": None, "target": None},
    "model": {"hidden": [60, 30]},
    "train": {"epochs": EPOCHS, "batch_size": 16, "eval_every": EVAL_EVERY},
    "cv": {"folds": FOLDS, "seed": 7},
    "baseline": {"learning_rate": 0.01, "momentum": 0.8, "max_norm": None},
    "search": {"trials": 10_000, "sampler": "tpe", "seed": 0, "pruner": "median"},
    "space": {
        "placement": list(PLACEMENTS),
        "input_rate": {"low": 0.05, "high": 0.5, "log": False},
        "hidden_rate": {"low": 0.1, "high": 0.7, "log": False},
        "learning_rate": {"low": 0.001, "high": 0.3, "log": True},
        "momentum": {"low": 0.5, "high": 0.99, "log": False},
        "max_norm": list(MAX_NORMS),
    },
}


def draw_params(rng: random.Random, number: int) -> dict:
    """Baseline first, then what a TPE search over all placements tends to propose."""
    if number == 0:
        return {"placement": "none", "learning_rate": 0.01, "momentum": 0.8, "max_norm": None}
    placement = rng.choices(PLACEMENTS, weights=(10, 45, 10, 35))[0]
    params: dict = {"placement": placement}
    if placement in ("input", "both"):
        params["input_rate"] = rng.uniform(0.05, 0.5)
    if placement in ("hidden", "both"):
        params["hidden_rate"] = rng.uniform(0.1, 0.7)
    params["learning_rate"] = 10 ** rng.uniform(-3, math.log10(0.3))
    params["momentum"] = rng.uniform(0.5, 0.99)
    params["max_norm"] = rng.choice(MAX_NORMS)
    return params


def expected_accuracy(params: dict) -> float:
    """A made-up but smooth response, so that some parameters matter more than others."""
    acc = 0.83 + {"none": 0.0, "input": 0.03, "hidden": -0.01, "both": 0.02}[params["placement"]]
    acc -= 0.03 * (math.log10(params["learning_rate"]) + 1.3) ** 2
    acc -= 0.15 * (params.get("input_rate", 0.25) - 0.25) ** 2
    acc -= 0.05 * (params["momentum"] - 0.7) ** 2
    return acc + (0.01 if params["max_norm"] in (2.0, 3.0) else 0.0)


def config_of(params: dict) -> dict:
    return {
        "placement": params["placement"],
        "input_rate": params.get("input_rate", 0.0),
        "hidden_rate": params.get("hidden_rate", 0.0),
        "learning_rate": params["learning_rate"],
        "momentum": params["momentum"],
        "max_norm": params["max_norm"],
    }


def make_trial(rng: random.Random, number: int, seed: int, started: datetime) -> FrozenTrial:
    params = draw_params(rng, number)
    roll = rng.random() if number else 0.0
    state = TrialState.COMPLETE if roll < 0.70 else (
        TrialState.PRUNED if roll < 0.95 else TrialState.FAIL)
    target = expected_accuracy(params)
    attrs: dict = {
        records.CONFIG: config_of(params),
        records.ROLE: records.ROLE_BASELINE if number == 0 else records.ROLE_SEARCH,
        records.SEED: seed,
    }
    epochs = EPOCHS
    if state == TrialState.FAIL:
        epochs = rng.randint(1, 40)
        attrs[records.FAIL_REASON] = (
            f"loss became NaN at epoch {epochs}, fold {rng.randint(1, FOLDS)}")
    elif state == TrialState.PRUNED:
        epochs = EVAL_EVERY * rng.randint(1, EPOCHS // EVAL_EVERY - 1)
    curve = {
        step: min(1.0, target - 0.08 * math.exp(-step / 60) + rng.gauss(0, 0.012))
        for step in range(EVAL_EVERY, epochs + 1, EVAL_EVERY)
    } if state != TrialState.FAIL else {}
    value = None
    if state == TrialState.COMPLETE:
        folds = [min(n, max(0, round((target + rng.gauss(0, 0.06)) * n))) / n for n in FOLD_ROWS]
        mean = sum(folds) / len(folds)
        curve[EPOCHS] = mean
        value = mean
        attrs.update({
            records.FOLD_ACCURACIES: folds,
            records.ACCURACY_MEAN: mean,
            records.ACCURACY_STD: math.sqrt(sum((f - mean) ** 2 for f in folds) / len(folds)),
            records.TEST_LOG_LOSS: rng.uniform(0.3, 0.9),
            records.TRAIN_ACCURACY: min(1.0, rng.uniform(0.97, 1.02)),
        })
    elif state == TrialState.PRUNED:
        value = curve[epochs]
    attrs[records.EPOCHS] = epochs
    attrs[records.WALL_TIME] = round(0.3 * epochs / EPOCHS * rng.uniform(0.8, 1.3), 4)
    system_attrs: dict = {}
    if number == 0:
        system_attrs["fixed_params"] = dict(params)
    elif number >= 10:  # TPE's independent start-up trials carry no relative params
        system_attrs["tpe:relative_params:0"] = json.dumps(params)
    trial = create_trial(
        state=state,
        value=value,
        params=params,
        distributions={name: DISTRIBUTIONS[name] for name in params},
        user_attrs=attrs,
        system_attrs=system_attrs,
        intermediate_values=curve,
    )
    trial.datetime_start = started
    trial.datetime_complete = started + timedelta(seconds=0.5 + 3.5 * epochs / EPOCHS)
    return trial


def insert_trials(storage: RDBStorage, study_id: int, trials: list[FrozenTrial]) -> None:
    """Store finished trials as ``Study.add_trials`` would, in one transaction and a few
    multi-row INSERTs (the same rows; ``add_trials`` issues a query per value)."""
    engine = storage.engine
    with engine.begin() as conn:
        last = conn.execute(sqlalchemy.select(sqlalchemy.func.max(
            models.TrialModel.trial_id))).scalar() or 0
        number = conn.execute(sqlalchemy.select(sqlalchemy.func.count()).where(
            models.TrialModel.study_id == study_id)).scalar() or 0
        rows: dict[type, list[dict]] = {m: [] for m in (
            models.TrialModel, models.TrialValueModel, models.TrialParamModel,
            models.TrialUserAttributeModel, models.TrialSystemAttributeModel,
            models.TrialIntermediateValueModel)}
        for offset, trial in enumerate(trials):
            trial_id = last + 1 + offset
            rows[models.TrialModel].append({
                "trial_id": trial_id, "number": number + offset, "study_id": study_id,
                "state": trial.state, "datetime_start": _utc(trial.datetime_start),
                "datetime_complete": _utc(trial.datetime_complete)})
            if trial.value is not None:
                value, kind = models.TrialValueModel.value_to_stored_repr(trial.value)
                rows[models.TrialValueModel].append({
                    "trial_id": trial_id, "objective": 0, "value": value, "value_type": kind})
            for name, value in trial.params.items():
                dist = trial.distributions[name]
                rows[models.TrialParamModel].append({
                    "trial_id": trial_id, "param_name": name,
                    "param_value": dist.to_internal_repr(value),
                    "distribution_json": distributions.distribution_to_json(dist)})
            for model, attrs in ((models.TrialUserAttributeModel, trial.user_attrs),
                                 (models.TrialSystemAttributeModel, trial.system_attrs)):
                rows[model] += [{"trial_id": trial_id, "key": key, "value_json": json.dumps(v)}
                                for key, v in attrs.items()]
            for step, value in trial.intermediate_values.items():
                stored, kind = models.TrialIntermediateValueModel.intermediate_value_to_stored_repr(
                    value)
                rows[models.TrialIntermediateValueModel].append({
                    "trial_id": trial_id, "step": step, "intermediate_value": stored,
                    "intermediate_value_type": kind})
        for model, values in rows.items():
            if values:
                conn.execute(sqlalchemy.insert(model.__table__), values)


def _utc(moment: datetime | None) -> datetime | None:
    """Naive local time -> the naive UTC that Optuna's RDB storage keeps."""
    return None if moment is None else moment.astimezone(timezone.utc).replace(tzinfo=None)


def build(url: str, n_trials: int, chunk: int, seed: int, via: str = "bulk") -> dict[str, int]:
    """Write the study; returns how many trials of each state it holds."""
    storage = open_storage(url)
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
    study.set_user_attr(records.STUDY_SWEEP, {**SWEEP, "search": {**SWEEP["search"],
                                                                  "trials": n_trials}})
    study.set_user_attr(records.STUDY_VERSION, __version__)
    study.set_user_attr(records.STUDY_TORCH_VERSION, "2.13.0+cpu")
    study.set_user_attr(records.STUDY_SWEEP_FILE, "sweeps/sonar.yaml")
    rng = random.Random(seed)
    clock = datetime(2026, 1, 5, 9, 0, 0)
    batch_seed = 0
    counts: dict[str, int] = {}
    for first in range(0, n_trials, chunk):
        trials = []
        for number in range(first, min(first + chunk, n_trials)):
            if number % BATCH == 0:
                batch_seed = rng.randrange(2**31)
                clock += timedelta(seconds=4)
            trials.append(make_trial(rng, number, batch_seed, clock))
            counts[trials[-1].state.name] = counts.get(trials[-1].state.name, 0) + 1
        if via == "add_trials":
            study.add_trials(trials)
        else:
            insert_trials(storage, storage.get_study_id_from_name(STUDY), trials)
    storage.engine.dispose()
    return counts


def time_report(url: str, fmt: str, repeats: int) -> tuple[float, int]:
    """Best wall time of a fresh ``dropsweep report`` process, and the bytes it printed."""
    cmd = [sys.executable, "-m", "dropsweep", "report", "--storage", url, "--format", fmt]
    best, size = math.inf, 0
    for _ in range(repeats):
        start = time.perf_counter()
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, env=os.environ).stdout
        best = min(best, time.perf_counter() - start)
        size = len(out)
    return best, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3, help="runs per format; best is shown")
    parser.add_argument("--chunk", type=int, default=1000, help="trials per transaction")
    parser.add_argument("--via", choices=("bulk", "add_trials"), default="bulk",
                        help="how the trials are stored (add_trials: public API, ~30 ms each)")
    parser.add_argument("--formats", default="table,json", help="comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", metavar="DB", help="write the study here and keep it")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.keep) if args.keep else Path(tmp) / "report_scale.db"
        if path.exists():
            parser.error(f"{path} exists; pass a new file to --keep")
        url = f"sqlite:///{path}"
        start = time.perf_counter()
        counts = build(url, args.trials, args.chunk, args.seed, args.via)
        built = time.perf_counter() - start
        print(f"dropsweep report on a {args.trials:,}-trial study "
              f"({', '.join(f'{n:,} {s.lower()}' for s, n in counts.items())}), "
              f"best of {args.repeats}, on {os.cpu_count()} cores")
        print(f"built in {built:.1f} s (create_trial, {args.via}, {args.chunk} a chunk), "
              f"{path.stat().st_size / 1e6:.1f} MB SQLite")
        print(f"\n{'format':>8} {'wall s':>8} {'output':>10}")
        for fmt in args.formats.split(","):
            seconds, size = time_report(url, fmt, args.repeats)
            print(f"{fmt:>8} {seconds:8.2f} {size / 1e3:8.0f} kB")


if __name__ == "__main__":
    main()
