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

from dropsweep import records

from dropsweep.train import checkpoints
from dropsweep.train.hooks import TrainHooks
from dropsweep.sweep.config import build_sweep
from dropsweep.data.dataset import load_dataset
from dropsweep.study.runner import run_search
from dropsweep.study.summary import SearchEvents
from dropsweep.sweep.file import parse_sweep_text

from helpers import SUITE, Every, StopAfter

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


def from_the_start(study: optuna.Study) -> list[int]:
    """The trials the study's trials went on with from the start of their batch, with no
    checkpoint (issue 25: a lost batch is gone on with as it was)."""
    went_on = [t.user_attrs[records.RESUMED] for t in study.trials
               if records.RESUMED in t.user_attrs]
    assert all(r["epoch"] == 0 for r in went_on), went_on
    return sorted(r["trial"] for r in went_on)


def stopped_with_a_checkpoint(db: Path, validation: float = 0.2) -> Path:
    """A search stopped mid-batch after it wrote checkpoints: its checkpoint file."""
    study = search(db, validation, stop=StopAfter(4), checkpoint_every=1e-9)
    assert sorted(t.state.name for t in study.trials) == ["FAIL"] * 3
    [written] = list((db.parent / "checkpoints").rglob("*.ckpt"))
    return written


@pytest.mark.slow
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
    assert from_the_start(y) == [0, 1, 2]  # its own batch again, not x's weights
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
    assert planted.read_bytes() == theirs.read_bytes()  # left where it was
    refused = [n for n in notes if str(planted) in n]
    assert len(refused) == 1, notes
    assert "not this study's" in refused[0] and "study id" in refused[0], refused
    assert "storage" in refused[0] and "sweep" in refused[0], refused
    assert [p.name for p in own.iterdir()] == ["0.ckpt"]
    # item 10: refused, the file goes on with nothing: y's stopped batch trains again from
    # its start, each configuration once, in its place (issue 25: with its seed)
    assert from_the_start(y) == [0, 1, 2]
    assert [t.params for t in y.trials[3:6]] == [t.params for t in y.trials[:3]]


@pytest.mark.slow
def test_a_study_has_one_random_id_and_an_old_study_gets_one_when_it_needs_it(tmp_path):
    """The id binds a study's checkpoints to it: recorded when dropsweep creates the study,
    set on first need for a study made before it existed, and then kept."""
    SUITE["hostile checkpoints"] += 1
    from dropsweep.study.open import study_uid

    study = search(tmp_path / "a.db", checkpoint_every=0)
    uid = study.user_attrs[records.STUDY_UID]
    assert len(uid) == 32 and study_uid(study) == uid
    other = search(tmp_path / "b.db", checkpoint_every=0)
    assert other.user_attrs[records.STUDY_UID] != uid
    old = optuna.create_study(study_name="old", storage=f"sqlite:///{tmp_path}/c.db")
    first = study_uid(old)
    assert first and study_uid(old) == first == old.user_attrs[records.STUDY_UID]


# ----------------------------------------------------------------------------- item 2


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory):
    """A search stopped after its checkpoint of epoch 3 (a copy of its storage and of the
    file, to start each case from), and the numbers of the same search never stopped."""
    import sqlite3

    where = tmp_path_factory.mktemp("pristine")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DROPSWEEP_DATA_DIR", str(Path(__file__).resolve().parents[1].parent
                                            / "shared" / "data"))
        written = stopped_with_a_checkpoint(where / "x.db")
        plain = complete(search(where / "plain.db", checkpoint_every=0))
    saved = where / "saved.db"
    with sqlite3.connect(where / "x.db") as src, sqlite3.connect(saved) as dst:
        src.backup(dst)
    state = checkpoints.read(written)["state"]  # the stop's, where it stopped
    assert len(plain) == 3 and (state["epoch"], state["minibatch"]) == (3, 0)
    return where, written, written.read_bytes(), saved, plain


