"""The report's fast paths for big studies (benchmarks/report_scale.py times them) change
nothing: the SQL read of an RDB study returns what Optuna's reader returns, a report built
from it equals one built through Optuna, and machine formats are written byte for byte as
``Console.out`` would. No timing here: speed lives in benchmarks/."""

from __future__ import annotations

import io
import math
from datetime import datetime, timedelta

import optuna
import pytest
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState, create_trial
from rich.console import Console

from dropsweep import records

from dropsweep.answers import report
from dropsweep.families.mlp import PLACEMENTS
from dropsweep.render.formats import write as _write
from dropsweep.render.report import render_report, report_to_json
from dropsweep.storage import read
from dropsweep.storage.open import open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)

T0 = datetime(2025, 3, 1, 9, 0, 0)
DISTS = {
    "placement": CategoricalDistribution(PLACEMENTS),
    "input_rate": FloatDistribution(0.05, 0.5),
    "hidden_rate": FloatDistribution(0.1, 0.7),
    "learning_rate": FloatDistribution(1e-3, 0.3, log=True),
    "momentum": FloatDistribution(0.5, 0.99),
    "max_norm": CategoricalDistribution((None, 2.0, 3.0)),
    "width": IntDistribution(8, 64, step=8),
}
FIELDS = ("number", "state", "values", "datetime_start", "datetime_complete", "params",
          "distributions", "user_attrs", "system_attrs", "intermediate_values", "_trial_id")


def _trial(i: int) -> FrozenTrial:
    """Trial ``i`` of a sweep-like study: every state, conditional params, odd values."""
    placement = PLACEMENTS[i % 4]
    params: dict = {"placement": placement}
    if placement in ("input", "both"):
        params["input_rate"] = 0.05 + 0.01 * (i % 40)
    if placement in ("hidden", "both"):
        params["hidden_rate"] = 0.1 + 0.013 * (i % 40)
    params["learning_rate"] = 10 ** (-3 + 0.023 * (i % 100))
    params["momentum"] = 0.5 + 0.0049 * (i % 100)
    params["max_norm"] = (None, 2.0, 3.0)[i % 3]
    params["width"] = 8 * (1 + i % 8)
    state = (TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED,
             TrialState.FAIL)[i % 4 if i % 7 else 0]
    folds = [0.5 + 0.4 * ((i * 7 + k) % 11) / 10 for k in range(5)]
    mean = sum(folds) / len(folds)
    attrs: dict = {records.ROLE: records.ROLE_BASELINE if i == 0 else records.ROLE_SEARCH,
                   records.CONFIG: {"placement": placement, "max_norm": None, "nested": [1, {}]},
                   records.SEED: 1000 + i, records.WALL_TIME: 0.01 * i, records.EPOCHS: 50}
    steps = {10 * k: 0.5 + 0.01 * k for k in range(1, 6 if state != TrialState.FAIL else 1)}
    value = None
    if state == TrialState.COMPLETE:
        value = math.inf if i == 13 else mean  # an infinite value is stored by its type
        attrs.update({records.FOLD_ACCURACIES: folds, records.ACCURACY_MEAN: mean,
                      records.ACCURACY_STD: 0.05, records.TRAIN_ACCURACY: 0.99,
                      records.TEST_LOG_LOSS: 0.4})
        steps[60] = -math.inf if i == 14 else mean
    elif state == TrialState.PRUNED:
        value = steps[max(steps)]
        steps[20] = math.nan  # a NaN checkpoint is stored by its type too
    else:
        attrs[records.FAIL_REASON] = f"loss became NaN at epoch {i % 9}, fold [{i % 5}]"
    trial = create_trial(state=state, value=value, params=params,
                         distributions={k: DISTS[k] for k in params}, user_attrs=attrs,
                         system_attrs={"tpe:relative_params:0": '{"x": 1}'} if i % 5 else {},
                         intermediate_values=steps)
    trial.datetime_start = T0 + timedelta(minutes=i)
    trial.datetime_complete = T0 + timedelta(minutes=i, seconds=30)
    return trial


