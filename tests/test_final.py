"""``dropsweep test``: the chosen dropout set-up, the tuned no-dropout and the baseline scored
once on the test rows, trained on every searched row, compared seed by seed (the tuning and
the dropout gains, Holm-adjusted over the two); stored with a fingerprint of the test set,
shown again rather than re-scored, re-scored only when asked and then recorded."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from click.testing import CliRunner

from dropsweep import records
from dropsweep.cli import main
from dropsweep.sweep.config import build_sweep
from dropsweep.data.dataset import Dataset, fingerprint, hold_back_test, with_scale
from dropsweep.errors import DropsweepError
from dropsweep.answers.tested import stored_result
from dropsweep.study.testset import run_test
from dropsweep.study.runner import run_search
from dropsweep.answers.stats import compare, interval
from dropsweep.sweep.file import parse_sweep_text
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

    def spy(self, configs, folds, sweep, seed, *hooks):
        seen.append((int(folds.n_train[0]), int(folds.n_test[0]), seed, sweep.train.eval_every))
        return original(configs, folds, sweep, seed, *hooks)

    monkeypatch.setattr(type(MLP), "train", spy)
    result = run_test(study, data, repeats=3, device="cpu")
    # every searched row trains (validation rows included), the 20 test rows score; the
    # test rows are looked at once, at the end of training
    assert [s[:2] for s in seen] == [(60, 20)] * 3 and all(s[3] == 6 for s in seen)
    assert len({s[2] for s in seen}) == 3 and result.seeds == [s[2] for s in seen]
    best = _best(study, dropout=True)  # the best validation score with dropout
    assert result.chosen.number == best.number and result.chosen.rule == "best"
    assert result.n_test == 20 and result.rounds == 1
    assert all(round(a * 20) == pytest.approx(a * 20) for a in result.chosen_scores)
    assert result.vs_baseline == compare(result.chosen_scores, result.baseline_scores, ratio=0.0)
    test = optuna.load_study(study_name="small:test", storage=study._storage)
    assert test.user_attrs[records.TEST_FINGERPRINT] == fingerprint(data.X_test, data.y_test)
    assert test.user_attrs[records.TEST_OF] == "small"
    roles = 2 if result.tuned_is_baseline else 3  # the tuned no-dropout, unless the baseline
    assert len(test.trials) == 3 * roles

    # again: the stored answer, nothing trained
    seen.clear()
    again = run_test(study, data, repeats=3, device="cpu")
    assert seen == [] and again == stored_result(study) and again.chosen_scores == \
        result.chosen_scores
    # --rescore: trained again, and recorded
    rescored = run_test(study, data, repeats=3, device="cpu", rescore=True)
    assert len(seen) == 3 and rescored.rounds == 2
    test = optuna.load_study(study_name="small:test", storage=study._storage)
    assert len(test.user_attrs[records.TEST_RESCORED]) == 1 and len(test.trials) == 6 * roles


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


@pytest.mark.slow
def test_the_command_and_the_report(tmp_path, monkeypatch):
    runner = _digits_study(tmp_path, monkeypatch)
    result = runner.invoke(main, ["test", "--repeats", "2"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert "Test (small:test: 450 test rows, never searched)" in result.stdout
    words = " ".join(result.stdout.split())  # the note wraps between words
    assert "seed-paired t-test" in words and "scored once" in words
    report = runner.invoke(main, ["report"], catch_exceptions=False).stdout
    # the Study table's row names the search, not its companion (the answer comes first)
    assert next(line.split() for line in report.splitlines()
                if line.split()[:1] == ["study"]) == ["study", "small"]
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

    def spy(self, configs, folds, sweep, seed, *hooks):
        seeds.append(seed)
        return original(configs, folds, sweep, seed, *hooks)

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
    assert len(test.trials) == 3 * (2 if first.tuned_is_baseline else 3)
    assert records.TEST_RESCORED not in test.user_attrs
    # --rescore: five seeds, a second look, recorded
    more = run_test(study, data, repeats=5, device="cpu", rescore=True)
    assert len(training) == 5 and len(more.seeds) == 5 and more.rounds == 2
    assert more.seeds[:3] == first.seeds
    test = optuna.load_study(study_name="small:test", storage=study._storage)
    assert len(test.user_attrs[records.TEST_RESCORED]) == 1


def test_a_look_a_stop_cut_short_goes_on_as_it_began_not_as_a_second_look(searched, training):
    from dropsweep.study.stop import StopFlag

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


@pytest.mark.slow
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


@pytest.mark.slow
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
    words = " ".join(rescored.stdout.split())  # the note wraps between words
    assert "mean of 5 seeds" in words and "scored 2 times (--rescore)" in words


# ----------------------------------------------------------------------------- three configurations
# (issue 25: the chosen dropout set-up, the tuned no-dropout and the baseline, and two gains)

# The digits, four listed configurations: the baseline (lr 0.01), a tuned no-dropout (lr 0.1)
# and two dropout set-ups; TUNED_IS_BASELINE lists no other no-dropout set-up
LISTED = SWEEP.replace("name: small", "name: small\ndata: {dataset: digits}") + """space:
  - {placement: none, learning_rate: 0.01, momentum: 0.8}
  - {placement: none, learning_rate: 0.1, momentum: 0.9}
  - {placement: input, input_rate: 0.2, learning_rate: 0.1, momentum: 0.9}
  - {placement: hidden, hidden_rate: 0.2, learning_rate: 0.1, momentum: 0.9}
