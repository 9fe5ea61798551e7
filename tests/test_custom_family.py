"""The custom family (issue 15): the user's own nn.Module named in the sweep — its model
section's one-line errors, site discovery and grouping, the space it makes, the recorded
source (a changed file refuses a resume), the per-model engine against a hand-written
PyTorch loop, checkpoints, and search/report/export end to end through the CLI."""

from __future__ import annotations

import copy
import io
import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from dropsweep.sweep import space as spaces
from dropsweep.cli import main
from dropsweep.sweep.config import build_sweep
from dropsweep.data.dataset import load_dataset
from dropsweep.errors import SweepError
from dropsweep.families import family_of_study
from dropsweep.families.custom import dimensions_of, dropout_rates, placements_of
from dropsweep.families.custom import resolve
from dropsweep.families.custom.engine import CustomEngine, Settings, resolve_network, shape_of
from dropsweep.data.protocols import make_folds
from dropsweep.records import STUDY_SWEEP
from dropsweep.sweep.space import Config
from dropsweep.sweep.file import parse_sweep_text
from dropsweep.train.loop import epoch_order, run_epochs

from helpers import SUITE, assert_one_line

MODULES = Path(__file__).parent / "custom_modules"


def sweep_text(model: str, epochs: int = 2, trials: int = 4) -> str:
    return (f"name: c\ndata: {{dataset: digits}}\nmodel: {model}\n"
            f"train: {{epochs: {epochs}, batch_size: 32, eval_every: 1}}\n"
            "eval: {protocol: holdout, validation: 0.2, test: 0.2}\n"
            f"search: {{trials: {trials}, sampler: random}}\n")


def sweep_of(model: str, file: str = "s.yaml", **kw):
    return build_sweep(parse_sweep_text(sweep_text(model, **kw), file))


def config(placement: str = "none", optimizer: str = "sgd", learning_rate: float = 0.05,
           momentum: float = 0.9, max_norm: float | None = None, **rates: float) -> Config:
    return Config({"placement": placement, **rates, "optimizer": optimizer,
                   "learning_rate": learning_rate, "momentum": momentum,
                   "max_norm": max_norm})


# ----------------------------------------------------------------------------- the section


@pytest.mark.parametrize("model, key, fragment", [
    ("{family: custom}", "model.module", "needs the function"),
    ("{family: custom, module: nets}", "model.module", "must be 'package.module:function'"),
    ("{family: custom, module: 'custom_modules.broken:build'}", "model.module",
     "cannot import custom_modules.broken: RuntimeError: this module refuses to import"),
    ("{family: custom, module: 'custom_modules.nowhere:build'}", "model.module",
     "ModuleNotFoundError"),
    ("{family: custom, module: 'no/such/file.py:build'}", "model.module", "no such file"),
    ("{family: custom, module: 'custom_modules.nets:nothing'}", "model.module",
     "has no attribute 'nothing'"),
    ("{family: custom, module: 'custom_modules.nets:NOT_CALLABLE'}", "model.module",
     "is not callable"),
    ("{family: custom, module: 'custom_modules.nets:raises'}", "model.module",
     "ValueError: no network today"),
    ("{family: custom, module: 'custom_modules.nets:not_a_module'}", "model.module",
     "must return an nn.Module, got str"),
    ("{family: custom, module: 'custom_modules.nets:no_dropout'}", "model.module",
     "has no dropout site"),
    ("{family: custom, module: 'custom_modules.nets:wrong_output'}", "model.module",
     "to logits [n, 10], got (2, 11)"),
    ("{family: custom, module: 'custom_modules.hostile:no_parameters'}", "model.module",
     "custom_modules.hostile:no_parameters builds has no parameters to train"),
    ("{family: custom, module: 'custom_modules.hostile:pairs_only'}", "model.module",
     "to logits [n, 10], got (2, 10) for n = 3"),
    ("{family: custom, module: 'custom_modules.hostile:frozen'}", "model.module",
     "1.weight does not require grad"),
    ("{family: custom, module: 'custom_modules.nets:flat_mlp', args: [3]}", "model.args",
     "must be a mapping"),
    ("{family: custom, module: 'custom_modules.nets:flat_mlp', args: {width: 3}}",
     "model.module", "unexpected keyword argument 'width'"),
    ("{family: custom, module: 'custom_modules.nets:flat_mlp', sites: {a: 'nothing*'}}",
     "model.sites.a", "'nothing*' matches no Dropout module; the module has inner.drop_in"),
    ("{family: custom, module: 'custom_modules.nets:flat_mlp', "
     "sites: {a: '*drop*', b: inner.drop_in}}", "model.sites.b", "also in group 'a'"),
    ("{family: custom, module: 'custom_modules.nets:flat_mlp', sites: {learning: '*'}}",
     "model.sites.learning", "already a dimension"),
    ("{family: custom, module: 'custom_modules.nets:flat_mlp', max_norm: ['conv*']}",
     "model.max_norm", "'conv*' matches no Linear or Conv layer; the module has inner.hidden"),
    ("{family: custom, module: 'custom_modules.nets:flat_mlp', max_norm_axis: rows}",
     "model.max_norm_axis", "keras"),
    ("{family: custom, module: 'custom_modules.nets:flat_mlp', hidden: 3}", "model.hidden",
     "unknown key"),
])
def test_every_mistake_in_the_model_section_is_one_line_naming_its_key(model, key, fragment):
    with pytest.raises(SweepError) as err:
        sweep_of(model)
    assert_one_line(err.value, "s.yaml", 3, key, fragment)
    if "hostile" in model:
        SUITE["hostile custom modules"] += 1