def restored(pristine) -> tuple[Path, Path]:
    """The stopped search as it was left: its storage and its one checkpoint file."""
    import sqlite3

    where, written, data, saved, _ = pristine
    for leftover in where.glob("x.db*"):
        leftover.unlink()
    with sqlite3.connect(saved) as src, sqlite3.connect(where / "x.db") as dst:
        src.backup(dst)
    shutil.rmtree(where / "checkpoints")
    written.parent.mkdir(parents=True)
    written.write_bytes(data)
    return where / "x.db", written


def shrink(t: torch.Tensor) -> torch.Tensor:
    return t[..., :-1].clone()


def _tensors(state, change):
    state["engine"]["tensors"] = [change(t) if i == 1 else t
                                  for i, t in enumerate(state["engine"]["tensors"])]


LIES = {
    "an epoch beyond the sweep's": lambda s: s.update(epoch=10**9),
    "epoch 0": lambda s: s.update(epoch=0),
    "the last epoch": lambda s: s.update(epoch=6),
    "an epoch that is not a whole number": lambda s: s.update(epoch=2.5),
    "a time that is not finite": lambda s: s.update(elapsed=float("nan")),
    "a negative time": lambda s: s.update(elapsed=-1.0),
    "a result too few": lambda s: s["results"].pop(),
    "a result without its curve": lambda s: s["results"][0].pop("curve"),
    "a curve beyond the epoch": lambda s: s["results"][1]["curve"].append([5, 0.5]),
    "an accuracy that is not one": lambda s: s["results"][1]["curve"][0].__setitem__(1, 7.0),
    "no results at all": lambda s: s.pop("results"),
    "a shrunk tensor": lambda s: _tensors(s, shrink),
    "a tensor of another type": lambda s: _tensors(s, lambda t: t.double()),
    "a per-model tensor a model short": lambda s: s["engine"].update(lr=s["engine"]["lr"][1:]),
    "a trial out of range": lambda s: s["engine"]["trial_of"].__setitem__(0, 9),
    "a trial still training though its result says pruned":
        lambda s: s["results"][0].update(pruned=True),
    "a key missing from the engine": lambda s: s["engine"].pop("masks"),
    "an engine that is not a mapping": lambda s: s.update(engine=[1, 2]),
    # issue 25, item 6: a stop is checkpointed where it stopped, within its epoch
    "a minibatch beyond the epoch": lambda s: s.update(minibatch=10**6),
    "a minibatch within a slice": lambda s: s.update(minibatch=1),
    "a negative minibatch": lambda s: s.update(minibatch=-1),
    "a minibatch without its row order": lambda s: s.pop("order"),
    "a row order a row short": lambda s: s.update(order=s["order"][:, :-1].clone()),
    "a row order that repeats a row": lambda s: s["order"][0].__setitem__(1, s["order"][0, 0]),
    "a row order of floats": lambda s: s.update(order=s["order"].double()),
}


@pytest.mark.slow
@pytest.mark.parametrize("lie", list(LIES))
def test_a_checkpoint_that_lies_about_any_field_is_refused_before_anything_is_recorded(
        pristine, lie):
    """Issue 24, items 2 and 5: an otherwise real checkpoint of the study with one field
    that cannot be the batch's (an epoch of 10**9, a shrunk tensor, a result too few, ...):
    refused in one line before a trial is made, and the batch's configurations train from
    the start, to exactly the numbers of a search never stopped."""
    SUITE["hostile checkpoints"] += 1
    db, written = restored(pristine)
    payload = torch.load(written, weights_only=True)
    LIES[lie](payload["state"])
    checkpoints.write_atomic(written, payload)
    notes: list[str] = []
    study = search(db, notes=notes, checkpoint_every=1e-9)
    said = [n for n in notes if written.name in n]
    assert len(said) == 1 and "train from the start" in said[0], notes
    went_on = [t.user_attrs[records.RESUMED] for t in study.trials
               if records.RESUMED in t.user_attrs]
    assert sorted(r["trial"] for r in went_on) == [0, 1, 2]
    assert {r["epoch"] for r in went_on} == {0}  # from the start, not from the lie
    assert all(not t.intermediate_values or min(t.intermediate_values) == 1
               for t in study.trials)
    assert complete(study) == pristine[4]
    assert not [t for t in study.trials if "retry_history" in t.system_attrs]  # not twice
    # set aside for good, beside where it was: never read again, never deleted
    assert [p.name for p in written.parent.iterdir()] == ["0.ckpt.unusable"]
    assert "set aside as 0.ckpt.unusable" in said[0]




