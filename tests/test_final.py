"""``dropsweep test``: the chosen configuration and the baseline scored once on the test rows,
trained on every searched row, compared seed by seed; stored with a fingerprint of the test
set, shown again rather than re-scored, re-scored only when asked and then recorded."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from click.testing import CliRunner

from dropsweep import records
from dropsweep.cli import main
from dropsweep.config import build_sweep
from dropsweep.data import Dataset, fingerprint, hold_back_test, with_scale
from dropsweep.errors import DropsweepError
from dropsweep.final import run_test, stored_result
from dropsweep.runner import run_search
from dropsweep.stats import compare, interval
from dropsweep.sweepfile import parse_sweep_text
from helpers import SUITE

SWEEP = """
name: small
model: {hidden: [8]}
train: {epochs: 6, batch_size: 16, eval_every: 3}
cv: {seed: 1}
eval: {protocol: holdout, validation: 0.25, test: 0.25}
search: {trials: 5, sampler: random, seed: 0, pruner: none}
"""


def sweep_of(text: str = SWEEP):
    return build_sweep(parse_sweep_text(text, "test.yaml"))


def prepared(dataset: Dataset, sweep) -> Dataset:
    return hold_back_test(with_scale(dataset, sweep), sweep)


@pytest.fixture
def searched(dataset, storage):
    sweep = sweep_of()
    data = prepared(dataset, sweep)
    run_search(sweep, data, storage_url=storage, device="cpu", batch=5)
    return optuna.load_study(study_name="small", storage=storage), data


def test_the_seed_paired_comparison_is_a_paired_t_test_by_hand():
    a, b = [0.90, 0.92, 0.91], [0.88, 0.90, 0.90]
    # d = .02, .02, .01: mean .016667, sd .0057735, se .0033333, t = 5.0 on 2 df
    cmp = compare(a, b, ratio=0.0)
    assert cmp.diff.mean == pytest.approx(1 / 60) and cmp.t == pytest.approx(5.0)
    from scipy import stats

    assert cmp.p == pytest.approx(2 * stats.t.sf(5.0, 2)) and 0.03 < cmp.p < 0.04
    half = stats.t.ppf(0.975, 2) * 0.0057735 / math.sqrt(3)
    assert (cmp.diff.low, cmp.diff.high) == pytest.approx((1 / 60 - half, 1 / 60 + half), 1e-4)
    assert interval(a, ratio=0.0).high - interval(a, ratio=0.0).mean == pytest.approx(
        stats.t.ppf(0.975, 2) * np.std(a, ddof=1) / math.sqrt(3))


def test_the_winner_and_the_baseline_are_scored_on_the_test_rows_once(searched, monkeypatch):
    study, data = searched
    seen = []
    from dropsweep.families.mlp import MLP

    original = MLP.train

    def spy(self, configs, folds, sweep, seed, **kw):
        seen.append((int(folds.n_train[0]), int(folds.n_test[0]), seed, sweep.train.eval_every))
        return original(configs, folds, sweep, seed, **kw)

    monkeypatch.setattr(type(MLP), "train", spy)
    result = run_test(study, data, repeats=3, device="cpu")
    # every searched row trains (validation rows included), the 20 test rows score; the
    # test rows are looked at once, at the end of training
    assert [s[:2] for s in seen] == [(60, 20)] * 3 and all(s[3] == 6 for s in seen)
    assert len({s[2] for s in seen}) == 3 and result.seeds == [s[2] for s in seen]
    best = max((t for t in study.trials if t.value is not None), key=lambda t: (t.value, -t.number))
    assert result.chosen.number == best.number and result.chosen.rule == "best"
    assert result.n_test == 20 and result.rounds == 1
    assert all(round(a * 20) == pytest.approx(a * 20) for a in result.chosen_scores)
    assert result.vs_baseline == compare(result.chosen_scores, result.baseline_scores, ratio=0.0)
    test = optuna.load_study(study_name="small:test", storage=study._storage)
    assert test.user_attrs[records.TEST_FINGERPRINT] == fingerprint(data.X_test, data.y_test)
    assert test.user_attrs[records.TEST_OF] == "small"
    assert len(test.trials) == 6

    # again: the stored answer, nothing trained
    seen.clear()
    again = run_test(study, data, repeats=3, device="cpu")
    assert seen == [] and again == stored_result(study) and again.chosen_scores == \
        result.chosen_scores
    # --rescore: trained again, and recorded
    rescored = run_test(study, data, repeats=3, device="cpu", rescore=True)
    assert len(seen) == 3 and rescored.rounds == 2
    test = optuna.load_study(study_name="small:test", storage=study._storage)
    assert len(test.user_attrs[records.TEST_RESCORED]) == 1 and len(test.trials) == 12


def test_a_changed_test_set_is_refused_unless_rescored(searched):
    study, data = searched
    run_test(study, data, repeats=2, device="cpu")
    other = Dataset(**{**data.__dict__, "y_test": data.y_test[::-1].copy()})
    with pytest.raises(DropsweepError, match="not the ones it was tested on"):
        run_test(study, other, repeats=2, device="cpu")
    assert run_test(study, other, repeats=2, device="cpu", rescore=True).rounds == 2


def test_no_test_rows_and_no_such_trial_are_one_line(dataset, storage, searched):
    study, data = searched
    with pytest.raises(DropsweepError, match="has no test rows"):
        run_test(study, Dataset(**{**data.__dict__, "X_test": None, "y_test": None}))
    with pytest.raises(DropsweepError, match="--trial 99: study 'small' has no complete trial"):
        run_test(study, data, number=99)


def _digits_study(tmp_path, monkeypatch, *names: str) -> CliRunner:
    """A CliRunner in ``tmp_path`` where s.yaml (SWEEP on the digits, 3 epochs) was searched
    as study 'small', and as each of ``names`` besides."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(SWEEP.replace("name: small", "name: small\ndata: "
                                                    "{dataset: digits}"))
    runner = CliRunner()
    for study in (None, *names):
        args = ["search", "s.yaml", "--set", "train.epochs=3", "-q"]
        ok = runner.invoke(main, args + (["--study", study] if study else []),
                           catch_exceptions=False)
        assert ok.exit_code == 0, ok.stderr
    return runner


