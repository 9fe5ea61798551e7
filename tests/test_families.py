"""The seams: a second model family is one module (here, inside this test) plus its tests.

``Toy`` declares a dimension table unlike the MLP's — its group is ``noise`` (clean, gauss,
drop), ``sigma`` is sampled only under gauss noise, ``keep`` only under drop noise (unused:
1.0, not 0), ``clip`` may be off — and an engine that trains a batch of linear classifiers.
Registered, it is validated, searched, planned, stored, resumed, ranked, reported and
exported by the same code as the MLP, which never learns what ``gauss`` means.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import optuna
import pytest
import torch

from dropsweep import families, records
from dropsweep.sweep import space as spaces
from dropsweep.sweep.checks import Checker
from dropsweep.sweep.config import build_sweep
from dropsweep.errors import SweepError
from dropsweep.families import Family
from dropsweep.train.memory import Need
from dropsweep.data.protocols import Folds
from dropsweep.sweep.space import Choices, Config, Dimension, Fixed, Range
from dropsweep.sweep.file import parse_sweep_text
from dropsweep.train.hooks import NO_HOOKS, TrainHooks
from dropsweep.train.loop import TrialResult, run_epochs

from helpers import SUITE

NOISES = ("clean", "gauss", "drop")


def _positive(v: float) -> str | None:
    return None if v > 0 else f"must be > 0, got {v:g}"


class ToyEngine:
    """Linear classifiers, one per (trial, fold): a full-batch gradient step per epoch, with
    input noise as the configuration says. Only this engine reads the configuration."""

    def __init__(self, configs: Sequence[Mapping[str, Any]], folds: Folds, seed: int) -> None:
        k = folds.k
        self.folds = folds
        self.generator = torch.Generator().manual_seed(seed)
        self.trial_of = torch.arange(len(configs)).repeat_interleave(k)
        self.fold_of = torch.arange(k).repeat(len(configs))
        per = lambda f: torch.tensor([f(c) for c in configs]).repeat_interleave(k)  # noqa: E731
        self.lr = per(lambda c: c["lr"])
        self.sigma = per(lambda c: c["sigma"] if c["noise"] == "gauss" else 0.0)
        self.keep_p = per(lambda c: c["keep"] if c["noise"] == "drop" else 1.0)
        self.w = torch.zeros(len(self.trial_of), folds.n_features, folds.n_classes)

    n_batches = slice_batches = 1  # one full-batch step an epoch

    def start_epoch(self) -> None:
        pass

    def train_batches(self, first: int, end: int) -> None:
        f = self.fold_of
        x, y = self.folds.x_train[f], self.folds.y_train[f]
        x = x + self.sigma[:, None, None] * torch.randn(x.shape, generator=self.generator)
        keep = (torch.rand(x.shape, generator=self.generator) < self.keep_p[:, None, None])
        x = x * keep / self.keep_p[:, None, None]
        rows = (torch.arange(x.shape[1])[None] < self.folds.n_train[f][:, None]).float()
        p = torch.softmax(x @ self.w, -1)
        target = torch.nn.functional.one_hot(y, self.w.shape[2]).float()
        grad = x.transpose(1, 2) @ ((p - target) * rows[..., None]) / rows.sum(1)[:, None, None]
        self.w -= self.lr[:, None, None] * grad

    def end_epoch(self) -> tuple[torch.Tensor, torch.Tensor]:
        bad = ~torch.isfinite(self.w).flatten(1).all(1)
        return bad, torch.isnan(self.w).flatten(1).any(1)

    def evaluate(self, held_out: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        f, d = self.fold_of, self.folds
        x, y, n = ((d.x_test[f], d.y_test[f], d.n_test[f]) if held_out
                   else (d.x_train[f], d.y_train[f], d.n_train[f]))
        rows = (torch.arange(x.shape[1])[None] < n[:, None]).float()
        logits = x @ self.w
        acc = (((logits.argmax(-1) == y).float() * rows).sum(1) / n)
        loss = (torch.nn.functional.cross_entropy(logits.transpose(1, 2), y, reduction="none")
                * rows).sum(1) / n
        return acc, loss

    def keep(self, models: torch.Tensor) -> None:
        for name in ("trial_of", "fold_of", "lr", "sigma", "keep_p", "w"):
            setattr(self, name, getattr(self, name)[models])

    def trained(self, models: torch.Tensor) -> torch.Tensor:
        return self.w[models].clone()


@dataclass(frozen=True)
class ToyModel:
    family: str = "toy"

    def to_dict(self) -> dict[str, Any]:
        return {"family": "toy"}


class Toy(Family):
    name = "toy"
    group = "noise"
    baseline_words = "the noiseless baseline"
    model_keys = ()
    dimensions = (
        Dimension("noise", Choices(NOISES), baseline="clean", choices=NOISES,
                  simplicity="order", label="noise"),
        Dimension("sigma", Range(0.1, 1.0), baseline=0.0, rule=_positive,
                  when=("noise", ("gauss",)), unused=0.0, simplicity="sum", label="sigma"),
        Dimension("keep", Range(0.5, 0.9), baseline=1.0, rule=_positive,
                  when=("noise", ("drop",)), unused=1.0, label="keep"),
        Dimension("lr", Range(0.01, 1.0, log=True), baseline=0.1, rule=_positive, log=True,
                  in_baseline=True, label="learning rate"),
        Dimension("clip", None, baseline=None, rule=_positive, can_be_off=True,
                  in_baseline=True, simplicity="off", label="clip"),
    )

    def parse_model(self, check: Checker, raw: Mapping[str, Any]) -> ToyModel:
        return ToyModel()

    def default_model(self) -> ToyModel:
        return ToyModel()

    def describe(self, config: Mapping[str, Any]) -> str:
        return {"clean": "no noise", "gauss": f"gaussian noise {config.get('sigma')}",
                "drop": f"dropout keeping {config.get('keep')}"}[config["noise"]]

    def train(self, configs: Sequence[Config], folds: Folds, sweep: Any, seed: int,
              hooks: TrainHooks = NO_HOOKS) -> list[TrialResult]:
        return run_epochs(ToyEngine(configs, folds, seed), len(configs), sweep.train.epochs,
                          sweep.train.eval_every, hooks.on_checkpoint, hooks.should_stop,
                          hooks.on_progress, hooks.save, hooks.resume)

    def need(self, sweep: Any, dataset: Any, models: int) -> Need:
        n_features, rows = dataset.n_features, len(dataset.y)
        return Need(parameters=4 * models * n_features * dataset.n_classes, activations=0,
                    inputs=4 * models * rows * n_features, network_key="model")

    def train_on_all(self, *args: Any) -> dict[str, Any]:
        raise NotImplementedError


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setattr(families, "_REGISTERED", dict(families._REGISTERED))
    return families.register(Toy())


def build(text: str):
    return build_sweep(parse_sweep_text("model: {family: toy}\n" + text, "toy.yaml"))


def test_the_table_is_the_space_its_defaults_and_its_validation(toy):
    sweep = build("space:\n  noise: [clean, drop]\n  keep: {low: 0.6, high: 0.8}\n")
    assert sweep.family is toy and sweep.baseline == Config(
        {"noise": "clean", "sigma": 0.0, "keep": 1.0, "lr": 0.1, "clip": None})
    assert sweep.space == {"noise": Choices(("clean", "drop")), "sigma": Range(0.1, 1.0),
                           "keep": Range(0.6, 0.8), "lr": Range(0.01, 1.0, log=True),
                           "clip": None}
    assert sweep.to_dict()["baseline"] == {"lr": 0.1, "clip": None}  # what it may set
    with pytest.raises(SweepError, match="space.noise.1: must be one of clean, gauss, drop"):
        build("space:\n  noise: [clean, placebo]\n")
    with pytest.raises(SweepError, match="space.noise: must include clean: the noiseless "
                                         "baseline is every study's first trial"):
        build("space:\n  noise: [gauss]\n")
    with pytest.raises(SweepError, match="baseline.lr: 5 is outside space.lr"):
        build("baseline: {lr: 5}\n")
    with pytest.raises(SweepError, match="unknown key; valid keys: lr, clip"):
        build("baseline: {noise: gauss}\n")
    with pytest.raises(SweepError, match="space.sigma.1: must be > 0, got -1"):
        build("space:\n  sigma: [0.5, -1]\n")


def test_listed_configurations_follow_the_conditions(toy):
    sweep = build("space:\n  - {noise: gauss, sigma: 0.3}\n  - {noise: drop, keep: 0.7, "
                  "clip: 2}\n")
    assert sweep.configs == (
        Config({"noise": "gauss", "sigma": 0.3, "keep": 1.0, "lr": 0.1, "clip": None}),
        Config({"noise": "drop", "sigma": 0.0, "keep": 0.7, "lr": 0.1, "clip": 2.0}))
    with pytest.raises(SweepError, match=r"space.0.sigma: noise 'gauss' needs sigma"):
        build("space:\n  - {noise: gauss}\n")
    with pytest.raises(SweepError, match=r"space.0.keep: noise 'gauss' does not use keep"):
        build("space:\n  - {noise: gauss, sigma: 0.2, keep: 0.5}\n")
    space = spaces.space_of(sweep)  # the choices the list spans
    assert space["sigma"] == Fixed(0.3) and space["keep"] == Fixed(0.7)
    assert space["clip"] == Choices((None, 2.0))


def test_the_walk_samples_a_dimension_only_where_its_condition_holds(toy):
    sweep = build("space:\n  clip: [off, 1]\n")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        config = spaces.suggest(trial, toy.dimensions, sweep.space)
        seen.add(config["noise"])
        assert ("sigma" in trial.params) == (config["noise"] == "gauss")
        assert ("keep" in trial.params) == (config["noise"] == "drop")
        assert config["keep"] == 1.0 or config["noise"] == "drop"  # its own unused value
        values = spaces.config_values(config, toy.dimensions, sweep.space)
        assert values == trial.params
        assert spaces.fixed_distributions(config, toy.dimensions, sweep.space) == \
            trial.distributions
        study.tell(trial, 0.5)
    assert seen == set(NOISES)


def test_grid_points_export_and_simplicity_come_from_the_table(toy):
    sweep = build("search: {sampler: grid}\nspace:\n  noise: [clean, gauss, drop]\n"
                  "  sigma: [0.2, 0.4]\n  keep: [0.5]\n  lr: [0.1]\n")
    points = spaces.planned_configs(sweep)
    assert len(points) == 1 + 2 + 1  # clean; gauss x 2 sigmas; drop x 1 keep
    assert spaces.written(points[1], toy.dimensions) == {
        "noise": "gauss", "sigma": 0.2, "lr": 0.1, "clip": "off"}
    with pytest.raises(SweepError, match="space.lr: the grid sampler takes lists"):
        build("search: {sampler: grid}\nspace:\n  noise: [clean]\n")
    order = sorted(points, key=lambda c: spaces.simplicity(toy.dimensions, c))
    assert [c["noise"] for c in order] == ["clean", "gauss", "gauss", "drop"]
    assert order[1]["sigma"] < order[2]["sigma"]


@pytest.mark.slow
def test_a_second_family_runs_end_to_end_through_the_shared_code(toy, dataset, storage):
    """Search, store, resume, rank, report: no line outside this file knows the toy."""
    from dropsweep.answers.report import build_report
    from dropsweep.study.runner import run_search
    from dropsweep.study.open import stored_sweep

    sweep = build("train: {epochs: 4, eval_every: 2}\ncv: {folds: 3}\n"
                  "search: {trials: 6, sampler: random}\n")
    summary = run_search(sweep, dataset, storage_url=storage, batch=3, device="cpu")
    assert summary.finished == 6
    study = optuna.load_study(study_name=sweep.name, storage=storage)
    assert stored_sweep(study) == sweep and study.user_attrs[records.STUDY_SCHEMA] == 2
    trials = study.get_trials()
    assert trials[0].user_attrs[records.ROLE] == records.ROLE_BASELINE
    assert trials[0].params == {"noise": "clean", "lr": 0.1}
    for t in trials:
        assert t.state.name == "COMPLETE" and len(t.user_attrs[records.FOLD_ACCURACIES]) == 3
        assert set(t.user_attrs[records.CONFIG]) == {"noise", "sigma", "keep", "lr", "clip"}
    more = run_search(sweep, dataset, storage_url=storage, trials=8, batch=3, device="cpu")
    assert more.finished == 8 and more.ran == 2  # resumed: nothing finished is redone
    report = build_report(study)
    assert report.family == "toy" and report.param_names[:2] == ["noise", "sigma"]
    assert [p.placement for p in report.placements] == [
        v for v in NOISES if v in {t.params["noise"] for t in study.get_trials()}]
    assert report.best.value == max(t.value for t in study.get_trials())
    from rich.console import Console

    from dropsweep.render.report import render_report

    console = Console(record=True, width=200, color_system=None)
    render_report(report, "table", console)
    text = console.export_text()
    assert "noise" in text.split("Best trial of each placement")[1].splitlines()[1]


def test_nothing_outside_the_mlp_family_knows_its_dimensions():
    """The MLP's dimension names and what ``both`` means live in its package alone (comments
    and docstrings may give examples): code elsewhere reads configurations as plain data."""
    import io
    import tokenize
    from pathlib import Path

    from dropsweep.families.mlp import DIMENSIONS

    package = Path(families.__file__).resolve().parents[1]
    words = {d.name for d in DIMENSIONS} - {"placement"} | {"both"}
    for path in package.rglob("*.py"):
        if "families" in path.relative_to(package).parts:
            continue
        for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
            if tok.type == tokenize.NAME or (tok.type == tokenize.STRING
                                             and not tok.string.startswith(('"""', "'''"))):
                text = tok.string.strip("\"'")
                assert text not in words, f"{path.name}:{tok.start[0]}: {tok.string}"


