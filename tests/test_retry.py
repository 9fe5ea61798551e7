"""A batch that runs out of memory trains in halves (issue 14, item 6): dropsweep.train.retry on
its own, with a fake out-of-memory error, and inside the runner with the real engine."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from dropsweep import records

from dropsweep.train import checkpoints

from dropsweep.train import retry
from dropsweep.sweep.config import build_sweep
from dropsweep.data.dataset import load_dataset
from dropsweep.train.devices import out_of_memory
from dropsweep.study.runner import run_search
from dropsweep.storage.open import load_study, open_storage
from dropsweep.sweep.file import apply_overrides, load_sweep

REPO = Path(__file__).resolve().parents[1]


class FakeOOM(Exception):
    pass


def result_of(item: int) -> float:
    """What training ``item`` gives, whatever else trains beside it."""
    return item * 1.5 + 1


def fitting(k: int, calls: list[list[int]]):
    def train(batch):
        calls.append(list(batch))
        if len(batch) > k:
            raise FakeOOM(f"tried to allocate {len(batch)} GiB")
        return [result_of(i) for i in batch]
    return train


def is_fake(exc: BaseException) -> bool:
    return isinstance(exc, FakeOOM)


@pytest.mark.parametrize("size,k", [(16, 16), (16, 5), (7, 2), (5, 1), (3, 2)])
def test_a_batch_too_big_trains_in_halves_with_the_results_of_an_unhalved_run(size, k):
    calls: list[list[int]] = []
    retried: list[list[int]] = []
    got = retry.train_in_halves(list(range(size)), fitting(k, calls), is_fake,
                                fail=lambda i, e: None,
                                before_retry=lambda batch, e: retried.append(list(batch)))
    assert got == [result_of(i) for i in range(size)]
    assert calls[0] == list(range(size))
    assert all(len(c) <= k for c in calls if c not in retried)
    trained = sorted(i for c in calls if c not in retried for i in c)
    assert trained == list(range(size))  # each place trained once to the end
    if size <= k:
        assert retried == []


def test_halves_split_in_order_the_first_taking_the_odd_one():
    calls: list[list[int]] = []
    retry.train_in_halves(list(range(7)), fitting(2, calls), is_fake, fail=lambda i, e: None)
    assert calls == [[0, 1, 2, 3, 4, 5, 6], [0, 1, 2, 3], [0, 1], [2, 3], [4, 5, 6], [4, 5], [6]]
    assert retry.halves(7) == (4, 3) and retry.halves(1) == (1, 0)


def test_a_lone_trial_out_of_memory_is_a_failed_result_not_a_crash():
    def train(batch):
        if 2 in batch:
            raise FakeOOM("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [result_of(i) for i in batch]

    got = retry.train_in_halves([0, 1, 2, 3], train, is_fake,
                                fail=lambda i, e: f"failed: {e}")
    assert got == [result_of(0), result_of(1),
                   "failed: CUDA out of memory. Tried to allocate 2.00 GiB", result_of(3)]


def test_other_errors_are_not_retried():
    calls = []

    def train(batch):
        calls.append(batch)
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        retry.train_in_halves([0, 1, 2], train, is_fake, fail=lambda i, e: None)
    assert len(calls) == 1


def test_torch_out_of_memory_is_what_the_runner_halves_on():
    assert out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert not out_of_memory(RuntimeError("something else"))


# ----------------------------------------------------------------------------- in the runner


def sonar_sweep():
    return build_sweep(apply_overrides(load_sweep(str(REPO / "sweeps" / "sonar.yaml")), (
        "train.epochs=4", "train.eval_every=1", "cv.folds=3", "search.pruner=none")))


def test_the_runner_trains_an_out_of_memory_batch_in_halves(tmp_path, monkeypatch, sonar_dir):
    """A fake engine that reports a step and writes a checkpoint, then runs out of memory for
    more than 2 trials: every trial completes, with no value of the failed attempt left in
    its curve, and no half resumes the failed attempt's checkpoint."""
    sweep = sonar_sweep()
    dataset = load_dataset(sweep)
    family = type(sweep.family)
    real = family.train
    seen: list[tuple[int, object]] = []

    def train(self, configs, folds, sweep_, seed, hooks):
        seen.append((len(configs), hooks.resume))
        if len(configs) > 2:
            hooks.on_checkpoint(1, [0.123] * len(configs))
            if hooks.save is not None:
                hooks.save({"epoch": 1, "results": []})
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return real(self, configs, folds, sweep_, seed, hooks)

    monkeypatch.setattr(family, "train", train)
    notices: list[str] = []
    from dropsweep.study.summary import SearchEvents

    url = f"sqlite:///{tmp_path / 'oom.db'}"
    saves = tmp_path / "checkpoints"
    summary = run_search(sweep, dataset, storage_url=url, trials=5, batch=5,
                         events=SearchEvents(on_notice=notices.append), checkpoint_dir=saves)
    assert summary.finished == 5
    study = load_study(open_storage(url), summary.study_name, url)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5
    for t in trials:
        assert 0.123 not in t.intermediate_values.values(), t.intermediate_values
        assert sorted(t.intermediate_values) == [1, 2, 3, 4]
    assert [n for n, _ in seen] == [5, 3, 2, 1, 2]  # 5 -> 3 + 2, 3 -> 2 + 1
    assert all(resume is None for _, resume in seen)
    assert notices[:2] == [
        "5 trials ran out of memory on cpu trained together: they train again in halves of "
        "3 and 2",
        "3 trials ran out of memory on cpu trained together: they train again in halves of "
        "2 and 1"]
    assert list(checkpoints.found(checkpoints.study_dir(
        saves, study.study_name, study.user_attrs[records.STUDY_UID]))) == []
    # the halves' trials are marked as their own batch, which is what a resume looks for
    assert [t.user_attrs[records.BATCH] for t in trials] == [0, 0, 2, 3, 3]


