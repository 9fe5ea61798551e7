"""Checkpoints of long batches: a batch resumed from its last checkpoint finishes exactly as
an uninterrupted run on the same engine; files are written atomically, loaded weights-only,
claimed by one worker only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dropsweep.train import checkpoints
from dropsweep.train.hooks import TrainHooks
from dropsweep.families.mlp import config as mlp_config
from dropsweep.families.mlp.engine import TrainSettings, train_trials
from dropsweep.data.protocols import make_folds, make_holdout
from helpers import Every, StopAfter


@pytest.fixture(params=["c", "torch"])
def engine(request: pytest.FixtureRequest) -> str:
    from dropsweep.families.mlp import kernel

    if request.param == "c" and kernel.load() is None:
        pytest.skip(f"the C kernel is not available here: {kernel.unavailable()}")
    return request.param




def data(rows: int = 90, features: int = 6, classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(rows) % classes
    X = (rng.normal(size=(rows, features)) + y[:, None]).astype(np.float32)
    return X, y


CONFIGS = [mlp_config("both", 0.2, 0.4, 0.05, 0.9, 2.0), mlp_config("input", 0.3),
           mlp_config("hidden", 0.0, 0.5, 0.02, 0.5), mlp_config()]


def same(a, b) -> None:
    for ra, rb in zip(a, b):
        assert ra.fold_accuracies == rb.fold_accuracies and ra.curve == rb.curve
        assert ra.epochs == rb.epochs and ra.pruned == rb.pruned and ra.failure == rb.failure
        assert ra.train_accuracy == rb.train_accuracy and ra.test_log_loss == rb.test_log_loss
        if ra.model is not None:
            assert all(torch.equal(p, q) for p, q in
                       zip(ra.model.parameters(), rb.model.parameters()))


@pytest.mark.slow
@pytest.mark.parametrize("at", [1, 3, 4])
@pytest.mark.usefixtures("one_epoch_a_call")
def test_a_batch_resumed_from_any_checkpoint_ends_as_if_never_stopped(engine, tmp_path, at):
    X, y = data()
    folds = make_folds(X, y, 3, seed=0)
    settings = TrainSettings(hidden=(8, 5), epochs=6, batch_size=8, eval_every=2,
                             engine=engine)
    saver = Every()

    def prune_the_second_at_4(epoch, accuracies):
        return [1] if epoch == 4 else []

    whole = train_trials(CONFIGS, folds, settings, seed=11, save=saver,
                         on_checkpoint=prune_the_second_at_4)
    assert [s["epoch"] for s in saver.states] == [1, 2, 3, 4, 5]
    # through a real file, loaded weights-only, as a worker on another machine would
    path = tmp_path / "7.ckpt"
    checkpoints.write_atomic(path, {"trials": [7, 8, 9, 10], "seed": 11,
                                    "configs": [dict(c) for c in CONFIGS],
                                    "state": saver.states[at - 1]})
    state = checkpoints.read(path)["state"]
    resumed = train_trials(CONFIGS, folds, settings, seed=11, resume=state,
                           on_checkpoint=prune_the_second_at_4)
    same(whole, resumed)
    assert resumed[1].pruned and whole[1].pruned


@pytest.mark.slow
def test_a_batch_trained_in_spans_stops_checkpoints_and_resumes_exactly(tmp_path, monkeypatch):
    """The C kernel trains several whole epochs a call (here two: a checkpoint every second
    epoch ends each span): checkpoints are offered at the end of a span, a stop lands before
    one, and a batch resumed from either ends exactly as one never stopped — and as one
    trained an epoch a call (test_kernel.py: spans change no number)."""
    from dropsweep.families.mlp import engine as mlp_engine
    from dropsweep.families.mlp import kernel

    if kernel.load() is None:
        pytest.skip(f"the C kernel is not available here: {kernel.unavailable()}")
    X, y = data()
    folds = make_folds(X, y, 3, seed=0)
    settings = TrainSettings(hidden=(8, 5), epochs=6, batch_size=8, eval_every=2, engine="c")
    spans = []
    real = mlp_engine.MLPEngine.train_epochs

    def counted(self, count, **kw):
        spans.append(count)
        return real(self, count, **kw)

    def prune_the_second_at_4(epoch, accuracies):
        return [1] if epoch == 4 else []

    def train(**kw):
        return train_trials(CONFIGS, folds, settings, seed=11,
                            on_checkpoint=prune_the_second_at_4, **kw)

    monkeypatch.setattr(mlp_engine.MLPEngine, "train_epochs", counted)
    saver = Every()
    whole = train(save=saver)
    assert spans == [2, 2, 2]
    assert [s["epoch"] for s in saver.states] == [2, 4]  # at the ends of spans
    for i, state in enumerate(saver.states):
        path = tmp_path / f"{i}.ckpt"
        checkpoints.write_atomic(path, {"trials": [0, 1, 2, 3], "seed": 11,
                                        "configs": [dict(c) for c in CONFIGS],
                                        "state": state})
        same(whole, train(resume=checkpoints.read(path)["state"]))
    for looks in (0, 1, 2):
        at_stop = AtStop()
        stopped = train(should_stop=StopAfter(looks), save=at_stop)
        assert all(r.interrupted for r in stopped if not r.pruned)
        [state] = at_stop.states
        assert (state["epoch"], state["minibatch"]) == (2 * looks, 0)  # before a span
        assert outcome(train(resume=state)) == outcome(whole)


@pytest.mark.slow
def test_a_span_given_back_for_a_divergence_stops_checkpoints_and_resumes_exactly(
        tmp_path, monkeypatch):
    """A trial diverging inside a span: the span is given back and its epochs up to the
    divergence go one at a time (test_kernel.py). A checkpoint or a stop anywhere — in those
    single epochs, at the divergence, in the spans after — resumes, through a real file, to
    exactly the numbers of the run never stopped, the diverged trial failed with its reason."""
    from dropsweep.families.mlp import engine as mlp_engine
    from dropsweep.families.mlp import kernel

    if kernel.load() is None:
        pytest.skip(f"the C kernel is not available here: {kernel.unavailable()}")
    rng = np.random.default_rng(0)
    y = np.arange(60) % 2
    X = (rng.normal(size=(60, 6)) * 30 + y[:, None]).astype(np.float32)
    folds = make_folds(X, y, 3, seed=1)
    settings = TrainSettings(hidden=(9, 5), epochs=12, batch_size=8, eval_every=6, engine="c")
    configs = [mlp_config(p, 0.2, 0.3, learning_rate=lr, momentum=0.9, max_norm=c)
               for p, lr, c in [("none", 0.01, None), ("input", 0.05, 3.0),
                                ("hidden", 0.02, None), ("both", 0.1, 2.0)]]
    configs.append(mlp_config("none", 0.0, 0.0, learning_rate=3000.0, momentum=0.99,
                              max_norm=None))  # NaN at epoch 4 (as in test_kernel.py)
    spans, restored = [], []
    real_span, real_restore = mlp_engine.MLPEngine.train_epochs, mlp_engine.MLPEngine.restore

    def counted(self, count, **kw):
        spans.append(count)
        return real_span(self, count, **kw)

    def counted_restore(self, snapshot):
        restored.append(1)
        return real_restore(self, snapshot)

    def train(**kw):
        return train_trials(configs, folds, settings, seed=0, **kw)

    monkeypatch.setattr(mlp_engine.MLPEngine, "train_epochs", counted)
    monkeypatch.setattr(mlp_engine.MLPEngine, "restore", counted_restore)
    saver = Every()
    whole = train(save=saver)
    # 1-6 given back; 1 to 4 one at a time; then 5-6 and 7-12 as spans
    assert (spans, len(restored)) == ([6, 2, 6], 1)
    assert whole[4].failure == "loss became NaN at epoch 4, fold 2"
    assert [s["epoch"] for s in saver.states] == [1, 2, 3, 4, 6]
    for i, state in enumerate(saver.states):
        path = tmp_path / f"{i}.ckpt"
        checkpoints.write_atomic(path, {"trials": [0, 1, 2, 3, 4], "seed": 0,
                                        "configs": [dict(c) for c in configs],
                                        "state": state})
        same(whole, train(resume=checkpoints.read(path)["state"]))
    # looks: before the given-back span, before each single epoch's slice, before each span
    for looks in range(7):
        at_stop = AtStop()
        stopped = train(should_stop=StopAfter(looks), save=at_stop)
        assert all(r.interrupted for r in stopped if r.failure is None)
        [state] = at_stop.states
        path = tmp_path / f"stop{looks}.ckpt"
        checkpoints.write_atomic(path, {"trials": [0, 1, 2, 3, 4], "seed": 0,
                                        "configs": [dict(c) for c in configs],
                                        "state": state})
        assert outcome(train(resume=checkpoints.read(path)["state"])) == outcome(whole), looks


def test_a_holdout_batch_of_8_bit_images_resumes_exactly(engine):
    rng = np.random.default_rng(3)
    y = np.arange(120) % 4
    X = rng.integers(0, 256, (120, 16), dtype=np.uint8)
    folds = make_holdout(X, y, 0.25, seed=0, scale="unit", pixel_max=255.0, n_classes=4)
    settings = TrainSettings(hidden=(6,), epochs=4, batch_size=16, eval_every=1,
                             engine=engine)
    saver = Every()
    whole = train_trials(CONFIGS, folds, settings, seed=2, save=saver)
    same(whole, train_trials(CONFIGS, folds, settings, seed=2, resume=saver.states[1]))


@pytest.mark.usefixtures("one_epoch_a_call")
def test_a_checkpoint_of_one_engine_is_refused_by_the_other():
    from dropsweep.families.mlp import kernel

    if kernel.load() is None:
        pytest.skip(f"the C kernel is not available here: {kernel.unavailable()}")
    X, y = data()
    folds = make_folds(X, y, 3, seed=0)
    saver = Every()
    settings = TrainSettings(hidden=(4,), epochs=3, batch_size=8, engine="c")
    train_trials(CONFIGS[:1], folds, settings, seed=0, save=saver)
    with pytest.raises(checkpoints.Unusable, match="checkpoint of the c engine on cpu cannot "
                                                   "continue on the torch engine on cpu"):
        train_trials(CONFIGS[:1], folds, TrainSettings(hidden=(4,), epochs=3, batch_size=8,
                                                       engine="torch"), seed=0,
                     resume=saver.states[0])


def header(**state) -> dict:
    return {"trials": [3], "configs": [{}], "seed": 1, "state": state}


def test_a_file_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "3.ckpt"
    checkpoints.write_atomic(path, header(epoch=1))

    def torn(obj, f):  # a kill while writing: some bytes, then nothing
        f.write(b"PK\x03\x04 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints.torch, "save", torn)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.write_atomic(path, header(epoch=2))
    assert checkpoints.read(path)["state"] == {"epoch": 1}  # the last whole one
    assert [p.name for p in tmp_path.iterdir()] == ["3.ckpt"]  # no temporary left behind


def test_a_temporary_left_by_a_kill_mid_write_is_swept_once_it_is_old(tmp_path):
    import os

    fresh, old = tmp_path / ".tmp-a.ckpt", tmp_path / ".tmp-b.ckpt"
    for path in (fresh, old):
        path.write_bytes(b"half a file")
    os.utime(old, (0, 0))
    assert list(checkpoints.found(tmp_path)) == []
    assert fresh.exists() and not old.exists()  # a fresh one may be a writer's, right now


def test_a_file_that_is_not_a_checkpoint_is_unusable(tmp_path):
    path = tmp_path / "4.ckpt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(checkpoints.Unusable, match="^it is not a file torch.save wrote$"):
        checkpoints.read(path)
    torch.save({"state": {}}, path)
    with pytest.raises(checkpoints.Unusable, match="its header is missing"):
        checkpoints.read(path)


def test_a_checkpoint_cannot_carry_code(tmp_path):
    """Loaded weights-only: a file that would run code when unpickled is refused."""
    import pickle

    class Boom:
        def __reduce__(self):
            return (print, ("this ran",))

    path = tmp_path / "1.ckpt"
    torch.save({"state": Boom()}, path, pickle_module=pickle)
    with pytest.raises(checkpoints.Unusable, match=r"^it holds objects other than tensors "
                       r"and plain data \(print\): refused unread, since loading it could "
                       "run code$") as err:
        checkpoints.read(path)
    assert isinstance(err.value.__cause__, pickle.UnpicklingError)


def test_one_claimant_wins_and_the_saver_retires_what_it_resumed(tmp_path):
    checkpoints.write_atomic(tmp_path / "5.ckpt", header())
    [item] = list(checkpoints.found(tmp_path))
    assert (item.batch, item.token) == (5, None)
    mine = checkpoints.claim(item)
    assert mine is not None and mine.token and checkpoints.claim(item) is None  # taken
    assert [f.token for f in checkpoints.found(tmp_path)] == [mine.token]
    saver = checkpoints.Saver(tmp_path / "9.ckpt", {"trials": [9], "configs": [{}],
                                                    "seed": 1}, every=0.0, resumed=mine.path)
    assert not saver.due()  # every 0: never
    saver({"epoch": 3})
    assert [(f.batch, f.token) for f in checkpoints.found(tmp_path)] == [(9, None)]
    assert checkpoints.read(tmp_path / "9.ckpt") == {"trials": [9], "configs": [{}],
                                                     "seed": 1, "state": {"epoch": 3}}
    saver.done()
    assert list(checkpoints.found(tmp_path)) == []




@pytest.mark.slow
@pytest.mark.usefixtures("one_epoch_a_call")
def test_a_stopped_batch_with_a_trial_that_diverged_goes_on_as_a_whole(dataset, tmp_path):
    """Ctrl-C in the middle of a batch whose one trial had already diverged: nothing of the
    batch is recorded at the stop (issue 25: recorded then, the diverged trial kept its
    number and the others took later ones, another order than a run never stopped); the
    next run goes on from the checkpoint with new trials for every place, in its order,
    the diverged one out of the batch already, and ends with the same results as a run
    never stopped, its diverged trial recorded once, with its reason."""
    import json

    import optuna

    from dropsweep.sweep.config import build_sweep
    from dropsweep.study.liveness import counts_toward_target
    from dropsweep.study.runner import run_search
    from dropsweep.sweep.file import parse_sweep_text

    sweep = build_sweep(parse_sweep_text(
        "name: s\nmodel: {hidden: [8]}\ntrain: {epochs: 60, batch_size: 16, eval_every: 5}\n"
        "cv: {folds: 3, seed: 1}\nsearch: {trials: 3, pruner: none}\nspace:\n"
        "  - {placement: input, input_rate: 0.2, learning_rate: 0.05}\n"
        "  - {placement: none, learning_rate: 1000000.0, momentum: 0.9}\n", "s.yaml"))

    def run(storage: str, **kw) -> optuna.Study:
        run_search(sweep, dataset, storage_url=storage, device="cpu", batch=3,
                   checkpoint_dir=tmp_path / "saves", **kw)
        return optuna.load_study(study_name="s", storage=storage)

    stopped = run(f"sqlite:///{tmp_path}/a.db", stop=StopAfter(30), checkpoint_every=1e-9)
    assert [(t.state.name, counts_toward_target(t)) for t in stopped.trials] == [
        ("FAIL", False)] * 3  # the diverged one too: it goes on with its batch
    [written] = list((tmp_path / "saves").rglob("*.ckpt"))
    assert sum(r["failure"] is not None for r in checkpoints.read(written)["state"]["results"]) == 1
    study = run(f"sqlite:///{tmp_path}/a.db", checkpoint_every=1e-9)
    assert [t.user_attrs["resumed"]["trial"] for t in study.trials[3:]] == [0, 1, 2]
    assert not list((tmp_path / "saves").rglob("*.ckpt*"))
    plain = run(f"sqlite:///{tmp_path}/b.db", checkpoint_every=0)

    def ends(s: optuna.Study) -> list:
        return [(json.dumps(t.user_attrs["config"], sort_keys=True), t.state.name,
                 t.user_attrs.get("fold_accuracies"), t.user_attrs.get("fail_reason"))
                for t in s.trials if counts_toward_target(t)]

    assert ends(study) == ends(plain) and len(ends(plain)) == 3
    assert [state for _, state, _, _ in ends(plain)].count("FAIL") == 1


def test_a_directory_that_cannot_be_written_is_one_line_and_training_goes_on(tmp_path):
    """A checkpoint is a safety net: failing to write one (``--checkpoints`` somewhere
    unwritable, a full disk) says so once and stops trying, and never stops the batch."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    said: list[str] = []
    saver = checkpoints.Saver(blocker / "saves" / "0.ckpt", {"trials": [0], "configs": [{}],
                                                             "seed": 1}, every=1e-9,
                              on_error=said.append)
    assert saver.due()
    saver({"epoch": 1})  # no exception
    assert len(said) == 1 and said[0].startswith(f"checkpoints cannot be written to "
                                                 f"{blocker / 'saves'} (")
    assert said[0].endswith("this batch goes on without them") and not saver.due()
    assert list(checkpoints.found(blocker / "saves")) == []  # and looking there finds none


