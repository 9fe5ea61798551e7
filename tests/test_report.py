"""report.py: the numbers of a report, from real in-memory and SQLite Optuna studies."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from dropsweep import records
from dropsweep.families.mlp import PLACEMENTS
from dropsweep.errors import StorageError
from dropsweep.answers.report import build_report, latest_study_name, list_studies

optuna.logging.set_verbosity(optuna.logging.WARNING)

T0 = datetime(2025, 3, 1, 9, 0, 0)

DISTRIBUTIONS = {
    "placement": CategoricalDistribution(PLACEMENTS),
    "input_rate": FloatDistribution(0.0, 0.5),
    "hidden_rate": FloatDistribution(0.0, 0.7),
    "learning_rate": FloatDistribution(1e-3, 0.3, log=True),
    "momentum": FloatDistribution(0.0, 0.99),
    "max_norm": FloatDistribution(1.0, 5.0),
}


def _params(placement: str, lr: float = 0.01, momentum: float = 0.8, **extra: float) -> dict:
    return {
        "placement": placement,
        "learning_rate": lr,
        "momentum": momentum,
        **extra,
    }


def add_complete(
    study: optuna.Study,
    folds: list[float],
    params: dict[str, Any],
    *,
    role: str = records.ROLE_SEARCH,
    train: float | None = 0.99,
    wall_time: float | None = 10.0,
    start: datetime | None = None,
) -> None:
    """Store a finished trial exactly as the runner does (value == mean fold accuracy)."""
    mean = float(np.mean(folds))
    attrs: dict[str, Any] = {
        records.ROLE: role,
        records.FOLD_ACCURACIES: folds,
        records.ACCURACY_MEAN: mean,
        records.ACCURACY_STD: float(np.std(folds)),
        records.TEST_LOG_LOSS: 0.4,
        records.EPOCHS: 100,
        records.SEED: 7,
    }
    if train is not None:
        attrs[records.TRAIN_ACCURACY] = train
    if wall_time is not None:
        attrs[records.WALL_TIME] = wall_time
    trial = optuna.trial.create_trial(
        state=TrialState.COMPLETE,
        value=mean,
        params=params,
        distributions={k: DISTRIBUTIONS[k] for k in params},
        user_attrs=attrs,
    )
    if start is not None:
        trial.datetime_start = start
        trial.datetime_complete = start + timedelta(seconds=30)
    study.add_trial(trial)


def add_other(
    study: optuna.Study,
    state: TrialState,
    params: dict[str, Any],
    attrs: dict[str, Any],
    start: datetime | None = None,
) -> None:
    trial = optuna.trial.create_trial(
        state=state,
        params=params,
        distributions={k: DISTRIBUTIONS[k] for k in params},
        user_attrs=attrs,
    )
    if start is not None:
        trial.datetime_start = start
        if trial.datetime_complete is not None:
            trial.datetime_complete = start + timedelta(seconds=5)
    study.add_trial(trial)


BASELINE_FOLDS = [0.80, 0.85, 0.82, 0.88, 0.83]
INPUT_FOLDS = [0.84, 0.86, 0.83, 0.90, 0.85]  # best of "input"
INPUT_WORSE_FOLDS = [0.70, 0.75, 0.72, 0.78, 0.73]
HIDDEN_FOLDS = [0.86, 0.88, 0.87, 0.90, 0.89]  # best overall
BOTH_FOLDS = [0.81, 0.80, 0.79, 0.84, 0.82]
TIE_FOLDS = [0.84, 0.86, 0.83, 0.90, 0.85]  # same value as INPUT_FOLDS, later number


@pytest.fixture
def study() -> optuna.Study:
    """Trials 0..9: baseline, every placement, pruned, failed, interrupted, running."""
    s = optuna.create_study(direction="maximize", study_name="sonar-dropout")
    add_complete(s, BASELINE_FOLDS, _params("none"), role=records.ROLE_BASELINE, train=0.98)  # 0
    add_complete(s, INPUT_FOLDS, _params("input", input_rate=0.2), train=0.95)  # 1
    add_complete(s, INPUT_WORSE_FOLDS, _params("input", input_rate=0.5), wall_time=12.5)  # 2
    add_complete(  # 3
        s, HIDDEN_FOLDS, _params("hidden", hidden_rate=0.5, max_norm=3.0), role=records.ROLE_FIXED
    )
    add_complete(s, BOTH_FOLDS, _params("both", input_rate=0.1, hidden_rate=0.3))  # 4
    add_other(  # 5
        s,
        TrialState.PRUNED,
        _params("hidden", hidden_rate=0.6),
        {records.ROLE: records.ROLE_SEARCH, records.EPOCHS: 12, records.WALL_TIME: 2.5},
    )
    add_other(  # 6
        s,
        TrialState.FAIL,
        _params("input", lr=0.3, input_rate=0.4),
        {records.FAIL_REASON: "loss became NaN at epoch 3, fold 2", records.WALL_TIME: 1.0},
    )
    add_other(s, TrialState.FAIL, _params("both"), {records.INTERRUPTED: True})  # 7
    add_complete(s, TIE_FOLDS, _params("input", input_rate=0.25), wall_time=4.0)  # 8
    add_other(s, TrialState.RUNNING, _params("none"), {records.ROLE: records.ROLE_SEARCH})  # 9
    return s


# ----------------------------------------------------------------------------- trials


def test_every_trial_is_listed_by_number_with_its_attributes(study: optuna.Study) -> None:
    report = build_report(study)
    assert [t.number for t in report.trials] == list(range(10))
    assert [t.state for t in report.trials] == [
        "COMPLETE", "COMPLETE", "COMPLETE", "COMPLETE", "COMPLETE",
        "PRUNED", "FAIL", "FAIL", "COMPLETE", "RUNNING",
    ]  # fmt: skip
    baseline = report.trials[0]
    assert baseline.role == records.ROLE_BASELINE
    assert baseline.fold_accuracies == tuple(BASELINE_FOLDS)
    assert baseline.accuracy_mean == pytest.approx(np.mean(BASELINE_FOLDS))
    assert baseline.accuracy_std == pytest.approx(np.std(BASELINE_FOLDS))
    assert baseline.value == pytest.approx(baseline.accuracy_mean)
    assert baseline.train_accuracy == 0.98
    assert baseline.gap == pytest.approx(0.98 - np.mean(BASELINE_FOLDS))
    assert baseline.epochs == 100 and baseline.test_log_loss == 0.4
    assert "input_rate" not in baseline.params

    pruned = report.trials[5]
    assert pruned.value is None and pruned.epochs == 12 and pruned.fold_accuracies == ()
    assert pruned.accuracy_mean is None and pruned.gap is None and pruned.fail_reason is None

    assert report.trials[6].fail_reason == "loss became NaN at epoch 3, fold 2"
    assert report.trials[7].fail_reason == "interrupted"
    assert [t.number for t in report.failed] == [6, 7]
    assert report.trials[9].role == records.ROLE_SEARCH and report.trials[9].wall_time is None
    assert report.n_folds == 5


def test_counts_by_state(study: optuna.Study) -> None:
    report = build_report(study)
    assert report.counts == {"COMPLETE": 6, "PRUNED": 1, "FAIL": 2, "RUNNING": 1}
    assert list(report.counts) == ["COMPLETE", "PRUNED", "FAIL", "RUNNING"]
    assert report.n_trials == 10
    assert report.name == "sonar-dropout" and report.direction == "MAXIMIZE"


def test_wall_time_is_the_sum_of_the_recorded_times(study: optuna.Study) -> None:
    report = build_report(study)
    # complete: 10 + 10 + 12.5 + 10 + 10 + 4; pruned 2.5; failed 1.0 and (no attr) 0 s span
    assert report.total_wall_time == pytest.approx(10 + 10 + 12.5 + 10 + 10 + 4 + 2.5 + 1.0)
    assert report.trials[7].wall_time == pytest.approx(0.0)  # created finished: start == end


def test_wall_time_falls_back_to_optuna_datetimes() -> None:
    s = optuna.create_study(direction="maximize")
    add_complete(s, BASELINE_FOLDS, _params("none"), wall_time=None, start=T0)
    report = build_report(s)
    assert report.trials[0].wall_time == pytest.approx(30.0)
    assert report.total_wall_time == pytest.approx(30.0)
    assert report.first_start == T0
    assert report.last_update == T0 + timedelta(seconds=30)


def test_best_top_and_baseline(study: optuna.Study) -> None:
    report = build_report(study, top=4)
    assert report.best is not None and report.best.number == 3
    assert report.baseline is not None and report.baseline.number == 0
    # 3 (hidden) > 1 == 8 (tie: lower number first) > 0 (baseline) > 4 > 2
    assert [t.number for t in report.top] == [3, 1, 8, 0]
    assert [t.number for t in build_report(study).top] == [3, 1, 8, 0, 4, 2]
    assert all(t.state == "COMPLETE" for t in build_report(study, top=100).top)


def test_baseline_is_the_lowest_numbered_complete_baseline() -> None:
    s = optuna.create_study(direction="maximize")
    add_other(s, TrialState.FAIL, _params("none"), {records.ROLE: records.ROLE_BASELINE})
    add_complete(s, INPUT_FOLDS, _params("none"), role=records.ROLE_BASELINE)
    add_complete(s, HIDDEN_FOLDS, _params("none"), role=records.ROLE_BASELINE)
    report = build_report(s)
    assert report.baseline is not None and report.baseline.number == 1


def test_best_of_each_placement_and_difference_from_baseline(study: optuna.Study) -> None:
    report = build_report(study)
    rows = {p.placement: p for p in report.placements}
    assert [p.placement for p in report.placements] == ["none", "input", "hidden", "both"]
    baseline_mean = sum(BASELINE_FOLDS) / 5  # 0.836

    assert rows["none"].n_trials == 1 and rows["none"].best.number == 0
    assert rows["none"].diff_from_baseline == pytest.approx(0.0)

    # input: trials 1, 2, 8 complete (6 failed); 1 and 8 tie, 1 came first
    assert rows["input"].n_trials == 3 and rows["input"].best.number == 1
    assert rows["input"].diff_from_baseline == pytest.approx(sum(INPUT_FOLDS) / 5 - baseline_mean)
    assert rows["input"].diff_from_baseline == pytest.approx(0.856 - 0.836)

    # hidden: only trial 3 is complete (5 was pruned)
    assert rows["hidden"].n_trials == 1 and rows["hidden"].best.number == 3
    assert rows["hidden"].diff_from_baseline == pytest.approx(0.88 - 0.836)

    assert rows["both"].n_trials == 1
    assert rows["both"].diff_from_baseline == pytest.approx(0.812 - 0.836)


def test_placements_without_baseline_have_no_difference() -> None:
    s = optuna.create_study(direction="maximize")
    add_complete(s, INPUT_FOLDS, _params("input", input_rate=0.2))
    add_other(s, TrialState.PRUNED, _params("hidden", hidden_rate=0.2), {})
    report = build_report(s)
    assert report.baseline is None
    assert [(p.placement, p.diff_from_baseline) for p in report.placements] == [("input", None)]


def test_param_names_in_reading_order(study: optuna.Study) -> None:
    s = optuna.create_study(direction="maximize")
    add_complete(s, INPUT_FOLDS, _params("input", input_rate=0.2))
    s.add_trial(
        optuna.trial.create_trial(
            value=0.5,
            params={"zeta": 1.0, "alpha": 2.0, "max_norm": 3.0},
            distributions={
                "zeta": FloatDistribution(0, 2),
                "alpha": FloatDistribution(0, 3),
                "max_norm": DISTRIBUTIONS["max_norm"],
            },
        )
    )
    assert build_report(s).param_names == [
        "placement",
        "input_rate",
        "learning_rate",
        "momentum",
        "max_norm",
        "alpha",
        "zeta",
    ]
    assert build_report(study).param_names == list(
        (
            "placement",
            "input_rate",
            "hidden_rate",
            "learning_rate",
            "momentum",
            "max_norm",
        )
    )


def test_empty_study() -> None:
    report = build_report(optuna.create_study(direction="maximize"))
    assert report.trials == [] and report.counts == {} and report.total_wall_time == 0
    assert report.best is None and report.baseline is None and report.top == []
    assert report.placements == [] and report.importances == {}
    assert report.importance_note and report.first_start is None and report.n_folds == 0


def test_multi_objective_study_is_a_storage_error() -> None:
    with pytest.raises(StorageError, match="objectives"):
        build_report(optuna.create_study(directions=["maximize", "minimize"]))


# ----------------------------------------------------------------------------- importances


def _conditional_study(n: int, seed: int = 0) -> optuna.Study:
    rng = np.random.default_rng(seed)
    s = optuna.create_study(direction="maximize")
    add_complete(s, BASELINE_FOLDS, _params("none"), role=records.ROLE_BASELINE)
    for i in range(n - 1):
        placement = PLACEMENTS[i % 4]
        extra: dict[str, float] = {}
        if placement in ("input", "both"):
            extra["input_rate"] = float(rng.uniform(0, 0.5))
        if placement in ("hidden", "both"):
            extra["hidden_rate"] = float(rng.uniform(0, 0.7))
        if i % 3 == 0:
            extra["max_norm"] = float(rng.uniform(1, 5))
        lr = float(np.exp(rng.uniform(np.log(1e-3), np.log(0.3))))
        folds = list(np.clip(0.6 + 0.8 * lr + rng.normal(0, 0.02, 5), 0, 1))
        add_complete(s, [float(f) for f in folds], _params(placement, lr=lr, **extra))
    return s


def test_importances_for_a_conditional_space() -> None:
    report = build_report(_conditional_study(16))
    assert report.importance_note is None
    assert report.importances, "PED-ANOVA should score a 16-trial study"
    values = list(report.importances.values())
    assert all(v >= 0 for v in values)
    assert sum(values) == pytest.approx(1.0)
    assert values == sorted(values, reverse=True)
    assert set(report.importances) <= set(report.param_names)


def test_importances_need_two_complete_trials() -> None:
    s = optuna.create_study(direction="maximize")
    add_complete(s, BASELINE_FOLDS, _params("none"), role=records.ROLE_BASELINE)
    add_other(s, TrialState.PRUNED, _params("input", input_rate=0.1), {})
    report = build_report(s)
    assert report.importances == {}
    assert report.importance_note is not None and "2 complete" in report.importance_note


def test_importances_retry_with_the_parameters_every_trial_has(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[Any] = []
    original = optuna.importance.get_param_importances

    def picky(study: optuna.Study, **kwargs: Any) -> dict[str, float]:
        calls.append(kwargs.get("params"))
        if kwargs.get("params") is None:
            raise ValueError("dynamic search space")
        return original(study, **kwargs)

    monkeypatch.setattr(optuna.importance, "get_param_importances", picky)
    report = build_report(_conditional_study(12))
    common = ["learning_rate", "momentum", "placement"]
    assert calls == [None, common]
    assert set(report.importances) <= set(common) and report.importance_note is None


def test_importances_note_when_optuna_cannot_compute(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(study: optuna.Study, **kwargs: Any) -> dict[str, float]:
        raise ValueError("degenerate space")

    monkeypatch.setattr(optuna.importance, "get_param_importances", broken)
    report = build_report(_conditional_study(12))
    assert report.importances == {}
    assert report.importance_note is not None and "degenerate space" in report.importance_note


def test_identical_trials_give_no_importances_rather_than_equal_shares() -> None:
    s = optuna.create_study(direction="maximize")
    for folds in (BASELINE_FOLDS, INPUT_FOLDS, HIDDEN_FOLDS):
        add_complete(s, folds, _params("none"), role=records.ROLE_BASELINE)
    report = build_report(s)
    assert report.importances == {} and report.importance_note


# ----------------------------------------------------------------------------- storages


def _sqlite_with_two_studies(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/x.db"
    # "recent" is created first but has the latest trial activity.
    recent = optuna.create_study(storage=url, study_name="recent", direction="maximize")
    older = optuna.create_study(storage=url, study_name="older", direction="maximize")
    add_complete(recent, BASELINE_FOLDS, _params("none"), start=T0 + timedelta(days=2))
    add_other(recent, TrialState.FAIL, _params("input"), {}, start=T0 + timedelta(days=3))
    add_complete(older, HIDDEN_FOLDS, _params("hidden", hidden_rate=0.5), start=T0)
    add_complete(older, INPUT_FOLDS, _params("input", input_rate=0.1), start=T0)
    return url


def test_latest_study_name_is_the_most_recently_active(tmp_path: Path) -> None:
    url = _sqlite_with_two_studies(tmp_path)
    assert latest_study_name(url) == "recent"
    older = optuna.load_study(study_name="older", storage=url)
    add_complete(older, BOTH_FOLDS, _params("both"), start=T0 + timedelta(days=5))
    assert latest_study_name(url) == "older"


def test_latest_study_name_of_an_empty_storage(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/empty.db"
    optuna.storages.RDBStorage(url)  # the tables, no study
    with pytest.raises(StorageError, match="no studies in"):
        latest_study_name(url)


def test_list_studies(tmp_path: Path) -> None:
    url = _sqlite_with_two_studies(tmp_path)
    rows = {row.name: row for row in list_studies(url)}
    assert set(rows) == {"recent", "older"}
    assert rows["recent"].counts == {"COMPLETE": 1, "FAIL": 1}
    assert rows["recent"].n_trials == 2
    assert rows["recent"].best_value == pytest.approx(np.mean(BASELINE_FOLDS))
    assert rows["recent"].last_update == T0 + timedelta(days=3, seconds=5)
    assert rows["older"].best_value == pytest.approx(np.mean(HIDDEN_FOLDS))
    assert rows["older"].counts == {"COMPLETE": 2}


def _sqlite_with_companions(tmp_path: Path) -> str:
    """A search, its confirmation and its test (a luckier best than the search's), a study
    named like a companion that is none, and a companion whose search is gone."""
    url = _sqlite_with_two_studies(tmp_path)  # "recent", then "older"
    for name, key, of in (("recent:confirm", records.CONFIRM_OF, "recent"),
                          ("held-back", records.TEST_OF, "recent"),  # not named NAME:test
                          ("looks:test", None, None),
                          ("gone:confirm", records.CONFIRM_OF, "gone")):
        study = optuna.create_study(storage=url, study_name=name, direction="maximize")
        if key is not None:
            study.set_user_attr(key, of)
        add_complete(study, [0.99, 0.99, 0.99], _params("none"))
    return url


def test_companion_studies_are_the_confirmation_or_test_of_their_search(tmp_path: Path
                                                                        ) -> None:
    """Known from the attribute confirm or test records, not the name; each is listed under
    its search, with no best: the best of a test's seeds is only the luckiest."""
    rows = list_studies(_sqlite_with_companions(tmp_path))
    assert [(r.name, r.kind, r.of) for r in rows] == [
        ("recent", "search", None), ("recent:confirm", "confirmation", "recent"),
        ("held-back", "test", "recent"), ("older", "search", None),
        ("looks:test", "search", None), ("gone:confirm", "confirmation", "gone")]
    best = {r.name: r.best_value for r in rows}
    assert best["recent"] == pytest.approx(np.mean(BASELINE_FOLDS))
    assert best["looks:test"] == pytest.approx(0.99)
    assert best["recent:confirm"] is best["held-back"] is best["gone:confirm"] is None
    assert {r.name: r.n_trials for r in rows}["held-back"] == 1


def test_list_studies_without_complete_trials(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    s = optuna.create_study(storage=url, study_name="fresh")
    [row] = list_studies(url)
    assert (row.name, row.n_trials, row.best_value, row.last_update) == ("fresh", 0, None, None)
    add_other(s, TrialState.PRUNED, _params("none"), {})
    assert list_studies(url)[0].best_value is None
    assert latest_study_name(url) == "fresh"


def test_listing_does_not_modify_the_storage(tmp_path: Path) -> None:
    url = _sqlite_with_two_studies(tmp_path)
    db = tmp_path / "x.db"
    before = (db.read_bytes(), db.stat().st_mtime_ns, sorted(p.name for p in tmp_path.iterdir()))
    list_studies(url)
    latest_study_name(url)
    after = (db.read_bytes(), db.stat().st_mtime_ns, sorted(p.name for p in tmp_path.iterdir()))
    assert after == before


def test_listing_a_missing_sqlite_file_creates_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/missing.db"
    with pytest.raises(StorageError, match="missing.db"):
        list_studies(url)
    with pytest.raises(StorageError):
        latest_study_name(url)
    assert list(tmp_path.iterdir()) == []


def test_listing_a_file_that_is_not_an_optuna_storage(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("create table t (x int)")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StorageError):
        list_studies(f"sqlite:///{path}")
    assert path.read_bytes() == before


def test_report_is_pure() -> None:
    """report.py is numbers only: importing it must not pull in the UI or the trainer."""
    import dropsweep.answers.report  # noqa: F401

    source = Path(sys.modules["dropsweep.answers.report"].__file__).read_text()
    for module in ("torch", "click", "rich"):
        assert f"import {module}" not in source and f"from {module}" not in source