def _mlp_case(engine: str):
    from dropsweep.families.mlp import config as mlp_config
    from dropsweep.data.protocols import make_folds

    from test_checkpoints import data

    sweep = build_sweep(parse_sweep_text(
        "name: m\nmodel: {hidden: [6, 4]}\ntrain: {epochs: 4, batch_size: 8, eval_every: 1}\n"
        "cv: {folds: 3}\n", "m.yaml"))
    configs = [mlp_config("both", 0.2, 0.4, 0.05, 0.9, 2.0), mlp_config("input", 0.3),
               mlp_config("hidden", 0.0, 0.5, optimizer="adam" if engine == "torch"
                          else "sgd", learning_rate=0.01)]
    return sweep, configs, make_folds(*data(), 3, seed=0), engine


def _cnn_case(engine: str):
    from dropsweep.families.cnn import config as cnn_config

    from test_cnn_family import small_folds

    sweep = build_sweep(parse_sweep_text(
        "name: c\ndata: {dataset: digits, scale: unit}\n"
        "model: {family: cnn, conv: [4], dense: [6], padding: same}\n"
        "train: {epochs: 4, batch_size: 33, eval_every: 1}\n"
        "eval: {protocol: holdout, validation: 0.2, test: 0.2}\n", "c.yaml"))
    configs = [cnn_config("all", input_rate=0.2, conv_rate=0.3, spatial=True,
                          dense_rate=0.5), cnn_config("dense", dense_rate=0.4),
               cnn_config()]
    return sweep, configs, small_folds(), engine


def _custom_case(engine: str):
    from test_custom_family import config as custom_config
    from test_custom_family import small_folds, sweep_of as custom_sweep

    sweep = custom_sweep("{family: custom, module: 'custom_modules.nets:cnn'}", epochs=4)
    configs = [custom_config("site_3", site_3_rate=0.3), custom_config(),
               custom_config("site_3", "adam", 0.003, 0.0, site_3_rate=0.5)]
    return sweep, configs, small_folds(), engine


def _kernel() -> bool:
    from dropsweep.families.mlp import kernel

    return kernel.load() is not None


CASES = {"mlp-torch": lambda: _mlp_case("torch"), "mlp-c": lambda: _mlp_case("c"),
         "cnn": lambda: _cnn_case("auto"), "custom-loop": lambda: _custom_case("loop"),
         "custom-batched": lambda: _custom_case("batched")}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_every_family_checks_a_saved_state_against_a_fresh_engine_of_its_batch(case):
    """The family-level check a resume makes before it makes a trial: a state the batch
    really saved (one trial pruned, so fewer models than configurations) passes; the same
    state with one weight shrunk, one model short, or the wrong models still training is
    refused in words, and another engine's or form's is said to be made elsewhere."""
    SUITE["hostile checkpoints"] += 1
    if case == "mlp-c" and not _kernel():
        pytest.skip("the C kernel is not available here")
    sweep, configs, folds, engine = CASES[case]()
    saver = Every()
    sweep.family.train(configs, folds, sweep.sections, 3, TrainHooks(
        save=saver, engine=engine, on_checkpoint=lambda epoch, acc: [1] if epoch == 1 else []))
    state = saver.states[1]  # after epoch 2, the second trial pruned at epoch 1

    def check(resume, on=engine):
        sweep.family.check_resume(configs, folds, sweep.sections, 3,
                                  TrainHooks(resume=resume, engine=on))

    check(state)
    tensors = [(path, t) for path, t in _leaves(state["engine"]) if t.dim() > 1]
    path, weight = tensors[-1]
    with pytest.raises(checkpoints.Unusable, match="not this batch's") as err:
        check(_replaced(state, path, weight[..., :-1].clone()))
    assert not isinstance(err.value, checkpoints.Elsewhere)
    with pytest.raises(checkpoints.Unusable, match="not this batch's|still training"):
        check(_replaced(state, ("trial_of",), state["engine"]["trial_of"][1:]))
    lied = {**state, "results": [dict(r) for r in state["results"]]}
    lied["results"][1].update(pruned=False, epochs=2)  # says the pruned trial still trains
    with pytest.raises(checkpoints.Unusable, match="not this batch's|still training"):
        check(lied)
    other = {"mlp-torch": None, "mlp-c": "torch", "cnn": None, "custom-loop": "batched",
             "custom-batched": "loop"}[case]
    if other and (other != "c" or _kernel()):
        with pytest.raises(checkpoints.Elsewhere):
            check(state, other)