@pytest.mark.parametrize("entry, fragment", [
    ("no_parameters", "has no parameters to train"),
    ("pairs_only", "got (2, 10) for n = 3"),
])
def test_a_module_that_cannot_train_is_one_line_at_search_and_at_training(tmp_path, entry,
                                                                          fragment):
    """Refused before a trial is asked (exit 2, one line naming model.module), and by the
    engine too when a stored study's section is trained without validation."""
    shutil.copy(MODULES / "hostile.py", tmp_path / "hostile.py")
    sweep = tmp_path / "s.yaml"
    sweep.write_text(sweep_text(f"{{family: custom, module: 'hostile.py:{entry}'}}"))
    result = CliRunner().invoke(main, ["search", str(sweep), "--storage",
                                       f"sqlite:///{tmp_path / 'r.db'}"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert "model.module" in result.stderr and fragment in result.stderr
    sha = resolve.sha256(tmp_path / "hostile.py")
    stored = build_sweep(parse_sweep_text(sweep_text(
        f"{{family: custom, module: 'hostile.py:{entry}', sites: {{d: drop}}, "
        f"sources: {{hostile.py: '{sha}'}}}}"), str(sweep)))  # read back: nothing checked
    with pytest.raises(SweepError, match=re.escape(fragment)):
        resolve_network(stored.sections, (64,), 10, 0)
    SUITE["hostile custom modules"] += 1


def test_a_file_path_is_resolved_against_the_sweep_file_and_its_source_recorded(tmp_path):
    shutil.copy(MODULES / "nets.py", tmp_path / "nets.py")
    sweep = sweep_of("{family: custom, module: 'nets.py:flat_mlp', args: {hidden: 8}}",
                     file=str(tmp_path / "s.yaml"))
    import hashlib

    assert sweep.model.to_dict() == {
        "family": "custom", "module": "nets.py:flat_mlp", "args": {"hidden": 8},
        "sites": {"inner_drop_in": "inner.drop_in", "inner_drop_hidden": "inner.drop_hidden"},
        "max_norm": [], "max_norm_axis": "keras",
        "sources": {"nets.py": hashlib.sha256((tmp_path / "nets.py").read_bytes()).hexdigest()}}
    # an importable module records the file its function lives in
    imported = sweep_of("{family: custom, module: 'custom_modules.nets:flat_mlp'}")
    assert list(imported.model.to_dict()["sources"]) == ["custom_modules.nets:nets.py"]


def test_a_dropout_no_site_covers_is_named_in_one_note_with_the_rate_it_keeps(tmp_path):
    """Two Dropout modules, ``sites`` covering one: the other keeps its own rate in every
    trial (the no-dropout baseline included), said once at validation and at search."""
    model = "{family: custom, module: 'custom_modules.hostile:two_dropouts', sites: {%s}}"
    one = sweep_of(model % "input: drop_in")
    assert one.family.notices(one.model) == (
        "model.sites: drop_hidden (p 0.5) is in no site group, so it keeps its own rate in "
        "every trial, the no-dropout baseline included",)
    both = sweep_of(model % "input: drop_in, hidden: drop_hidden")
    default = sweep_of("{family: custom, module: 'custom_modules.hostile:two_dropouts'}")
    assert both.family.notices(both.model) == default.family.notices(default.model) == ()
    sweep = tmp_path / "s.yaml"
    sweep.write_text(sweep_text(model % "hidden: 'drop_h*'", epochs=1, trials=1))
    want = ["note: model.sites: drop_in (p 0.2) is in no site group, so it keeps its own "
            "rate in every trial, the no-dropout baseline included"]
    for args in (["validate", str(sweep)],
                 ["search", str(sweep), "--storage", f"sqlite:///{tmp_path / 'r.db'}"]):
        result = run(*args)
        assert result.exit_code == 0, result.output
        assert [line for line in result.stderr.splitlines() if "note:" in line] == want
    SUITE["hostile custom modules"] += 1


def test_sites_default_to_one_group_per_dropout_module_and_patterns_group_them():
    seq = sweep_of("{family: custom, module: 'custom_modules.nets:cnn'}")
    assert dict(seq.model.sites) == {"site_3": "3", "site_7": "7"}  # nn.Sequential's indices
    grouped = sweep_of("{family: custom, module: 'custom_modules.nets:flat_mlp', "
                       "sites: {all: 'inner.drop_*'}, max_norm: ['inner.*']}")
    assert grouped.family.groups == ("all",)
    assert [d.name for d in grouped.dimensions] == [
        "placement", "all_rate", "optimizer", "learning_rate", "momentum", "max_norm"]
    net = resolve_network(grouped.sections, (1, 8, 8), 10, 0)
    assert net.sites == {"all": ["inner.drop_in", "inner.drop_hidden"]}
    assert net.constrained == ["inner.hidden", "inner.out"]


def test_placements_are_the_combinations_of_groups_and_rates_are_sampled_only_where_used():
    assert placements_of(("a", "b", "c")) == ("none", "a", "b", "c", "a+b", "a+c", "b+c",
                                              "a+b+c")
    dims = dimensions_of(("a", "b"))
    space = spaces.defaults(dims)

    def pick(placement):
        def chooser(dim, param):
            if dim.name == "placement":
                return placement
            return param.values[0] if isinstance(param, spaces.Choices) else param.high
        return chooser

    only_b = spaces.walk(dims, space, pick("b"))
    assert only_b["a_rate"] == 0.0 and only_b["b_rate"] == 0.7 and only_b["momentum"] == 0.0
    both = spaces.walk(dims, space, pick("a+b"))
    assert both["a_rate"] == 0.7 and both["b_rate"] == 0.7
    assert dropout_rates(Config({"placement": "b", "a_rate": 0.4, "b_rate": 0.3}),
                         ("a", "b")) == {"a": 0.0, "b": 0.3}
    sweep = sweep_of("{family: custom, module: 'custom_modules.nets:flat_mlp'}")
    assert sweep.baseline == Config({"placement": "none", "inner_drop_in_rate": 0.0,
                                     "inner_drop_hidden_rate": 0.0, "optimizer": "adam",
                                     "learning_rate": 1e-3, "momentum": 0.0, "max_norm": None})
    assert sweep.family.describe(config("inner_drop_in+inner_drop_hidden", "adam", 1e-3, 0.0,
                                        inner_drop_in_rate=0.2, inner_drop_hidden_rate=0.5)) \
        == "inner_drop_in dropout 0.2, inner_drop_hidden 0.5, Adam lr 0.001"


def test_a_stored_section_binds_its_family_without_importing_anything():
    sweep = sweep_of("{family: custom, module: 'custom_modules.nets:flat_mlp'}")
    stored = sweep.to_dict()
    stored["model"]["module"] = "custom_modules.broken:build"  # importing it would fail
    fam = family_of_study({STUDY_SWEEP: stored})
    assert fam.groups == ("inner_drop_in", "inner_drop_hidden")
    from dropsweep.sweep.file import RawSweep

    rebuilt = build_sweep(RawSweep(data=stored, file="stored sweep"))  # resume's comparison
    assert rebuilt.model.sources == sweep.model.sources
    assert rebuilt.family.groups == ("inner_drop_in", "inner_drop_hidden")


# ----------------------------------------------------------------------------- the engine


def small_folds(rows: int = 90, k: int = 2):
    dataset = load_dataset(sweep_of("{family: custom, module: 'custom_modules.nets:cnn'}"))
    return make_folds(dataset.X[:rows], dataset.y[:rows], k, seed=3, n_classes=10,
                      scale="unit", pixel_max=16.0, image_shape=dataset.image_shape)


def keras_sgd(p, v, g, lr, momentum):
    v.mul_(momentum).sub_(lr * g)
    p.add_(v)


def keras_adam(p, m, v, g, lr, t):
    m.mul_(0.9).add_(0.1 * g)
    v.mul_(0.999).add_(0.001 * g * g)
    alpha = lr * (1 - 0.999 ** t) ** 0.5 / (1 - 0.9 ** t)
    p.sub_(alpha * m / (v.sqrt() + 1e-7))


def reference(sweep, folds, configs, seed, epochs):
    """Plain PyTorch: each model its own copy, the engine's minibatch order replayed."""
    net = resolve_network(sweep.sections, shape_of(folds), 10, seed).net
    k = folds.k
    models = [copy.deepcopy(net) for _ in range(len(configs) * k)]
    fold_of = torch.arange(k).repeat(len(configs))
    slots = [[(torch.zeros_like(p), torch.zeros_like(p)) for p in m.parameters()]
             for m in models]
    steps = [0] * len(models)
    generator = torch.Generator().manual_seed(seed)
    n_train = folds.n_train[fold_of]
    for _ in range(epochs):
        order = epoch_order(generator, n_train, folds.max_train)
        for i, model in enumerate(models):
            c = configs[i // k]
            n = int(n_train[i])
            for start in range(0, n, 32):
                x, y = folds.gather(fold_of[i:i + 1], order[i:i + 1, start:min(start + 32, n)])
                x = x[0].view(-1, 8, 8, 1).permute(0, 3, 1, 2)
                loss = F.cross_entropy(model(x), y[0])
                model.zero_grad()
                loss.backward()
                steps[i] += 1
                with torch.no_grad():
                    for p, (s1, s2) in zip(model.parameters(), slots[i]):
                        if c["optimizer"] == "adam":
                            keras_adam(p, s1, s2, p.grad, c["learning_rate"], steps[i])
                        else:
                            keras_sgd(p, s1, p.grad, c["learning_rate"], c["momentum"])
    return models


def test_the_engine_is_a_plain_pytorch_loop_with_keras_s_sgd_and_adam():
    sweep = sweep_of("{family: custom, module: 'custom_modules.nets:cnn'}")
    folds = small_folds()
    configs = [config(optimizer="sgd", learning_rate=0.05, momentum=0.9),
               config(optimizer="adam", learning_rate=0.003, momentum=0.0)]
    network = resolve_network(sweep.sections, shape_of(folds), 10, 11)
    engine = CustomEngine(configs, folds, network, Settings(3, 32, 3), 11)
    results = run_epochs(engine, 2, 3, 3)
    expected = reference(sweep, folds, configs, 11, 3)
    trained = [m for r in results for m in r.model]
    assert len(trained) == 4
    for got, want in zip(trained, expected):
        for a, b in zip(got.state_dict().values(), want.state_dict().values()):
            assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max()
    assert any((a - b).abs().max() > 1e-3 for a, b in  # it did train
               zip(trained[0].parameters(), network.net.parameters()))


def test_each_model_s_sites_get_its_trial_s_rates_and_max_norm_holds():
    sweep = sweep_of("{family: custom, module: 'custom_modules.nets:cnn', "
                     "max_norm: ['5']}")
    folds = small_folds()
    configs = [config("site_3", site_3_rate=0.3, site_7_rate=0.6, max_norm=0.5),
               config("site_3+site_7", site_3_rate=0.1, site_7_rate=0.5)]
    network = resolve_network(sweep.sections, shape_of(folds), 10, 0)
    engine = CustomEngine(configs, folds, network, Settings(1, 32, 1), 0)
    rates = [(m[3].p, m[7].p, type(m[3]).__name__) for m in engine.models]
    assert rates == [(0.3, 0.0, "Dropout2d")] * 2 + [(0.1, 0.5, "Dropout2d")] * 2
    results = run_epochs(engine, 2, 1, 1)
    norms = results[0].model[0][5].weight.detach().pow(2).sum(1).sqrt()  # each unit's incoming
    assert float(norms.max()) <= 0.5 + 1e-5
    assert float(results[1].model[0][5].weight.detach().pow(2).sum(1).sqrt().max()) > 0.5


def test_a_checkpoint_loads_weights_only_and_training_goes_on_as_if_never_stopped():
    sweep = sweep_of("{family: custom, module: 'custom_modules.nets:cnn', args: {bn: true}}")
    folds = small_folds()
    configs = [config("site_4+site_8", "adam", 0.003, 0.0, site_4_rate=0.3, site_8_rate=0.5),
               config("site_8", site_4_rate=0.0, site_8_rate=0.4)]
    network = resolve_network(sweep.sections, shape_of(folds), 10, 5)

    def engine():
        return CustomEngine(configs, folds, network, Settings(2, 32, 1), 5)

    whole, first = engine(), engine()
    for e in (whole, first):
        e.start_epoch()
        e.train_batches(0, e.n_batches)
    buffer = io.BytesIO()
    torch.save(first.state(), buffer)
    buffer.seek(0)
    resumed = engine()
    resumed.load_state(torch.load(buffer, weights_only=True))
    for e in (whole, resumed):
        e.start_epoch()
        e.train_batches(0, e.n_batches)
    for a, b in zip(whole.models, resumed.models):
        for x, y in zip(a.state_dict().values(), b.state_dict().values()):
            assert torch.equal(x, y)
    acc, loss = resumed.evaluate()  # eval mode: BatchNorm's running statistics
    assert acc.shape == (4,) and bool(torch.isfinite(loss).all())
    assert float(resumed.models[0][1].running_mean.abs().sum()) > 0


# ----------------------------------------------------------------------------- the CLI


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.mark.slow
@pytest.mark.parametrize("entry, groups", [
    ("nets.py:flat_mlp", "inner_drop_in"),
    ("nets.py:cnn", "site_3"),
])
def test_search_report_and_export_a_user_module_on_the_digits(tmp_path, entry, groups):
    shutil.copy(MODULES / "nets.py", tmp_path / "nets.py")
    sweep = tmp_path / "s.yaml"
    sweep.write_text(sweep_text(f"{{family: custom, module: '{entry}'}}"))
    db = f"sqlite:///{tmp_path / 'r.db'}"
    result = run("search", str(sweep), "--storage", db)
    assert result.exit_code == 0, result.output
    report = run("report", "--storage", db, "--study", "c")
    assert report.exit_code == 0 and groups in report.stdout and "4 complete" in report.stdout
    out = run("export", "--storage", db, "--study", "c", "-o", str(tmp_path / "best.yaml"),
              "--model", str(tmp_path / "best.pt"))
    assert out.exit_code == 0, out.output
    saved = torch.load(tmp_path / "best.pt", weights_only=True)
    fn, _ = resolve.entry_point(entry, str(tmp_path))
    net = fn(tuple(saved["input_shape"]), len(saved["classes"]))
    net.load_state_dict(saved["state_dict"])  # the user's own module takes it, strictly


def test_a_changed_source_file_refuses_the_resume_and_the_training_naming_the_file(tmp_path):
    shutil.copy(MODULES / "nets.py", tmp_path / "nets.py")
    sweep = tmp_path / "s.yaml"
    sweep.write_text(sweep_text("{family: custom, module: 'nets.py:flat_mlp'}", epochs=1,
                                trials=1))
    db = f"sqlite:///{tmp_path / 'r.db'}"
    assert run("search", str(sweep), "--storage", db).exit_code == 0
    with open(tmp_path / "nets.py", "a") as f:
        f.write("# edited\n")
    again = CliRunner().invoke(main, ["search", str(sweep), "--storage", db, "--trials", "2"])
    assert again.exit_code == 2 and "Traceback" not in again.output
    assert len(again.stderr.strip().splitlines()) == 1
    assert "model.sources.nets.py" in again.stderr and "different experiment" in again.stderr
    export = CliRunner().invoke(main, ["export", "--storage", db, "--study", "c", "-o",
                                       str(tmp_path / "b.yaml"), "--model",
                                       str(tmp_path / "b.pt")])
    assert export.exit_code == 2 and len(export.stderr.strip().splitlines()) == 1
    assert "model.module: the source of nets.py changed since the study recorded it" \
        in export.stderr


def _search_in(where: Path, monkeypatch, trials: int = 2) -> str:
    """A study of nets.py:flat_mlp searched from ``where``, its sweep and module named
    relative to it (as a user types them); the storage URL."""
    where.mkdir(exist_ok=True)
    shutil.copy(MODULES / "nets.py", where / "nets.py")
    (where / "s.yaml").write_text(sweep_text("{family: custom, module: 'nets.py:flat_mlp'}",
                                             epochs=1, trials=trials))
    db = f"sqlite:///{where / 'r.db'}"
    monkeypatch.chdir(where)
    assert run("search", "s.yaml", "--storage", db).exit_code == 0
    return db


@pytest.mark.slow
def test_confirm_test_and_export_from_another_directory_find_the_module(tmp_path, monkeypatch):
    """The study records where its sweep file was, resolved: its module (relative to that
    file) is found from any directory, and a changed source is still refused."""
    db = _search_in(tmp_path / "a", monkeypatch)
    elsewhere = tmp_path / "b"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for args in (["confirm", "--top", "1", "--repeats", "2"], ["test", "--repeats", "2"],
                 ["export", "-o", "best.yaml", "--model", "best.pt"]):
        result = CliRunner().invoke(main, [*args, "--storage", db, "--study", "c"])
        assert result.exit_code == 0, (args, result.output)
    assert (elsewhere / "best.pt").is_file()
    resumed = CliRunner().invoke(main, ["search", "../a/s.yaml", "--storage", db,
                                        "--trials", "3"])  # the same experiment from here
    assert resumed.exit_code == 0 and "(1 run now)" in resumed.stdout, resumed.output
    with open(tmp_path / "a" / "nets.py", "a") as f:
        f.write("# edited\n")
    export = CliRunner().invoke(main, ["export", "--storage", db, "--study", "c", "-o",
                                       "again.yaml", "--model", "again.pt"])
    assert export.exit_code == 2 and len(export.stderr.strip().splitlines()) == 1
    assert "the source of nets.py changed since the study recorded it" in export.stderr
    SUITE["hostile custom modules"] += 1


@pytest.mark.slow
def test_a_study_that_recorded_its_sweep_file_as_given_still_resumes_and_exports(tmp_path,
                                                                               monkeypatch):
    """A study stored by the previous version (its sweep file as typed, relative) resumes
    from its directory with the same relative path, as the same experiment, and exports."""
    import optuna

    from dropsweep.records import STUDY_SWEEP_FILE

    db = _search_in(tmp_path / "a", monkeypatch)
    optuna.load_study(study_name="c", storage=db).set_user_attr(STUDY_SWEEP_FILE, "s.yaml")
    again = CliRunner().invoke(main, ["search", "s.yaml", "--storage", db, "--trials", "3"])
    assert again.exit_code == 0, again.output
    assert "3 of 3 trials finished (1 run now)" in again.stdout
    export = CliRunner().invoke(main, ["export", "--storage", db, "--study", "c", "-o",
                                       "best.yaml", "--model", "best.pt"])
    assert export.exit_code == 0, export.output
    SUITE["hostile custom modules"] += 1