@pytest.mark.slow
@pytest.mark.parametrize("at", [1, 3])
def test_a_batch_with_adam_resumed_from_a_checkpoint_ends_as_if_never_stopped(tmp_path, at):
    """Adam's moments and step counts travel in the checkpoint (a fold that sat out a
    minibatch has taken fewer steps); the C kernel is SGD's, so auto trains it on torch."""
    X, y = data(rows=88)
    folds = make_folds(X, y, 3, seed=0)
    configs = [mlp_config("both", 0.2, 0.4, optimizer="adam", learning_rate=0.01,
                          max_norm=2.0), CONFIGS[2]]
    settings = TrainSettings(hidden=(8, 5), epochs=5, batch_size=8, eval_every=1)
    saver = Every()
    whole = train_trials(configs, folds, settings, seed=5, save=saver)
    made = saver.states[0]["engine"]
    assert made["engine"] == "torch" and "second" in made and "steps" in made
    path = tmp_path / "3.ckpt"
    checkpoints.write_atomic(path, {"trials": [3, 4], "seed": 5,
                                    "configs": [dict(c) for c in configs],
                                    "state": saver.states[at - 1]})
    resumed = train_trials(configs, folds, settings, seed=5,
                           resume=checkpoints.read(path)["state"])
    same(whole, resumed)