def _same(fast: list[FrozenTrial], slow: list[FrozenTrial]) -> None:
    assert [t.number for t in fast] == list(range(len(slow)))
    for a, b in zip(fast, slow):
        for field in FIELDS:
            # repr: equal values of another type (1 vs 1.0) or dict order would also differ
            assert repr(getattr(a, field)) == repr(getattr(b, field)), (a.number, field)


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Two interleaved studies (trial ids are not contiguous), plus a running and a waiting
    trial, in one SQLite file."""
    url = f"sqlite:///{tmp_path_factory.mktemp('scale') / 'studies.db'}"
    storage = open_storage(url)
    big = optuna.create_study(study_name="big", storage=storage, direction="maximize")
    other = optuna.create_study(study_name="other", storage=storage, direction="minimize")
    for start in range(0, 80, 40):
        big.add_trials([_trial(i) for i in range(start, start + 40)])
        other.add_trials([_trial(i) for i in range(start // 40 * 3, start // 40 * 3 + 3)])
    running = big.ask({k: DISTS[k] for k in ("placement", "width")})
    running.report(0.7, 10)
    running.set_user_attr(records.ROLE, records.ROLE_SEARCH)
    big.enqueue_trial({"placement": "none"})
    storage.engine.dispose()
    return url


@pytest.mark.slow
def test_sql_read_is_optunas_read(stored: str) -> None:
    storage = open_storage(stored, read_only=True)
    for name in ("big", "other"):
        study_id = storage.get_study_id_from_name(name)
        slow = sorted(storage.get_all_trials(study_id, deepcopy=False), key=lambda t: t.number)
        # called directly: a failure here must not hide behind the fallback
        _same(read.select_trials(storage, study_id, stamps_only=False), slow)
        stamps = read.select_trials(storage, study_id, stamps_only=True)
        assert [(t.number, t.state, t.datetime_start, t.datetime_complete) for t in stamps] \
            == [(t.number, t.state, t.datetime_start, t.datetime_complete) for t in slow]
        if name == "big":
            assert {t.state for t in slow} == set(TrialState)  # every state was compared


def test_unknown_tables_fall_back_to_optuna(stored: str, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    def broken(*args: object) -> None:
        raise KeyError("a column this Optuna does not have")

    storage = open_storage(stored, read_only=True)
    study_id = storage.get_study_id_from_name("big")
    monkeypatch.setattr(read, "select_trials", broken)
    _same(read.stored_trials(storage, study_id),
          sorted(storage.get_all_trials(study_id, deepcopy=False), key=lambda t: t.number))


def test_report_is_the_same_as_through_optuna(stored: str) -> None:
    """Built from the SQL read (RDB) and from Optuna's reader (an in-memory copy): the same
    report, importances included, in every format."""
    storage = open_storage(stored, read_only=True)
    rdb = optuna.load_study(study_name="big", storage=storage)
    copy = optuna.create_study(study_name="big", direction="maximize")
    copy.add_trials(rdb.get_trials(deepcopy=False))
    fast, slow = report.build_report(rdb), report.build_report(copy)
    assert fast.importances and fast.counts == slow.counts
    assert report_to_json(fast) == report_to_json(slow)
    for fmt in ("table", "markdown", "csv", "json"):
        outputs = []
        for built in (fast, slow):
            console = Console(file=io.StringIO(), width=120, color_system=None)
            render_report(built, fmt, console)
            outputs.append(console.file.getvalue())
        assert outputs[0] == outputs[1], fmt
    assert report.latest_study_name(storage) == "big"  # the one with the latest activity


@pytest.mark.parametrize("terminal", [False, True])
def test_write_is_console_out(terminal: bool) -> None:
    texts = ["a,b\n1,2\n", "no newline at the end", "", "\n", "x\r\ny\x07z\x08\n",
             "a\ttab\n", "ünï 中文 😀\n", "[bold]not markup[/] :smile:\n", "\x1b[31mraw\x1b[0m\n",
             "  padded   \n\n\nend"]
    for text in texts:
        got = []
        for write in ("out", "_write"):
            console = Console(file=io.StringIO(), width=12, record=True, force_terminal=terminal,
                              color_system="truecolor" if terminal else None)
            if write == "out":
                console.out(text, end="" if text.endswith("\n") else "\n", highlight=False)
            else:
                _write(console, text)
            got.append((console.file.getvalue(), console.export_text(styles=True)))
        assert got[0] == got[1], repr(text)


def test_an_rdb_study_is_read_once_through_sql(stored: str, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    """Not through Optuna's reader (~10 s for 10,000 trials): neither the report nor the
    importance evaluator asks the study or its storage for all trials."""
    study = optuna.load_study(study_name="big", storage=open_storage(stored, read_only=True))

    def slow_path(*args: object, **kwargs: object) -> None:
        raise AssertionError("the report read the trials through Optuna")

    monkeypatch.setattr(optuna.Study, "get_trials", slow_path)
    monkeypatch.setattr(type(study._storage), "get_all_trials", slow_path)  # noqa: SLF001
    monkeypatch.setattr(optuna.storages.RDBStorage, "get_all_trials", slow_path)
    built = report.build_report(study)
    assert built.n_trials == 82 and built.importances
    assert report.latest_study_name(stored) == "big"