def test_a_trial_out_of_memory_alone_fails_with_the_reason(tmp_path, monkeypatch, sonar_dir):
    sweep = sonar_sweep()
    dataset = load_dataset(sweep)
    family = type(sweep.family)

    def train(self, configs, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

    monkeypatch.setattr(family, "train", train)
    url = f"sqlite:///{tmp_path / 'oom.db'}"
    summary = run_search(sweep, dataset, storage_url=url, trials=2, batch=2,
                         checkpoint_dir=tmp_path / "c")
    study = load_study(open_storage(url), summary.study_name, url)
    failed = [t for t in study.get_trials() if t.state == TrialState.FAIL]
    assert failed, [t.state for t in study.get_trials()]
    assert failed[0].user_attrs[records.FAIL_REASON] == (
        "out of memory on cpu even trained alone (CUDA out of memory. Tried to allocate "
        "9.00 GiB)")


def test_confirm_trains_an_out_of_memory_repeat_in_halves(tmp_path, monkeypatch, sonar_dir):
    """`dropsweep confirm` trains each repeat's configurations as one batch: out of memory
    for more than one, each trains alone and every (configuration, repeat) is recorded."""
    from dropsweep.study.confirm import run_confirm

    sweep = sonar_sweep()
    dataset = load_dataset(sweep)
    url = f"sqlite:///{tmp_path / 'oom.db'}"
    summary = run_search(sweep, dataset, storage_url=url, trials=3, batch=3)
    family = type(sweep.family)
    real = family.train
    sizes: list[int] = []

    def train(self, configs, *args, **kwargs):
        sizes.append(len(configs))
        if len(configs) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(self, configs, *args, **kwargs)

    monkeypatch.setattr(family, "train", train)
    study = load_study(open_storage(url), summary.study_name, url)
    done = run_confirm(study, dataset, top=2, repeats=2)
    assert done.done == done.total == 6
    confirm = load_study(open_storage(url), done.study_name, url)
    assert [t.state for t in confirm.get_trials()] == [TrialState.COMPLETE] * 6
    assert sizes == [3, 2, 1, 1, 1] * 2


def test_a_trial_taken_by_another_worker_is_left_out_of_the_halves(tmp_path, monkeypatch,
                                                                   sonar_dir):
    """A trial another worker failed as stale during the attempt that ran out of memory is
    no longer this worker's: the halves train the others only, and it stays as it was."""
    sweep = sonar_sweep()
    dataset = load_dataset(sweep)
    family = type(sweep.family)
    real = family.train
    url = f"sqlite:///{tmp_path / 'oom.db'}"
    trained: list[int] = []

    def train(self, configs, folds, sweep_, seed, hooks):
        trained.append(len(configs))
        if len(configs) > 2:
            other = optuna.load_study(study_name="sonar", storage=url)
            taken = other.get_trials()[1]
            other._storage.set_trial_state_values(taken._trial_id, TrialState.FAIL)
            hooks.on_checkpoint(1, [0.5] * len(configs))  # learns that #1 was taken
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(self, configs, folds, sweep_, seed, hooks)

    monkeypatch.setattr(family, "train", train)
    notices: list[str] = []
    from dropsweep.study.summary import SearchEvents

    run_search(sweep, dataset, storage_url=url, trials=4, batch=4,
               events=SearchEvents(on_notice=notices.append))
    study = load_study(open_storage(url), "sonar", url)
    states = {t.number: t.state for t in study.get_trials()}
    assert states[1] == TrialState.FAIL
    assert [states[n] for n in (0, 2, 3)] == [TrialState.COMPLETE] * 3
    assert trained[:3] == [4, 1, 2]  # halves [0, 1] (without #1) and [2, 3]
    assert any("#1 of this worker" in n for n in notices), notices