def test_validating_a_sweep_imports_neither_torch_nor_optuna():
    """Families import their engines when a batch trains: `dropsweep validate` stays quick."""
    import subprocess
    import sys
    from pathlib import Path

    sweep = Path(__file__).resolve().parents[1] / "sweeps" / "sonar.yaml"
    code = ("import sys; from dropsweep.sweep.config import build_sweep; "
            "from dropsweep.sweep.file import load_sweep; "
            f"build_sweep(load_sweep({str(sweep)!r})); "
            "print(sorted(m for m in ('torch', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_a_conditional_dimension_the_baseline_uses_must_lie_in_the_space(toy, monkeypatch):
    """A baseline whose conditional dimension is sampled (here: with noise 'gauss' as the
    baseline's group) is checked like any other; text values are shown as text."""
    dims = list(toy.dimensions)
    dims[0] = Dimension("noise", Choices(NOISES), baseline="gauss", choices=NOISES,
                        simplicity="order", label="noise")
    dims[1] = Dimension("sigma", Range(0.1, 1.0), baseline=0.5, rule=_positive,
                        when=("noise", ("gauss",)), unused=0.0, label="sigma")
    monkeypatch.setattr(Toy, "dimensions", tuple(dims))
    with pytest.raises(SweepError, match=r"space.sigma: must include 0.5"):
        build("space:\n  sigma: [0.2, 0.3]\n")
    with pytest.raises(SweepError, match=r"space.noise: must include gauss"):
        build("space:\n  noise: [clean]\n")


@pytest.mark.slow
def test_a_second_family_gets_balanced_budgets_and_per_placement_confirmation(toy, dataset,
                                                                             storage):
    """Item 5 of the fair comparison: a family only declares its group dimension; balanced
    search, the budgets, and confirm --per-placement follow from that declaration."""
    from collections import Counter

    from dropsweep.study.confirm import run_confirm
    from dropsweep.answers.report import build_report
    from dropsweep.study.runner import run_search
    from dropsweep.answers.verdict import build_confirmation

    sweep = build("train: {epochs: 4, eval_every: 2}\ncv: {folds: 3}\n"
                  "search: {trials: 9, sampler: tpe, balance: placement}\n")
    run_search(sweep, dataset, storage_url=storage, batch=4, device="cpu")
    study = optuna.load_study(study_name=sweep.name, storage=storage)
    assert Counter(t.params["noise"] for t in study.get_trials()) == {n: 3 for n in NOISES}
    report = build_report(study)
    assert [(p.placement, p.n_trials, p.uneven) for p in report.placements] == [
        (n, 3, False) for n in NOISES]
    assert report.balance == {"by": "placement", "since": 0}

    run_confirm(study, dataset, repeats=2, device="cpu", per_placement=True)
    confirm = optuna.load_study(study_name=records.confirm_name(sweep.name), storage=storage)
    per = build_confirmation(confirm, folds=3).per_placement
    assert per is not None and set(per.placements) <= set(NOISES)
    assert len(per.pairs) == len(per.rows) * (len(per.rows) - 1) // 2
    report = build_report(study)
    assert all(p.confirmed is per.placements.get(p.placement) or p.confirmed ==
               per.placements.get(p.placement) for p in report.placements)


def test_the_mlp_names_adam_as_the_conv_nets_do_and_sgd_as_it_always_has():
    from dropsweep.families.cnn import CNN
    from dropsweep.families.cnn import config as cnn_config
    from dropsweep.families.mlp import MLP
    from dropsweep.families.mlp import config as mlp_config

    adam = mlp_config("hidden", hidden_rate=0.5, optimizer="adam", learning_rate=0.001)
    sgd = mlp_config("hidden", hidden_rate=0.5)
    base = mlp_config()
    assert MLP.describe(adam) == "hidden dropout 0.5, Adam lr 0.001"
    assert CNN.describe(cnn_config("dense", dense_rate=0.5)).endswith(", Adam lr 0.001")
    assert MLP.describe(sgd) == "hidden dropout 0.5"
    # Adam and its lr are said once; momentum, which Adam does not use, not at all
    assert MLP.describe_against(adam, base) == "hidden dropout 0.5, Adam lr 0.001"
    assert MLP.describe_against(base, adam) == \
        "no dropout with optimizer sgd, learning rate 0.01, momentum 0.8"
    assert MLP.describe_against(sgd, base) == "hidden dropout 0.5"


def test_the_mlp_s_memory_need_counts_adam_s_second_slot_only_where_it_may_train():
    import numpy as np

    from dropsweep.data.dataset import Dataset
    from dropsweep.families.mlp import MLP

    data = Dataset(X=np.zeros((20, 6), np.float32), y=np.arange(20) % 2, classes=("a", "b"),
                   name="d", source="memory", feature_names=tuple("abcdef"))
    sgd = build_sweep(parse_sweep_text("name: s\n", "s.yaml"))
    adam = build_sweep(parse_sweep_text("name: a\nspace: {optimizer: [sgd, adam]}\n", "a.yaml"))
    assert MLP.need(adam.sections, data, 3).parameters == \
        MLP.need(sgd.sections, data, 3).parameters * 6 // 5


def test_confirm_and_test_train_each_optimizer_apart_and_keep_the_order(monkeypatch):
    """What the search runner does for its batches, confirmation and the test do too
    (both go through families.train_apart)."""
    from dropsweep.families.mlp import MLP, optimizer_of
    from dropsweep.families.mlp import config as mlp_config

    calls: list[list[str]] = []

    def train(self, configs, folds, sweep, seed, hooks=None):
        calls.append([optimizer_of(c) for c in configs])
        return [TrialResult(fold_accuracies=[c["learning_rate"]]) for c in configs]

    monkeypatch.setattr(type(MLP), "train", train)
    configs = [mlp_config(learning_rate=0.1), mlp_config(optimizer="adam", learning_rate=0.2),
               mlp_config(learning_rate=0.3)]
    results = families.train_apart(MLP, None, configs, None, 7)
    assert calls == [["sgd", "sgd"], ["adam"]]
    assert [r.fold_accuracies for r in results] == [[0.1], [0.2], [0.3]]
    assert MLP.batches(configs[::2]) == [[0, 1]]  # one optimizer: one batch, as before


# ----------------------------------------------------------------------------- diverging batches

FAILED = r"loss became (NaN|infinite)( or infinite)? (at|by) epoch \d+(, fold \d+)?"
# Every family and form a batch may train in: (model section, engine).
FORMS = {
    "mlp-kernel": ("{family: mlp, hidden: [8]}", "c"),
    "mlp-torch": ("{family: mlp, hidden: [8]}", "torch"),
    "cnn-grouped": ("{family: cnn, conv: [4], dense: [8], padding: same}", "grouped"),
    "cnn-loop": ("{family: cnn, conv: [4], dense: [8], padding: same}", "loop"),
    "cnn-patches": ("{family: cnn, conv: [4], dense: [8], padding: same}", "patches"),
    "custom-loop": ("{family: custom, module: 'custom_modules.nets:cnn'}", "loop"),
    "custom-batched": ("{family: custom, module: 'custom_modules.nets:cnn'}", "batched"),
}


def diverging(family: str, learning_rates: Sequence[float]) -> list[Config]:
    """SGD configurations at learning rates no network survives, in ``family``'s words."""
    from dropsweep.families.cnn import config as cnn_config
    from dropsweep.families.mlp import config as mlp_config

    if family == "mlp":
        return [mlp_config(learning_rate=lr, momentum=0.9) for lr in learning_rates]
    if family == "cnn":
        return [cnn_config(optimizer="sgd", learning_rate=lr, momentum=0.9)
                for lr in learning_rates]
    return [Config({"placement": "none", "optimizer": "sgd", "learning_rate": lr,
                    "momentum": 0.9, "max_norm": None}) for lr in learning_rates]


@pytest.mark.parametrize("form", FORMS)
def test_a_batch_in_which_every_trial_diverges_fails_each_with_its_reason(form):
    """Every model leaving the batch in one epoch simply ends it: each trial failed with
    its reason, in every family and form, never an engine asked to keep zero models."""
    from dropsweep.data.dataset import load_dataset
    from dropsweep.data.protocols import folds_of

    model, engine = FORMS[form]
    if engine == "c":
        from dropsweep.families.mlp import kernel

        if kernel.load() is None:
            pytest.skip("the C kernel cannot be built here (no C compiler)")
    sweep = build_sweep(parse_sweep_text(
        f"name: d\ndata: {{dataset: digits, scale: unit}}\nmodel: {model}\n"
        "train: {epochs: 3, batch_size: 32, eval_every: 1}\n"
        "eval: {protocol: holdout, validation: 0.2, test: 0.2}\n", "d.yaml"))
    dataset = load_dataset(sweep)
    folds = folds_of(dataset, sweep, 0)
    seen: list[list[float | None]] = []
    results = sweep.family.train(diverging(sweep.family.name, [1e25, 1e26, 1e27]), folds,
                                 sweep.sections, 0, TrainHooks(
                                     engine=engine,
                                     on_checkpoint=lambda e, a: seen.append(list(a)) or []))
    assert len(results) == 3
    for r in results:
        assert re.fullmatch(FAILED, r.failure or ""), r.failure
        assert r.model is None and r.fold_accuracies == [] and not r.interrupted
    assert all(a is None for accuracies in seen for a in accuracies)
    SUITE["diverging batches"] += 1


@pytest.mark.parametrize("form", ["cnn-grouped", "cnn-loop", "cnn-patches", "custom-loop",
                                  "custom-batched"])
def test_an_engine_keeps_an_empty_batch_without_failing(form):
    """Kept to no model at all (what the epoch loop no longer asks), an engine is simply
    empty: its derived state does not index a first model."""
    from dropsweep.data.dataset import load_dataset
    from dropsweep.data.protocols import folds_of

    model, engine = FORMS[form]
    sweep = build_sweep(parse_sweep_text(
        f"name: d\ndata: {{dataset: digits, scale: unit}}\nmodel: {model}\n"
        "eval: {protocol: holdout, validation: 0.2, test: 0.2}\n", "d.yaml"))
    folds = folds_of(load_dataset(sweep), sweep, 0)
    configs = diverging(sweep.family.name, [0.01, 0.02])
    if sweep.family.name == "cnn":
        from dropsweep.families.cnn.engine import CNNEngine, settings_of, spec_of

        spec = spec_of(sweep.sections, folds.image_shape, folds.n_classes)
        batch = CNNEngine(configs, folds, settings_of(sweep.sections, spec, engine), 0)
    else:
        from dropsweep.families.custom.engine import (make_engine, resolve_network,
                                                      settings_of, shape_of)

        network = resolve_network(sweep.sections, shape_of(folds), folds.n_classes, 0)
        batch = make_engine(configs, folds, network, settings_of(sweep.sections, engine), 0)
    batch.keep(torch.zeros(0, dtype=torch.long))
    assert batch.trial_of.numel() == 0 and batch.fold_of.numel() == 0
    SUITE["diverging batches"] += 1


@pytest.mark.slow
@pytest.mark.parametrize("form", ["cnn-grouped", "custom-batched"])
def test_a_listed_space_whose_trials_all_diverge_finishes_and_reruns(form, tmp_path):
    """Issue 24's reproduction: the baseline alone, then three SGD trials at learning rates
    1e25..1e27 in one batch (the form ``auto`` takes for it); the study finishes with them
    failed with their reason, and a rerun has nothing to do (the study is not wedged)."""
    from click.testing import CliRunner

    from dropsweep.cli import main

    model, _ = FORMS[form]
    (tmp_path / "d.yaml").write_text(
        f"name: d\ndata: {{dataset: digits, scale: unit}}\nmodel: {model}\n"
        "train: {epochs: 3, batch_size: 32, eval_every: 1}\n"
        "eval: {protocol: holdout, validation: 0.2, test: 0.2}\n"
        "baseline: {optimizer: adam, learning_rate: 0.001, max_norm: off}\n"
        "space:\n  - {placement: none, optimizer: adam, learning_rate: 0.001, max_norm: off}\n"
        + "".join(f"  - {{placement: none, optimizer: sgd, learning_rate: {lr}, momentum: 0.9,"
                  " max_norm: off}\n" for lr in ("1.0e+25", "1.0e+26", "1.0e+27")))
    storage = f"sqlite:///{tmp_path / 'd.db'}"
    search = ["search", str(tmp_path / "d.yaml"), "--storage", storage, "--device", "cpu"]
    for extra in (["--trials", "1"], [], []):
        result = CliRunner().invoke(main, search + extra)
        assert result.exit_code == 0, result.output
    assert "nothing to run" in result.stdout
    trials = optuna.load_study(study_name="d", storage=storage).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "FAIL", "FAIL"]
    for t in trials[1:]:
        assert re.fullmatch(FAILED, t.user_attrs[records.FAIL_REASON]), t.user_attrs
    SUITE["diverging batches"] += 1