def test_a_saver_deletes_only_a_file_it_wrote(tmp_path):
    """Issue 24, item 1: a batch recorded without ever writing its checkpoint leaves a file
    at its path alone (another's, planted or copied there); one it wrote, it deletes."""
    from helpers import SUITE

    SUITE["hostile checkpoints"] += 1
    theirs = tmp_path / "4.ckpt"
    checkpoints.write_atomic(theirs, header(epoch=2))
    saver = checkpoints.Saver(theirs, {"trials": [4], "configs": [{}], "seed": 1}, every=0.0)
    saver.done()
    assert checkpoints.read(theirs)["state"] == {"epoch": 2}
    saver({"epoch": 1})
    saver.done()
    assert not theirs.exists()


class AtStop(Every):
    """A checkpointer never due (a batch shorter than ``--checkpoint-every``) that keeps a
    stop's state, as ``dropsweep search`` does at Ctrl-C."""

    def due(self) -> bool:
        return False


def outcome(results) -> list[tuple]:
    return [(r.fold_accuracies, r.curve, r.epochs, r.pruned, r.failure, r.train_accuracy,
             r.test_log_loss) for r in results]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["mlp-torch", "mlp-c", "cnn", "custom-loop", "custom-batched"])
def test_a_stop_within_an_epoch_is_checkpointed_and_goes_on_exactly(case, monkeypatch, tmp_path):
    """Issue 25, item 6: Ctrl-C between two slices of an epoch (here slices of one minibatch,
    so stops land within epochs, before and after a pruning) writes the batch's state where
    it stopped — the minibatch it was at and the epoch's row order too — through a real file
    loaded weights-only; every family's check accepts it, and the batch goes on from it to
    exactly the numbers of a run never stopped."""
    from dropsweep.families.cnn import engine as cnn_engine
    from dropsweep.families.custom import batched
    from dropsweep.families.mlp import engine as mlp_engine
    from test_checkpoint_trust import CASES, _kernel

    if case == "mlp-c" and not _kernel():
        pytest.skip("the C kernel is not available here")
    for module in (mlp_engine, cnn_engine, batched):
        monkeypatch.setattr(module, "batches_per_slice", lambda macs: 1)
    sweep, configs, folds, engine = CASES[case]()

    def prune(epoch, accuracies):
        return [1] if epoch == 2 else []

    def train(**kw):
        return sweep.family.train(configs, folds, sweep.sections, 3,
                                  TrainHooks(on_checkpoint=prune, engine=engine, **kw))

    looked = []
    whole = outcome(train(should_stop=lambda: looked.append(1) and False))
    per_epoch = len(looked) // sweep.train.epochs  # looks at the stop flag in an epoch
    where = []
    for looks in (0, 1, per_epoch + 1, 2 * per_epoch + 1):
        saver = AtStop()
        stopped = train(should_stop=StopAfter(looks), save=saver)
        assert all(r.interrupted for r in stopped if not r.pruned)
        [state] = saver.states
        where.append((state["epoch"], state["minibatch"]))
        path = tmp_path / f"{looks}.ckpt"
        checkpoints.write_atomic(path, {"trials": [0, 1, 2], "seed": 3,
                                        "configs": [dict(c) for c in configs],
                                        "state": state})
        state = checkpoints.read(path)["state"]
        sweep.family.check_resume(configs, folds, sweep.sections, 3,
                                  TrainHooks(resume=state, engine=engine))
        assert outcome(train(resume=state)) == whole, (looks, where[-1])
    assert any(minibatch > 0 for _, minibatch in where)  # within an epoch, not at its start
    assert any(epoch >= 2 for epoch, _ in where)  # and after the pruning