def test_the_command_and_the_report(tmp_path, monkeypatch):
    runner = _digits_study(tmp_path, monkeypatch)
    result = runner.invoke(main, ["test", "--repeats", "2"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert "Test (small:test: 450 test rows, never searched)" in result.stdout
    assert "seed-paired t-test" in result.stdout and "scored once" in result.stdout
    report = runner.invoke(main, ["report"], catch_exceptions=False).stdout
    assert report.splitlines()[1].split() == ["study", "small"]  # not its companion
    assert "Test (small:test" in report
    bad = runner.invoke(main, ["test", "--trial", "99"])
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- second looks


@pytest.fixture
def training(monkeypatch):
    """The seeds each training of the chosen and the baseline used, in order."""
    from dropsweep.families.mlp import MLP

    seeds: list[int] = []
    original = MLP.train

    def spy(self, configs, folds, sweep, seed, **kw):
        seeds.append(seed)
        return original(configs, folds, sweep, seed, **kw)

    monkeypatch.setattr(type(MLP), "train", spy)
    return seeds


def test_more_seeds_after_a_stored_answer_are_a_second_look(searched, training):
    SUITE["test-set second looks"] += 1
    study, data = searched
    first = run_test(study, data, repeats=3, device="cpu")
    training.clear()
    notes: list[str] = []
    shown = run_test(study, data, repeats=5, device="cpu", on_notice=notes.append)
    # the stored answer, as stored: no seed trained on the test rows, nothing recorded
    assert training == [] and shown == first and len(shown.seeds) == 3 and shown.rounds == 1
    assert len(notes) == 1 and "3 seeds, not 5" in notes[0] and "--rescore" in notes[0]
    test = optuna.load_study(study_name="small:test", storage=study._storage)
    assert len(test.trials) == 6 and records.TEST_RESCORED not in test.user_attrs
    # --rescore: five seeds, a second look, recorded
    more = run_test(study, data, repeats=5, device="cpu", rescore=True)
    assert len(training) == 5 and len(more.seeds) == 5 and more.rounds == 2
    assert more.seeds[:3] == first.seeds
    test = optuna.load_study(study_name="small:test", storage=study._storage)
    assert len(test.user_attrs[records.TEST_RESCORED]) == 1


def test_a_look_a_stop_cut_short_goes_on_as_it_began_not_as_a_second_look(searched, training):
    from dropsweep.runner import StopFlag

    study, data = searched
    stop = StopFlag()
    part = run_test(study, data, repeats=3, device="cpu", stop=stop,
                    on_repeat=lambda r: setattr(stop, "signal", 2))  # as Ctrl-C would
    assert len(part.seeds) == 1 and len(training) == 1
    # asked for another trial and more seeds, it finishes the look it began, and says so
    notes: list[str] = []
    other = next(t.number for t in study.trials if t.value is not None
                 and t.number != part.chosen.number
                 and t.user_attrs[records.CONFIG] != part.chosen.config.to_dict())
    done = run_test(study, data, number=other, repeats=5, device="cpu", on_notice=notes.append)
    assert len(training) == 3 and done.seeds[0] == part.seeds[0] and len(done.seeds) == 3
    assert done.chosen == part.chosen and done.rounds == 1
    assert len(notes) == 1 and f"trial #{other}" in notes[0] and "--rescore" in notes[0]
    # stopped before one repeat is scored: nothing to show, not a mistake
    stop = StopFlag()
    stop.signal = 2
    assert run_test(study, data, repeats=3, device="cpu", stop=stop, rescore=True) is None


def test_another_trial_after_a_stored_answer_is_a_second_look(searched, training):
    SUITE["test-set second looks"] += 1
    study, data = searched
    first = run_test(study, data, repeats=2, device="cpu")
    other = next(t.number for t in study.trials if t.value is not None
                 and t.number != first.chosen.number
                 and t.user_attrs[records.CONFIG] != first.chosen.config.to_dict())
    training.clear()
    notes: list[str] = []
    shown = run_test(study, data, number=other, repeats=2, device="cpu", on_notice=notes.append)
    assert training == [] and shown == first
    # which trial the stored answer is for, and how to score the other one
    assert len(notes) == 1, notes
    assert f"trial #{first.chosen.number}" in notes[0] and f"trial #{other}" in notes[0]
    assert "second look" in notes[0] and "--rescore" in notes[0]
    # --trial N --rescore scores trial N, recorded as a second look
    rescored = run_test(study, data, number=other, repeats=2, device="cpu", rescore=True)
    assert len(training) == 2 and rescored.rounds == 2
    assert (rescored.chosen.number, rescored.chosen.rule) == (other, "trial")
    test = optuna.load_study(study_name="small:test", storage=study._storage)
    assert len(test.user_attrs[records.TEST_RESCORED]) == 1
    assert test.user_attrs[records.TEST_CHOSEN]["source_trial"] == other
    assert stored_result(study) == rescored


def test_companion_studies_are_refused_as_the_subject_of_search_test_confirm_and_export(
        tmp_path, monkeypatch):
    runner = _digits_study(tmp_path, monkeypatch, "odd:test")
    first = runner.invoke(main, ["test", "--study", "small", "--repeats", "2"],
                          catch_exceptions=False)
    assert first.exit_code == 0, first.stderr
    ok = runner.invoke(main, ["confirm", "--study", "small", "--top", "1", "--repeats", "2",
                              "-q"], catch_exceptions=False)
    assert ok.exit_code == 0, ok.stderr
    for companion in ("small:confirm", "small:test"):
        for command in (["test"], ["confirm"], ["export", "-o", "x.yaml"],
                        ["search", "s.yaml", "--set", "train.epochs=3", "-q"]):
            SUITE["test-set second looks"] += 1
            result = runner.invoke(main, [*command, "--study", companion])
            assert result.exit_code == 2, (command, companion, result.stdout, result.stderr)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
            assert f"'{companion}'" in lines[0] and "--study small" in lines[0], lines[0]
    assert not (tmp_path / "x.yaml").exists()
    names = {s.study_name for s in optuna.get_all_study_summaries(
        "sqlite:///results/dropsweep.db", include_best_trial=False)}
    assert names == {"small", "small:test", "small:confirm", "odd:test"}
    # the search's own test is what it was; a search merely named like a companion is one
    again = runner.invoke(main, ["test", "--study", "small"], catch_exceptions=False)
    assert again.exit_code == 0 and again.stdout == first.stdout
    odd = runner.invoke(main, ["export", "--study", "odd:test", "-o", "odd.yaml"],
                        catch_exceptions=False)
    assert odd.exit_code == 0, odd.stderr


def test_the_command_shows_a_stored_answer_as_stored(tmp_path, monkeypatch):
    SUITE["test-set second looks"] += 1
    runner = _digits_study(tmp_path, monkeypatch)
    first = runner.invoke(main, ["test", "--repeats", "2"], catch_exceptions=False)
    assert first.exit_code == 0, first.stderr
    more = runner.invoke(main, ["test", "--repeats", "5"], catch_exceptions=False)
    assert more.exit_code == 0, more.stderr
    assert more.stdout == first.stdout  # two seeds, scored once: the stored answer
    notes = [line for line in more.stderr.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and "2 seeds, not 5" in notes[0] and "--rescore" in notes[0]
    # another trial: the stored answer, saying which trial it is for
    study = optuna.load_study(study_name="small", storage="sqlite:///results/dropsweep.db")
    stored = stored_result(study)
    other = next(t.number for t in study.trials if t.value is not None
                 and t.user_attrs[records.CONFIG] != stored.chosen.config.to_dict())
    shown = runner.invoke(main, ["test", "--trial", str(other)], catch_exceptions=False)
    assert shown.exit_code == 0 and shown.stdout == first.stdout, shown.stderr
    notes = [line for line in shown.stderr.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and f"trial #{stored.chosen.number} " in notes[0], notes
    assert f"trial #{other} (--trial {other})" in notes[0] and "second look" in notes[0]
    rescored = runner.invoke(main, ["test", "--repeats", "5", "--rescore"],
                             catch_exceptions=False)
    assert rescored.exit_code == 0, rescored.stderr
    assert "mean of 5 seeds" in rescored.stdout and "scored 2 times (--rescore)" in \
        rescored.stdout