def _leaves(value, path=()):
    """(path, tensor) of every tensor in a nested state."""
    if isinstance(value, torch.Tensor):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _leaves(item, (*path, i))


def _replaced(state, path, tensor):
    """``state`` with the engine's tensor at ``path`` replaced (the rest shared)."""
    import copy

    engine = copy.deepcopy(state["engine"])
    where = engine
    for key in path[:-1]:
        where = where[key]
    where[path[-1]] = tensor
    return {**state, "engine": engine}


def _refused_pickle(path: Path) -> None:
    import pickle

    class Boom:
        def __reduce__(self):
            return (print, ("this ran",))

    torch.save({"trials": [0], "configs": [{}], "seed": 1, "state": Boom()}, path,
               pickle_module=pickle)


def _raw_pickle(path: Path) -> None:
    import pickle

    path.write_bytes(pickle.dumps({"trials": [0, 1, 2], "configs": [], "seed": 1}))


UNREADABLE = {
    "empty": (lambda p: p.write_bytes(b""), "the file is empty"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:5000]), "the file is truncated"),
    "not torch's": (lambda p: p.write_bytes(b"not a checkpoint at all"),
                    "it is not a file torch.save wrote"),
    "a refused pickle": (_refused_pickle, "it holds objects other than tensors and plain "
                         "data (print): refused unread, since loading it could run code"),
    "a raw pickle": (_raw_pickle, "it holds Python objects that torch.save did not write: "
                     "refused unread, since loading it could run code"),
    "no header": (lambda p: torch.save({"state": {}}, p),
                  "not a checkpoint: its header is missing"),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(UNREADABLE))
def test_a_checkpoint_that_cannot_be_read_is_set_aside_in_one_line_and_never_wedges(
        pristine, kind, capsys):
    """Issue 24, item 5: an empty, truncated, foreign or refused file in the place of the
    stopped batch's checkpoint is said in dropsweep's own words (not torch's paragraph),
    set aside as ``0.ckpt.unusable`` (never read again, never deleted), and the search goes
    on to its target; run again, it does not trip on it again."""
    SUITE["hostile checkpoints"] += 1
    db, written = restored(pristine)
    spoil, reason = UNREADABLE[kind]
    spoil(written)
    spoiled = written.read_bytes()
    notes: list[str] = []
    study = search(db, notes=notes, checkpoint_every=1e-9)
    said = [n for n in notes if written.name in n]
    assert said == [f"checkpoint {written} cannot be used ({reason}): set aside as "
                    "0.ckpt.unusable; its configurations train from the start"] or (
        kind == "truncated" and len(said) == 1 and reason in said[0]), notes
    assert "Weights only" not in said[0] and "index out of range" not in said[0]
    assert [p.name for p in written.parent.iterdir()] == ["0.ckpt.unusable"]
    assert (written.parent / "0.ckpt.unusable").read_bytes() == spoiled
    assert sorted(t.state.name for t in study.trials).count("COMPLETE") == 3
    # item 10: the stopped batch trains again from its start, each configuration once
    lost, rest = study.trials[:3], study.trials[3:]
    assert {json.dumps(t.params, sort_keys=True) for t in lost} == {
        json.dumps(t.params, sort_keys=True) for t in rest if t.state.name == "COMPLETE"}
    assert from_the_start(study) == [0, 1, 2]
    assert complete(study) == pristine[4]  # to the numbers of a search never stopped
    assert "this ran" not in capsys.readouterr().out
    again: list[str] = []
    search(db, notes=again, checkpoint_every=1e-9)
    assert not [n for n in again if "0.ckpt" in n]