def test_a_stopped_epoch_whose_row_order_puts_padding_among_rows_is_refused():
    """Issue 25, item 6: a stop's row order must be each model's own rows shuffled, its
    padding after them (a split one row short pads one position): a file that says
    otherwise would train on padding, and is refused before anything trains."""
    from helpers import SUITE

    from dropsweep.families.mlp import MLP

    SUITE["hostile checkpoints"] += 1
    from test_checkpoint_trust import _mlp_case

    sweep, configs, folds, _ = _mlp_case("torch")
    folds = make_folds(*data(rows=88), 3, seed=0)  # splits of 58 and 59 training rows
    saver = AtStop()
    MLP.train(configs, folds, sweep.sections, 3,
              TrainHooks(save=saver, should_stop=StopAfter(2), engine="torch"))
    [state] = saver.states
    MLP.check_resume(configs, folds, sweep.sections, 3, TrainHooks(resume=state, engine="torch"))
    short = int(folds.n_train.argmin())  # a split with padding: its last position
    order = state["order"].clone()
    m = int((folds.n_train[state["engine"]["fold_of"]] == folds.n_train[short]).nonzero()[0])
    order[m, [0, -1]] = order[m, [-1, 0]]  # the padding position swapped to the front
    with pytest.raises(checkpoints.Unusable, match="padding after them"):
        MLP.check_resume(configs, folds, sweep.sections, 3,
                         TrainHooks(resume={**state, "order": order}, engine="torch"))


