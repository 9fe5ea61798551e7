"""The hold-out protocol (``eval.protocol: holdout``) and the test rows (``eval.test``): one
stratified validation split a trial, test rows held back before anything else and never
read by a search or a confirmation, and the corrected tests with the split's own ratio."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from dropsweep import records
from dropsweep.study.confirm import run_confirm
from dropsweep.sweep.config import build_sweep
from dropsweep.data.dataset import Dataset, check_folds, hold_back_test, load_dataset
from dropsweep.errors import SweepError
from dropsweep.data.dataset import stratified_split
from dropsweep.data.protocols import folds_of, make_folds, split_ratio
from dropsweep.study.runner import run_search
from dropsweep.answers.stats import corrected_se
from dropsweep.sweep.file import parse_sweep_text
from dropsweep.answers.verdict import build_confirmation

BASE = """
name: small
model: {hidden: [8]}
train: {epochs: 4, batch_size: 16, eval_every: 2}
cv: {seed: 1}
search: {trials: 6, sampler: random, seed: 0, pruner: none, balance: placement}
"""


def sweep_of(evaluation: str = "{protocol: holdout, validation: 0.25}"):
    return build_sweep(parse_sweep_text(BASE + f"eval: {evaluation}\n", "test.yaml"))


class Sealed(Dataset):
    """A data set whose test rows fail the moment anything so much as looks them up."""

    def __getattribute__(self, name: str):
        if name in ("X_test", "y_test"):
            raise AssertionError("the test rows were read")
        return super().__getattribute__(name)


def test_a_holdout_split_is_one_stratified_seeded_split(dataset):
    train, val = stratified_split(dataset.y, 0.25, seed=3)
    assert len(set(train) | set(val)) == len(dataset.y) and not set(train) & set(val)
    assert len(val) == 20 and np.bincount(dataset.y[val]).tolist() == [10, 10]
    again = stratified_split(dataset.y, 0.25, seed=3)
    assert np.array_equal(train, again[0]) and np.array_equal(val, again[1])
    assert not np.array_equal(val, stratified_split(dataset.y, 0.25, seed=4)[1])
    folds = folds_of(dataset, sweep_of(), seed=3)
    assert folds.k == 1 and (int(folds.n_train[0]), int(folds.n_test[0])) == (60, 20)
    # standardised with the training rows' statistics only, as each fold is
    x = folds.x_train[0, :60].numpy()
    assert np.allclose(x.mean(0), 0, atol=1e-5) and np.allclose(x.std(0), 1, atol=1e-4)
    assert split_ratio(folds) == pytest.approx(20 / 60)
    assert split_ratio(make_folds(dataset.X, dataset.y, 5, seed=0)) == pytest.approx(1 / 4)


def test_test_rows_are_held_back_before_anything_else(dataset):
    held = hold_back_test(dataset, sweep_of("{protocol: holdout, test: 0.25}"))
    assert (len(held.X), len(held.X_test)) == (60, 20)
    assert np.bincount(held.y_test).tolist() == [10, 10]  # stratified
    rows = {tuple(r) for r in dataset.X.tolist()}
    assert {tuple(r) for r in held.X.tolist()} | {tuple(r) for r in held.X_test.tolist()} == rows
    assert not {tuple(r) for r in held.X.tolist()} & {tuple(r) for r in held.X_test.tolist()}
    # the data's own test split by default, where it has one; none where it has not
    own = Dataset(**{**dataset.__dict__, "X_test": dataset.X[:4], "y_test": dataset.y[:4]})
    assert hold_back_test(own, sweep_of()).X_test is own.X_test
    assert hold_back_test(dataset, sweep_of()).X_test is None
    assert hold_back_test(own, sweep_of("{test: none}")).X_test is None
    with pytest.raises(SweepError, match=r"eval\.test: blobs has no test split of its own"):
        hold_back_test(dataset, sweep_of("{protocol: holdout, test: official}"))


@pytest.mark.slow
def test_a_holdout_search_and_its_confirmation_never_read_the_test_rows(dataset, storage):
    sweep = sweep_of()
    guarded = Sealed(**{**dataset.__dict__, "X_test": dataset.X[:10],
                        "y_test": dataset.y[:10]})
    summary = run_search(sweep, guarded, storage_url=storage, device="cpu", batch=3)
    assert summary.finished == 6
    study = optuna.load_study(study_name="small", storage=storage)
    assert all(len(t.user_attrs[records.FOLD_ACCURACIES]) == 1 for t in study.trials)
    run_confirm(study, guarded, repeats=2, device="cpu", per_placement=True)
    confirm = optuna.load_study(study_name="small:confirm", storage=storage)
    assert confirm.user_attrs[records.TEST_TRAIN_RATIO] == pytest.approx(20 / 60)
    from rich.console import Console

    from dropsweep.render.confirmation import render_confirmation

    console = Console(record=True, width=250, color_system=None)
    render_confirmation(build_confirmation(confirm, folds=sweep.splits), console)
    text = console.export_text()
    assert "Per-placement comparison (every pair, split by split on shared validation " \
           "splits)" in text and "fold" not in text.lower()  # hold-out: no folds anywhere
    with pytest.raises(AssertionError, match="the test rows were read"):
        guarded.X_test  # noqa: B018 - the guard itself works


@pytest.mark.slow
def test_a_holdout_confirmation_uses_its_split_ratio(dataset, storage):
    sweep = sweep_of()
    run_search(sweep, dataset, storage_url=storage, device="cpu", batch=3)
    study = optuna.load_study(study_name="small", storage=storage)
    run_confirm(study, dataset, top=2, repeats=3, device="cpu")
    confirm = optuna.load_study(study_name="small:confirm", storage=storage)
    c = build_confirmation(confirm, folds=sweep.splits)
    assert c.holdout and c.ratio == pytest.approx(1 / 3)
    base = c.rows[0]
    scores = [t.user_attrs[records.FOLD_ACCURACIES][0] for t in confirm.trials
              if t.user_attrs.get(records.ROLE) == records.ROLE_BASELINE]
    # Nadeau-Bengio by hand: var(scores) * (1/n + n_val/n_train)
    se = math.sqrt(np.var(scores, ddof=1) * (1 / 3 + 1 / 3))
    assert corrected_se(scores, ratio=1 / 3) == pytest.approx(se)
    if se > 0:
        half = (base.accuracy.high - base.accuracy.low) / 2
        from scipy import stats

        assert half == pytest.approx(stats.t.ppf(0.975, 2) * se)
    # what the user reads speaks of validation splits and validation accuracy, not folds
    from rich.console import Console

    from dropsweep.render.confirmation import render_confirmation
    from dropsweep.render.report import report_to_csv
    from dropsweep.answers.report import build_report

    console = Console(record=True, width=250, color_system=None)
    render_confirmation(c, console)
    text = console.export_text()
    assert "repeated hold-out on new validation splits" in text
    assert "splits" in text and "validation acc." in text and "fold" not in text.lower()
    if c.verdict is not None:
        assert "validation accuracy" in text
    header = report_to_csv(build_report(study)).splitlines()[0].split(",")
    assert header[-1] == "validation_accuracy" and not any("fold" in h for h in header)


def test_a_validation_split_too_small_for_a_class_is_one_line(dataset):
    small = Dataset(**{**dataset.__dict__, "X": dataset.X[:44], "y": dataset.y[:44]})  # 40 a, 4 b
    with pytest.raises(SweepError) as err:
        check_folds(small, sweep_of("{protocol: holdout, validation: 0.2}"))
    assert "eval.validation: a validation fraction of 0.2 leaves class 'b' (4 rows)" in str(err.value)


def test_the_digits_example_runs_on_a_holdout_split_with_its_test_rows_held_back(tmp_path):
    from pathlib import Path

    from dropsweep.answers.report import build_report
    from dropsweep.sweep.file import apply_overrides, load_sweep

    path = Path(__file__).resolve().parents[1] / "sweeps" / "digits.yaml"
    sweep = build_sweep(apply_overrides(load_sweep(str(path)), [
        "search.trials=6", "train.epochs=5", "search.sampler=random"]))
    data = load_dataset(sweep)
    assert (len(data.X), len(data.X_test), data.scale, data.pixel_max) == (1437, 360, "unit", 16.0)
    storage = f"sqlite:///{tmp_path}/d.db"
    run_search(sweep, data, storage_url=storage, device="cpu", batch=6)
    report = build_report(optuna.load_study(study_name="digits", storage=storage))
    assert report.n_trials == 6 and report.best.value > 0.5  # ten classes: chance is 0.1
    assert len(report.best.fold_accuracies) == 1
    # the report speaks of the validation split, and shows no spread over one split
    from rich.console import Console

    from dropsweep.render.report import render_report

    console = Console(record=True, width=250, color_system=None)
    render_report(report, "table", console)
    text = console.export_text()
    assert "scored on    one hold-out validation split" in text
    assert "validation accuracy % by epoch" in text and "held-out" not in text
    assert " ± " not in text


def test_one_se_on_a_holdout_study_uses_the_binomial_standard_error(dataset, storage):
    from dropsweep.answers.report import build_report
    from dropsweep.answers.rows import TrialRow
    from dropsweep.answers.select import select, standard_error

    row = TrialRow(number=3, state="COMPLETE", value=0.9, params={"placement": "none"},
                   fold_accuracies=(0.9,), accuracy_mean=0.9)
    assert standard_error(row) is None  # one split, no size known: no spread
    assert standard_error(row, 400) == pytest.approx(math.sqrt(0.9 * 0.1 / 400))  # 0.015
    close = TrialRow(number=5, state="COMPLETE", value=0.89, params={"placement": "none"},
                     fold_accuracies=(0.89,), accuracy_mean=0.89)
    from dropsweep.families.mlp import DIMENSIONS

    chosen = select([row, close], "1se", DIMENSIONS, validation_rows=400)
    assert chosen.threshold == pytest.approx(0.9 - 0.015)
    run_search(sweep_of(), dataset, storage_url=storage, device="cpu", batch=3)
    study = optuna.load_study(study_name="small", storage=storage)
    assert study.user_attrs[records.VALIDATION_ROWS] == 20
    report = build_report(study, select_rule="1se")
    best = report.selection.best
    p = best.fold_accuracies[0]
    assert report.selection.threshold == pytest.approx(p - math.sqrt(p * (1 - p) / 20))


def test_the_fashion_mnist_example_is_the_articles_set_up():
    """The TensorFlow article's network and training as the baseline, its dropout set-up
    inside the space, hold-out validation and the official test set; and the article's exact
    configuration runs as a listed sweep (docs/images.md)."""
    from pathlib import Path

    from dropsweep.families.mlp import config
    from dropsweep.sweep.file import apply_overrides, load_sweep

    path = str(Path(__file__).resolve().parents[1] / "sweeps" / "fashion-mnist.yaml")
    sweep = build_sweep(load_sweep(path))
    assert (sweep.data.dataset, sweep.data.scale, sweep.model.hidden) == (
        "fashion_mnist", "unit", (200, 100, 60))
    assert (sweep.train.epochs, sweep.train.batch_size) == (60, 32)
    assert (sweep.eval.protocol, sweep.eval.validation, sweep.eval.test) == (
        "holdout", 0.1, "official")
    assert sweep.baseline == config("none", learning_rate=0.01, momentum=0.0)
    assert sweep.balanced
    article = config("both", input_rate=0.2, hidden_rate=0.2, learning_rate=0.01, momentum=0.0)
    from dropsweep.sweep.space import contains

    assert all(contains(sweep.space[d], article[d]) for d in article)
    listed = build_sweep(apply_overrides(load_sweep(path), [
        "space=[{placement: both, input_rate: 0.2, hidden_rate: 0.2, learning_rate: 0.01, "
        "momentum: 0}]"]))
    assert listed.configs == (article,) and not listed.balanced
