"""What a worker trusts in a checkpoint file (issue 24): only its own study's, checked field
by field before anything is trained or recorded; a file it cannot use is set aside or left
alone, never a traceback, never a silent wrong result.

Searches here are real (``run_search`` on the bundled digits, a tiny conv net) and are
stopped as Ctrl-C stops them (a stop flag raised after a few looks): the stopped batch's
trials are failed as interrupted and its last checkpoint stays, as after a kill -9.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest
import torch

from dropsweep import checkpoints, records
from dropsweep.config import build_sweep
from dropsweep.data import load_dataset
from dropsweep.runner import SearchEvents, run_search
from dropsweep.sweepfile import parse_sweep_text

from helpers import SUITE

DIGITS_CNN = """\
name: digits-cnn
data: {dataset: digits, scale: unit}
model: {family: cnn, conv: [4], dense: [8], padding: same}
train: {epochs: 6, batch_size: 64, eval_every: 1}
eval: {protocol: holdout, validation: VALIDATION, test: 0.2}
cv: {seed: 7}
baseline: {optimizer: sgd, learning_rate: 0.05, momentum: 0.9, max_norm: off}
search: {trials: 3, sampler: random, pruner: none, balance: none, seed: 0}
space:
  placement: [none, dense]
  dense_rate: {low: 0.1, high: 0.6}
  optimizer: [sgd]
  learning_rate: {low: 0.01, high: 0.1, log: true}
  momentum: [0.9]
  max_norm: [off]
"""


class StopAfter:
    """A stop flag (as Ctrl-C sets it) raised after ``n`` looks."""

    def __init__(self, n: int) -> None:
        import signal

        self.n, self.signal, self.sigint = n, None, signal.SIGINT

    def __call__(self) -> bool:
        self.n -= 1
        if self.n < 0:
            self.signal = self.sigint
        return self.signal is not None


def sweep_of(validation: float = 0.2):
    return build_sweep(parse_sweep_text(DIGITS_CNN.replace("VALIDATION", str(validation)),
                                        "digits-cnn.yaml"))


def search(db: Path, validation: float = 0.2, notes: list[str] | None = None, **kw
           ) -> optuna.Study:
    """``dropsweep search`` of the digits sweep into ``db`` (checkpoints beside it, the
    default), 3 trials as one batch."""
    sweep = sweep_of(validation)
    url = f"sqlite:///{db}"
    events = SearchEvents(on_notice=(notes if notes is not None else []).append)
    run_search(sweep, load_dataset(sweep), storage_url=url, device="cpu", batch=3,
               events=events, **kw)
    return optuna.load_study(study_name="digits-cnn", storage=url)


def files(root: Path) -> dict[str, bytes]:
    """Every file under ``root``, by its path relative to it, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def complete(study: optuna.Study) -> dict[str, list[float]]:
    """config -> fold accuracies of every complete trial."""
    return {json.dumps(t.user_attrs[records.CONFIG], sort_keys=True):
            t.user_attrs[records.FOLD_ACCURACIES] for t in study.trials
            if t.state.name == "COMPLETE"}


def stopped_with_a_checkpoint(db: Path, validation: float = 0.2) -> Path:
    """A search stopped mid-batch after it wrote checkpoints: its checkpoint file."""
    study = search(db, validation, stop=StopAfter(4), checkpoint_every=1e-9)
    assert sorted(t.state.name for t in study.trials) == ["FAIL"] * 3
    [written] = list((db.parent / "checkpoints").rglob("*.ckpt"))
    return written


def test_two_storages_in_one_directory_with_a_study_of_one_name_never_share_a_checkpoint(
        tmp_path):
    """Issue 24, item 1: x.db and y.db beside each other, each with a study
    'digits-cnn' (y's hold-out split differs). x is stopped after a checkpoint; y is
    stopped before any; y's rerun neither goes on from x's weights nor touches x's file,
    and x then goes on from its own checkpoint to the numbers of a run never stopped."""
    SUITE["hostile checkpoints"] += 1
    saves = tmp_path / "checkpoints"
    stopped_with_a_checkpoint(tmp_path / "x.db")
    before = files(saves)
    y = search(tmp_path / "y.db", 0.3, stop=StopAfter(2), checkpoint_every=0)
    assert sorted(t.state.name for t in y.trials) == ["FAIL"] * 3
    y = search(tmp_path / "y.db", 0.3, checkpoint_every=1e-9)
    assert not [t.number for t in y.trials if records.RESUMED in t.user_attrs]
    assert files(saves) == before  # x's checkpoint, where x left it, byte for byte
    x = search(tmp_path / "x.db", checkpoint_every=1e-9)
    assert sorted(t.user_attrs[records.RESUMED]["trial"] for t in x.trials
                  if records.RESUMED in t.user_attrs) == [0, 1, 2]
    assert complete(x) == complete(search(tmp_path / "plain.db", checkpoint_every=0))
    assert not list(saves.rglob("*.ckpt*"))  # x's own, deleted once its batch was recorded


def test_a_checkpoint_planted_in_a_studys_own_directory_is_refused_and_left_alone(tmp_path):
    """Another study's checkpoint copied into this study's directory under the name of this
    study's stopped batch: refused in one line naming the file and what is not this
    study's, renamed back where it was, never deleted, and nothing goes on from it."""
    SUITE["hostile checkpoints"] += 1
    theirs = stopped_with_a_checkpoint(tmp_path / "other" / "x.db")
    y = search(tmp_path / "y.db", 0.3, stop=StopAfter(2), checkpoint_every=0)
    own = checkpoints.study_dir(tmp_path / "checkpoints", y.study_name,
                                y.user_attrs[records.STUDY_UID])
    own.mkdir(parents=True)
    planted = own / "0.ckpt"
    shutil.copy(theirs, planted)
    notes: list[str] = []
    y = search(tmp_path / "y.db", 0.3, notes, checkpoint_every=1e-9)
    assert not [t.number for t in y.trials if records.RESUMED in t.user_attrs]
    assert planted.read_bytes() == theirs.read_bytes()  # left where it was
    refused = [n for n in notes if str(planted) in n]
    assert len(refused) == 1, notes
    assert "not this study's" in refused[0] and "study id" in refused[0], refused
    assert "storage" in refused[0] and "sweep" in refused[0], refused
    assert [p.name for p in own.iterdir()] == ["0.ckpt"]


def test_a_study_has_one_random_id_and_an_old_study_gets_one_when_it_needs_it(tmp_path):
    """The id binds a study's checkpoints to it: recorded when dropsweep creates the study,
    set on first need for a study made before it existed, and then kept."""
    SUITE["hostile checkpoints"] += 1
    from dropsweep.study import study_uid

    study = search(tmp_path / "a.db", checkpoint_every=0)
    uid = study.user_attrs[records.STUDY_UID]
    assert len(uid) == 32 and study_uid(study) == uid
    other = search(tmp_path / "b.db", checkpoint_every=0)
    assert other.user_attrs[records.STUDY_UID] != uid
    old = optuna.create_study(study_name="old", storage=f"sqlite:///{tmp_path}/c.db")
    first = study_uid(old)
    assert first and study_uid(old) == first == old.user_attrs[records.STUDY_UID]