@pytest.mark.slow
@pytest.mark.usefixtures("one_epoch_a_call")
def test_a_second_ctrl_c_cuts_the_stop_s_checkpoint_short_and_the_last_one_stays(
        dataset, tmp_path, monkeypatch):
    """Issue 25, item 6 with issue 24's second Ctrl-C: the stop's checkpoint being written
    when a second Ctrl-C lands (it raises KeyboardInterrupt there, as the handler does in
    ``at_once``) is cut short: no half file, the last periodic checkpoint stays whole, the
    search ends as a stop, and the rerun goes on from that checkpoint to the numbers of a
    run never stopped."""
    import optuna

    from dropsweep.sweep.config import build_sweep
    from dropsweep.study.runner import run_search
    from dropsweep.study.stop import StopFlag
    from dropsweep.sweep.file import parse_sweep_text
    from helpers import SUITE

    SUITE["double interrupts"] += 1
    sweep = build_sweep(parse_sweep_text(
        "name: s\nmodel: {hidden: [8]}\ntrain: {epochs: 40, batch_size: 16, eval_every: 5}\n"
        "cv: {folds: 3, seed: 1}\nsearch: {trials: 3, sampler: random, pruner: none}\n",
        "s.yaml"))
    written = []
    write = checkpoints.write_atomic

    def second_ctrl_c(path, payload):
        if "minibatch" in payload["state"]:  # the stop's: the second Ctrl-C lands in it
            def torn(out):
                out.write(b"PK\x03\x04 half")
                raise KeyboardInterrupt
            checkpoints.replace_atomically(path, torn, prefix=checkpoints.TMP_PREFIX,
                                           suffix=checkpoints.SUFFIX)
        write(path, payload)
        written.append(payload["state"]["epoch"])

    monkeypatch.setattr(checkpoints, "write_atomic", second_ctrl_c)

    class Twice(StopFlag):
        def __call__(self) -> bool:
            if self.signal is None and len(written) >= 3:
                self.signal = 2  # the first Ctrl-C, after three periodic checkpoints
            return self.signal is not None

    url = f"sqlite:///{tmp_path}/a.db"
    summary = run_search(sweep, dataset, storage_url=url, device="cpu", batch=3,
                         stop=Twice(), checkpoint_dir=tmp_path / "saves",
                         checkpoint_every=1e-9)
    assert summary.stopped_by == 2
    files = [p for p in (tmp_path / "saves").rglob("*") if p.is_file()]
    assert [p.name for p in files] == ["0.ckpt"]  # no half file beside it
    state = checkpoints.read(files[0])["state"]
    assert "minibatch" not in state and state["epoch"] == written[-1] == 3
    monkeypatch.setattr(checkpoints, "write_atomic", write)
    run_search(sweep, dataset, storage_url=url, device="cpu", batch=3,
               checkpoint_dir=tmp_path / "saves", checkpoint_every=1e-9)
    study = optuna.load_study(study_name="s", storage=url)
    assert {t.user_attrs["resumed"]["epoch"] for t in study.trials[3:]} == {3}
    plain = f"sqlite:///{tmp_path}/b.db"
    run_search(sweep, dataset, storage_url=plain, device="cpu", batch=3, checkpoint_every=0,
               checkpoint_dir=tmp_path / "plain")

    def folds(url: str) -> list:
        return [t.user_attrs["fold_accuracies"] for t in
                optuna.load_study(study_name="s", storage=url).trials
                if t.state.name == "COMPLETE"]

    assert folds(url) == folds(plain) and len(folds(plain)) == 3