"""
TUNED_IS_BASELINE = LISTED.replace(
    "  - {placement: none, learning_rate: 0.1, momentum: 0.9}\n", "")


def _listed(tmp_path, monkeypatch, text: str = LISTED):
    """(runner, study, its data) after ``text`` was searched on the digits (3 epochs)."""
    from dropsweep.data.dataset import load_dataset
    from dropsweep.study.open import stored_sweep

    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(text)
    runner = CliRunner()
    ok = runner.invoke(main, ["search", "s.yaml", "--set", "train.epochs=3", "-q"],
                       catch_exceptions=False)
    assert ok.exit_code == 0, ok.stderr
    study = optuna.load_study(study_name="small", storage="sqlite:///results/dropsweep.db")
    return runner, study, load_dataset(stored_sweep(study))


def _best(study, dropout: bool):
    """The best complete trial with (or without) dropout, ranked by hand."""
    trials = [t for t in study.trials if t.value is not None
              and (t.user_attrs[records.CONFIG]["placement"] != "none") == dropout]
    return max(trials, key=lambda t: (t.value, -t.number))


@pytest.fixture
def trained(monkeypatch):
    """(seed, placements) of every training call, in order."""
    from dropsweep.families.mlp import MLP

    calls: list[tuple[int, list[str]]] = []
    original = MLP.train

    def spy(self, configs, folds, sweep, seed, *hooks):
        calls.append((seed, [c["placement"] for c in configs]))
        return original(configs, folds, sweep, seed, *hooks)

    monkeypatch.setattr(type(MLP), "train", spy)
    return calls


def _roles_by_repeat(study, round_: int = 1) -> dict[int, dict[str, optuna.trial.FrozenTrial]]:
    test = optuna.load_study(study_name="small:test", storage=study._storage)
    out: dict[int, dict[str, optuna.trial.FrozenTrial]] = {}
    for t in test.trials:
        if t.user_attrs[records.TEST_ROUND] == round_:
            out.setdefault(t.user_attrs[records.REPEAT], {})[t.user_attrs[records.ROLE]] = t
    return out


def test_the_dropout_the_tuned_no_dropout_and_the_baseline_are_scored_seed_paired(
        tmp_path, monkeypatch, trained):
    from dropsweep.render.tested import test_text, test_to_json
    from dropsweep.answers.stats import holm

    _, study, data = _listed(tmp_path, monkeypatch)
    trained.clear()  # the search's
    dropout, tuned = _best(study, True), _best(study, False)
    assert tuned.number != 0, "the listed lr 0.1 no-dropout must beat the baseline here"
    result = run_test(study, data, repeats=3, device="cpu")
    # the best dropout set-up by validation score (no confirmation yet), the best trial of
    # placement none, and the baseline: one training of the three a seed, three seeds
    assert (result.chosen.number, result.chosen.rule) == (dropout.number, "best")
    assert (result.tuned.number, result.tuned.rule) == (tuned.number, "best")
    assert result.tuned.config.to_dict() == tuned.user_attrs[records.CONFIG]
    assert not result.tuned_is_baseline
    assert [len(placements) for _, placements in trained] == [3, 3, 3]
    assert [seed for seed, _ in trained] == result.seeds and len(set(result.seeds)) == 3
    stored = _roles_by_repeat(study)
    assert sorted(stored) == [0, 1, 2]
    for r, roles in stored.items():
        assert set(roles) == {records.ROLE_CANDIDATE, records.ROLE_TUNED, records.ROLE_BASELINE}
        assert len({t.user_attrs[records.SEED] for t in roles.values()}) == 1  # seed-paired
        assert roles[records.ROLE_TUNED].user_attrs[records.SOURCE_TRIAL] == tuned.number
    a = [stored[r][records.ROLE_CANDIDATE].value for r in range(3)]
    t = [stored[r][records.ROLE_TUNED].value for r in range(3)]
    b = [stored[r][records.ROLE_BASELINE].value for r in range(3)]
    assert (result.chosen_scores, result.tuned_scores, result.baseline_scores) == (a, t, b)
    assert result.tuned_accuracy == interval(t, ratio=0.0)
    assert result.tuning_gain == compare(t, b, ratio=0.0)
    assert result.dropout_gain == compare(a, t, ratio=0.0)
    assert result.vs_baseline == compare(a, b, ratio=0.0)  # kept, for what read it before
    assert [result.tuning_p_holm, result.dropout_p_holm] == holm(
        [result.tuning_gain.p, result.dropout_gain.p])
    test = optuna.load_study(study_name="small:test", storage=study._storage)
    assert test.user_attrs[records.TEST_TUNED] == {
        "config": tuned.user_attrs[records.CONFIG], "source_trial": tuned.number, "rule": "best"}
    assert stored_result(study) == result  # read back as scored

    data_json = test_to_json(result, "mlp")
    assert data_json["tuned"]["source_trial"] == tuned.number
    assert data_json["tuned"]["is_baseline"] is False
    for key, gain, p_holm in (("tuning_gain", result.tuning_gain, result.tuning_p_holm),
                              ("dropout_gain", result.dropout_gain, result.dropout_p_holm)):
        assert data_json[key] == {"points": gain.diff.mean, "ci": [gain.diff.low, gain.diff.high],
                                  "t": gain.t, "p": gain.p, "p_holm": p_holm}
    text = test_text(result, "mlp")
    assert "Holm-adjusted over 2 comparisons" in text and "the sweep's baseline (untuned)" in text
    assert f"Tuning gain (tuned no-dropout - baseline): {result.tuning_gain.diff.mean * 100:+.2f}" \
        in text, text
    assert f"Dropout gain (chosen - tuned no-dropout): {result.dropout_gain.diff.mean * 100:+.2f}" \
        in text, text


def _hand_test(storage: str, scores: dict[str, list[float]], tuned: dict | None):
    """A search study 's' and its test study written by hand: one round, ``scores`` per role
    seed by seed; ``tuned``: its TEST_TUNED record (None: a test made before issue 25)."""
    from optuna.trial import create_trial

    from dropsweep.families.mlp import config as mlp_config

    search = optuna.create_study(storage=storage, study_name="s")
    test = optuna.create_study(storage=storage, study_name="s:test", direction="maximize")
    configs = {records.ROLE_BASELINE: mlp_config().to_dict(),
               records.ROLE_TUNED: None if tuned is None else tuned["config"],
               records.ROLE_CANDIDATE: mlp_config("input", input_rate=0.2).to_dict()}
    test.set_user_attr(records.TEST_CHOSEN, {"config": configs[records.ROLE_CANDIDATE],
                                             "source_trial": 7, "rule": "best"})
    if tuned is not None:
        test.set_user_attr(records.TEST_TUNED, tuned)
    test.set_user_attr(records.TEST_ROWS, 100)
    for role, values in scores.items():
        for r, value in enumerate(values):
            test.add_trial(create_trial(
                state=optuna.trial.TrialState.COMPLETE, value=value,
                user_attrs={records.CONFIG: configs[role], records.ROLE: role,
                            records.REPEAT: r, records.SEED: 100 + r, records.TEST_ROUND: 1}))
    return search


def test_the_two_gains_are_holm_adjusted_over_the_two(storage):
    from dropsweep.families.mlp import config as mlp_config
    from dropsweep.render.tested import test_to_json

    chosen, tuned, base = [0.91, 0.92, 0.90, 0.93], [0.90, 0.90, 0.89, 0.92], \
        [0.80, 0.84, 0.81, 0.82]
    record = {"config": mlp_config(learning_rate=0.1).to_dict(), "source_trial": 3,
              "rule": "best"}
    search = _hand_test(storage, {records.ROLE_CANDIDATE: chosen, records.ROLE_TUNED: tuned,
                                  records.ROLE_BASELINE: base}, record)
    result = stored_result(search)
    tuning, dropout = compare(tuned, base, ratio=0.0), compare(chosen, tuned, ratio=0.0)
    assert (result.tuning_gain, result.dropout_gain) == (tuning, dropout)
    # Holm over two: the smaller p doubled, the larger never below it nor above 1
    low, high = sorted([tuning.p, dropout.p])
    adjusted = {tuning.p: None, dropout.p: None}
    adjusted[low] = min(1.0, 2 * low)
    adjusted[high] = max(adjusted[low], min(1.0, high))
    assert result.tuning_p_holm == pytest.approx(adjusted[tuning.p])
    assert result.dropout_p_holm == pytest.approx(adjusted[dropout.p])
    assert result.tuning_p_holm != tuning.p  # adjusted, beside the raw one
    data = test_to_json(result, "mlp")
    assert data["tuning_gain"]["p"] == tuning.p
    assert data["tuning_gain"]["p_holm"] == result.tuning_p_holm
    assert data["dropout_gain"]["points"] == pytest.approx(0.0125)


def test_a_tuned_no_dropout_that_is_the_baseline_trains_once_and_has_no_tuning_gain(
        tmp_path, monkeypatch, trained):
    from dropsweep.render.tested import render_test, test_to_json
    from rich.console import Console

    _, study, data = _listed(tmp_path, monkeypatch, TUNED_IS_BASELINE)
    trained.clear()  # the search's
    result = run_test(study, data, repeats=2, device="cpu")
    # two configurations trained a seed, not three: the baseline is the tuned no-dropout
    assert [len(placements) for _, placements in trained] == [2, 2]
    assert all(placements.count("none") == 1 for _, placements in trained)
    assert result.tuned.number == 0 and result.tuned_is_baseline
    assert result.tuned_scores == result.baseline_scores
    assert all(set(roles) == {records.ROLE_CANDIDATE, records.ROLE_BASELINE}
               for roles in _roles_by_repeat(study).values())
    gain = result.tuning_gain
    assert (gain.diff.mean, gain.diff.low, gain.diff.high) == (0.0, 0.0, 0.0)
    assert math.isnan(gain.p) and math.isnan(result.tuning_p_holm)
    assert result.dropout_gain == compare(result.chosen_scores, result.baseline_scores,
                                          ratio=0.0)
    assert result.dropout_p_holm == result.dropout_gain.p  # Holm over the one test made
    assert test_to_json(result, "mlp")["tuning_gain"]["p"] is None
    console = Console(record=True, width=80, color_system=None)
    render_test(result, "mlp", console)
    text = " ".join(console.export_text().split())
    assert "the tuned no-dropout is the baseline" in text
    assert "Holm-adjusted over 1 comparison;" in text, text
    assert stored_result(study) == result


def test_a_test_stored_before_the_tuned_comparison_reads_and_says_how_to_score_it(
        tmp_path, monkeypatch):
    """tests/golden/before-25.db: a digits study 'small' searched, confirmed (--top 1) and
    tested (two roles) by the code before issue 25; before-25.json: its report then."""
    import json
    import shutil
    from pathlib import Path

    SUITE["test-set second looks"] += 1
    golden = Path(__file__).resolve().parent / "golden"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    shutil.copy(golden / "before-25.db", tmp_path / "results" / "dropsweep.db")
    before = json.loads((golden / "before-25.json").read_text())["small"]["test"]
    runner = CliRunner()
    report = runner.invoke(main, ["report", "--study", "small", "--format", "json"],
                           catch_exceptions=False)
    assert report.exit_code == 0, report.stderr
    now = json.loads(report.stdout)["test"]
    # every figure as it was; nothing about a tuned no-dropout it never scored
    assert {k: v for k, v in now.items() if k not in ("text", "tuned", "tuning_gain",
                                                     "dropout_gain")} == \
        {k: v for k, v in before.items() if k != "text"}
    assert now["tuned"] is None and now["tuning_gain"] is None and now["dropout_gain"] is None
    assert now["text"].startswith(before["text"])
    assert "predates the comparison with the tuned no-dropout" in now["text"]
    assert "dropsweep test --study small --rescore" in now["text"]

    # dropsweep test: the stored answer, in one note saying it predates the comparison
    trials = len(optuna.load_study(study_name="small:test",
                                   storage="sqlite:///results/dropsweep.db").trials)
    shown = runner.invoke(main, ["test", "--study", "small"], catch_exceptions=False)
    assert shown.exit_code == 0, shown.stderr
    notes = [line for line in shown.stderr.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and "predates the comparison with the tuned no-dropout" in notes[0]
    assert "--rescore" in notes[0] and "second look" in notes[0], notes
    test = optuna.load_study(study_name="small:test", storage="sqlite:///results/dropsweep.db")
    assert len(test.trials) == trials and records.TEST_RESCORED not in test.user_attrs
    # --rescore scores it: a second look, recorded
    rescored = runner.invoke(main, ["test", "--study", "small", "--rescore", "--repeats", "2"],
                             catch_exceptions=False)
    assert rescored.exit_code == 0, rescored.stderr
    test = optuna.load_study(study_name="small:test", storage="sqlite:///results/dropsweep.db")
    assert len(test.user_attrs[records.TEST_RESCORED]) == 1
    result = stored_result(optuna.load_study(study_name="small",
                                             storage="sqlite:///results/dropsweep.db"))
    assert result.rounds == 2 and result.tuned is not None and result.tuning_gain is not None


def test_a_round_stopped_part_way_resumes_with_every_role(tmp_path, monkeypatch, trained):
    from dropsweep.study import testset as final
    from dropsweep.study.stop import StopFlag
    from dropsweep.study.open import stored_sweep

    _, study, data = _listed(tmp_path, monkeypatch)
    trained.clear()  # the search's
    stop = StopFlag()
    part = run_test(study, data, repeats=3, device="cpu", stop=stop,
                    on_repeat=lambda r: setattr(stop, "signal", 2))  # Ctrl-C after repeat 0
    assert len(part.seeds) == 1 and part.tuned is not None and not part.tuned_is_baseline
    # killed in repeat 1 after its first trial was recorded: that repeat is not complete
    real, recorded = final._record, []

    def killed(*args, **kw):
        if len(recorded) == 1:
            raise KeyboardInterrupt
        recorded.append(args)
        real(*args, **kw)

    monkeypatch.setattr(final, "_record", killed)
    with pytest.raises(KeyboardInterrupt):
        run_test(study, data, repeats=3, device="cpu")
    monkeypatch.setattr(final, "_record", real)
    assert len(_roles_by_repeat(study)[1]) == 1
    assert stored_result(study) == part  # a repeat is read once every role has it
    done = run_test(study, data, repeats=3, device="cpu")
    # repeat 0 kept, repeat 1 trained again in full, repeat 2 trained: the look it began
    sweep = stored_sweep(study)
    assert [seed for seed, _ in trained] == [final.test_seed(sweep, r) for r in (0, 1, 1, 2)]
    assert done.seeds[0] == part.seeds[0] and len(done.seeds) == 3 and done.rounds == 1
    assert (done.chosen, done.tuned) == (part.chosen, part.tuned)
    assert done.chosen_scores[0] == part.chosen_scores[0]
    assert done.tuned_scores[0] == part.tuned_scores[0]
    for roles in _roles_by_repeat(study).values():
        assert {records.ROLE_CANDIDATE, records.ROLE_TUNED, records.ROLE_BASELINE} <= set(roles)


@pytest.mark.slow
def test_after_a_confirmation_the_best_confirmed_dropout_and_tuned_no_dropout_are_tested(
        tmp_path, monkeypatch):
    from dropsweep.answers.verdict import build_confirmation

    runner, study, data = _listed(tmp_path, monkeypatch)
    ok = runner.invoke(main, ["confirm", "--repeats", "2", "-q"], catch_exceptions=False)
    assert ok.exit_code == 0, ok.stderr
    confirm = optuna.load_study(study_name="small:confirm", storage=study._storage)
    confirmation = build_confirmation(confirm, 1)
    rows = [r for r in confirmation.rows if r.placement != "none"]
    best = max(rows, key=lambda r: (r.accuracy.mean, -r.source_trial))
    none = confirm.user_attrs[records.PER_PLACEMENT]["none"]
    result = run_test(study, data, repeats=2, device="cpu")
    assert (result.chosen.number, result.chosen.rule) == (best.source_trial, "confirmed")
    assert result.chosen.config.to_dict() == best.config
    assert (result.tuned.number, result.tuned.rule) == (none["source_trial"], "confirmed")
    assert result.tuned.config.to_dict() == none["config"]


def test_select_1se_and_trial_n_choose_among_dropout_set_ups(tmp_path, monkeypatch):
    from dropsweep.study.testset import choose
    from dropsweep.study.open import stored_sweep

    _, study, data = _listed(tmp_path, monkeypatch)
    sweep = stored_sweep(study)
    # the simplest within one standard error of the best dropout set-up, not of the best
    # trial: no dropout at all would be simpler still
    simplest = choose(study, sweep, "1se")
    assert simplest.config["placement"] != "none" and simplest.rule == "1se"
    assert choose(study, sweep, "best").number == _best(study, True).number
    # --trial N of a no-dropout trial: tested as asked, and said so once
    notes: list[str] = []
    result = run_test(study, data, number=1, repeats=2, device="cpu", on_notice=notes.append)
    assert result.chosen.number == 1 and result.chosen.rule == "trial"
    assert len(notes) == 1 and "trial #1 has no dropout" in notes[0], notes
