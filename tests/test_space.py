"""The conditional space: what is suggested, what fixed configurations record, grid points."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from dropsweep.sweep import space as spaces
from dropsweep.sweep.config import build_sweep
from dropsweep.families.mlp import MLP
from dropsweep.families.mlp import config as mlp_config
from dropsweep.sweep.space import Choices, Fixed, Range
from dropsweep.errors import SweepError
from dropsweep.sweep.space import fixed_distributions, grid_points, planned_configs, space_of, suggest
from dropsweep.sweep.file import parse_sweep_text

def SpaceConfig(**dims):
    """The MLP's default space with ``dims`` changed."""
    return {**spaces.defaults(MLP.dimensions), **dims}


DIMS = MLP.dimensions
SPACE = SpaceConfig(
    placement=Choices(("none", "input", "hidden", "both")),
    input_rate=Range(0.1, 0.5),
    hidden_rate=Choices((0.2, 0.5)),
    learning_rate=Range(1e-3, 0.3, log=True),
    momentum=Fixed(0.9),
    max_norm=Choices((None, 3.0)),
)


def test_suggest_samples_a_rate_only_where_the_placement_uses_it():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        config = suggest(trial, DIMS, SPACE)
        seen.add(config["placement"])
        assert ("input_rate" in trial.params) == (config["placement"] in ("input", "both"))
        assert ("hidden_rate" in trial.params) == (config["placement"] in ("hidden", "both"))
        assert config["momentum"] == 0.9 and "max_norm" in trial.params
        if config["placement"] in ("input", "both"):
            assert 0.1 <= config["input_rate"] <= 0.5
        else:
            assert config["input_rate"] == 0.0
        assert isinstance(trial.distributions["learning_rate"], FloatDistribution)
        assert trial.distributions["learning_rate"].log
        study.tell(trial, 0.5)
    assert seen == {"none", "input", "hidden", "both"}


def test_fixed_configurations_use_the_space_distributions_when_inside():
    inside = mlp_config("input", 0.2, 0.0, 0.01, 0.9, None)
    dists = fixed_distributions(inside, DIMS, SPACE)
    assert set(dists) == {"placement", "input_rate", "learning_rate", "momentum", "max_norm"}
    assert dists["input_rate"] == FloatDistribution(0.1, 0.5)
    assert dists["max_norm"] == CategoricalDistribution((None, 3.0))


@pytest.mark.parametrize("space,key,fragment", [
    ("placement: [input, hidden]", "space.placement", "must include none"),
    ("max_norm: {low: 1, high: 5}", "baseline.max_norm", "off is outside space.max_norm (1..5)"),
    ("learning_rate: {low: 0.05, high: 0.3}", "baseline.learning_rate", "0.01 is outside"),
    ("momentum: [0.9, 0.95]", "baseline.momentum", "0.8 is outside space.momentum (0.9, 0.95)"),
])
def test_the_baseline_must_lie_in_the_space(space, key, fragment):
    """Optuna refuses two distributions for one parameter in a study: a baseline outside the
    space could be neither recorded nor searched around, so it is a one-line sweep error."""
    with pytest.raises(SweepError) as err:
        build_sweep(parse_sweep_text(f"space:\n  {space}\n", "s.yaml"))
    assert err.value.key == key and fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_a_baseline_max_norm_with_max_norm_off_in_the_space_is_refused():
    with pytest.raises(SweepError, match="baseline.max_norm: 3 is outside space.max_norm"):
        build_sweep(parse_sweep_text("baseline:\n  max_norm: 3\n", "s.yaml"))


def test_fixed_configurations_record_the_space_distributions():
    sweep = build_sweep(parse_sweep_text("space:\n  max_norm: [off, 3]\n", "s.yaml"))
    dists = fixed_distributions(sweep.baseline, DIMS, sweep.space)
    assert dists["placement"] == CategoricalDistribution(("none", "input", "hidden", "both"))
    assert dists["learning_rate"] == FloatDistribution(1e-3, 0.3, log=True)
    assert dists["max_norm"] == CategoricalDistribution((None, 3.0))


def test_grid_points_expand_rates_only_under_their_placements():
    grid = SpaceConfig(placement=Choices(("none", "input", "both")),
                       input_rate=Choices((0.2, 0.4)), hidden_rate=Fixed(0.5),
                       learning_rate=Choices((0.01, 0.1)), momentum=Fixed(0.9), max_norm=None)
    points = grid_points(DIMS, grid)
    # none: 2 lr; input: 2 rates x 2 lr; both: 2 input rates x 1 hidden x 2 lr
    assert len(points) == 2 + 4 + 4 == len(set(points))
    assert all(p["hidden_rate"] == 0.0 for p in points if p["placement"] != "both")


def test_a_listed_sweep_plans_the_baseline_once_and_derives_its_space():
    sweep = build_sweep(parse_sweep_text("""
space:
  - {placement: none, learning_rate: 0.01, momentum: 0.8}
  - {placement: hidden, hidden_rate: 0.2, learning_rate: 0.1, momentum: 0.9, max_norm: 3}
""", "list.yaml"))
    planned = planned_configs(sweep)
    assert planned[0] == sweep.baseline and len(planned) == 2
    space = space_of(sweep)
    assert space["placement"] == Choices(("none", "hidden"))
    assert space["max_norm"] == Choices((None, 3.0))
    assert space["hidden_rate"] == Fixed(0.2)


@pytest.mark.parametrize("per_trial", [False, True], ids=["seeded once", "each trial"])
def test_tpe_groups_each_complete_trial_once_and_proposes_as_optunas_own(per_trial):
    """study.GroupsSoFar replaces TPE's decomposition of the space into groups (which passes
    over every complete trial at every ask): the same groups after every trial, completed in
    any order, and so the same proposals, ask after ask, on a conditional space — seeded once,
    or (as a search runs it, issue 25) reseeded for every trial by its ordinal."""
    import random
    import warnings

    import optuna
    from optuna.search_space.group_decomposed import _GroupDecomposedSearchSpace

    from dropsweep.storage.optuna_private import GroupsSoFar
    from dropsweep.study.open import PerTrialSeed, make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ours = make_sampler("tpe", seed=3)
    assert isinstance(ours._group_decomposed_search_space, GroupsSoFar)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        theirs = optuna.samplers.TPESampler(seed=3, multivariate=True, group=True,
                                            constant_liar=True, n_startup_trials=5)
    ours._n_startup_trials = 5
    assert type(theirs._group_decomposed_search_space) is _GroupDecomposedSearchSpace

    def groups(space) -> set:
        return {frozenset(group.items()) for group in space.search_spaces}

    proposals = []
    for tpe in (ours, theirs):
        sampler = PerTrialSeed(tpe, 0) if per_trial else tpe
        study = optuna.create_study(sampler=sampler, direction="maximize")
        rng, running, seen = random.Random(0), [], []
        for _ in range(40):
            trial = study.ask()
            kind = trial.suggest_categorical("kind", ["a", "b", "c"])
            x = trial.suggest_float("x", 0, 1)
            if kind != "a":
                trial.suggest_float(f"rate_{kind}", 0.1, 0.9)
            if kind == "c":
                trial.suggest_int("n", 1, 4)
            running.append((trial, x))
            while running and rng.random() < 0.6:  # finished out of order, some pruned
                done, value = running.pop(rng.randrange(len(running)))
                study.tell(done, value, state=None) if rng.random() < 0.8 else \
                    study.tell(done, state=optuna.trial.TrialState.PRUNED)
            fresh = _GroupDecomposedSearchSpace(True)
            seen.append(groups(fresh.calculate(study)) ==
                        groups(tpe._group_decomposed_search_space.calculate(study)))
        assert all(seen)
        proposals.append([t.params for t in study.trials])
    assert proposals[0] == proposals[1]
    assert len({p["kind"] for p in proposals[0][5:]}) > 1  # TPE at work, not one point


RESEEDED = """
name: reseeded
search: {trials: 30, sampler: SAMPLER, seed: 4, pruner: none, balance: BALANCE}
space:
  placement: [none, input, hidden, both]
  input_rate: {low: 0.1, high: 0.5}
  hidden_rate: {low: 0.2, high: 0.6}
  learning_rate: {low: 0.001, high: 0.3, log: true}
  momentum: {low: 0.5, high: 0.99}
  max_norm: [off, 3]
"""


def _reseeded_sweep(sampler: str, balance: str):
    return build_sweep(parse_sweep_text(RESEEDED.replace("SAMPLER", sampler).replace(
        "BALANCE", balance), "r.yaml"))


def _propose(sweep, study: optuna.Study, fresh_process: bool, lost: set[int] = frozenset()
             ) -> list[dict]:
    """30 sampled trials, each told (a score of its own parameters) before the next is
    asked; ``fresh_process``: a sampler made anew (another seed to make it with, as a
    resumed process's) for every ask; ``lost``: the asks whose trial is lost (failed)
    and asked again, as a kill's trial is gone on with."""
    from dropsweep.study.open import sampler_for

    out, asks = [], 0
    study.sampler = sampler_for(sweep, 1000)
    while len(out) < 30:
        if fresh_process:
            study.sampler = sampler_for(sweep, 1000 + asks)
        trial = study.ask()
        params = suggest(trial, DIMS, space_of(sweep))
        asks += 1
        if len(out) in lost:
            lost = lost - {len(out)}
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        study.tell(trial, params["learning_rate"] * (1 + (params.get("input_rate") or 0)))
        out.append(trial.params)
    return out


@pytest.mark.parametrize("sampler,balance", [("tpe", "none"), ("random", "none"),
                                             ("tpe", "placement"), ("random", "placement")])
def test_the_sampler_proposes_by_the_trial_s_ordinal_whatever_process_asks(sampler, balance):
    """Issue 25, prerequisite B: random and TPE (multivariate, grouped, constant liar),
    balanced or not, are reseeded for every trial from the sweep's seed and the trial's
    ordinal (the trials before it that fill a place): a new process for every ask, made
    with any seed (a resume), proposes exactly what one process proposes, and trials lost
    on the way (not counted) change nothing after them. (One seed for each process: a
    resumed study proposed other points than the study never stopped.)"""
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sweep = _reseeded_sweep(sampler, balance)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        one = _propose(sweep, optuna.create_study(direction="maximize"), False)
        each = _propose(sweep, optuna.create_study(direction="maximize"), True, {3, 17})
    assert each == one
    assert len({tuple(sorted(p.items())) for p in one}) == 30  # a search, not one point


def test_two_workers_asking_at_once_propose_apart():
    """Issue 25, prerequisite B: two workers made with the same seed (they joined the study
    at the same count) asking turn about, each trial asked before the other's is told,
    propose different points (they proposed the same ones: duplicate trials)."""
    from dropsweep.study.open import sampler_for

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sweep = _reseeded_sweep("random", "none")
    storage = optuna.storages.InMemoryStorage()
    workers = [optuna.create_study(storage=storage, study_name="s", direction="maximize",
                                   sampler=sampler_for(sweep, 7), load_if_exists=True)
               for _ in range(2)]
    proposed = []
    for _ in range(10):
        asked = [(w, w.ask()) for w in workers]
        for worker, trial in asked:
            proposed.append(tuple(sorted(suggest(trial, DIMS, space_of(sweep)).items())))
        for worker, trial in asked:
            worker.tell(trial, 0.5)
    assert len(set(proposed)) == len(proposed) == 20


# ----------------------------------------------------------------------------- the optimizer

ADAM_SWEEP = """
name: adam
search: {trials: 10, sampler: random, seed: 0}
space:
  placement: [none, hidden]
  hidden_rate: [0.5]
  optimizer: [sgd, adam]
  learning_rate: {low: 0.001, high: 0.1, log: true}
  momentum: {low: 0.5, high: 0.9}
"""


def test_an_sgd_only_sweep_neither_samples_nor_stores_an_optimizer():
    sweep = build_sweep(parse_sweep_text("name: s\n", "s.yaml"))
    assert "optimizer" not in sweep.to_dict()["space"]
    assert "optimizer" not in sweep.to_dict()["baseline"]
    assert "optimizer" not in sweep.baseline
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        trial = study.ask()
        config = suggest(trial, DIMS, space_of(sweep))
        assert "optimizer" not in trial.params and "optimizer" not in config
        assert "momentum" in trial.params  # SGD's, sampled as ever
    assert "optimizer" not in fixed_distributions(sweep.baseline, DIMS, space_of(sweep))


def test_a_sweep_listing_adam_searches_it_and_never_samples_momentum_for_it():
    sweep = build_sweep(parse_sweep_text(ADAM_SWEEP, "s.yaml"))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        config = suggest(trial, DIMS, space_of(sweep))
        seen.add(trial.params["optimizer"])
        if trial.params["optimizer"] == "adam":
            assert config["optimizer"] == "adam" and "momentum" not in trial.params
            assert config["momentum"] == 0.0  # unused, as the conv nets'
        else:
            assert "optimizer" not in config and 0.5 <= trial.params["momentum"] <= 0.9
    assert seen == {"sgd", "adam"}
    # the baseline (SGD) is recorded inside the searched space, optimizer included
    assert fixed_distributions(sweep.baseline, DIMS, space_of(sweep))["optimizer"] == \
        CategoricalDistribution(("sgd", "adam"))


def test_an_adam_baseline_has_no_momentum_and_must_lie_in_the_space():
    adam = ADAM_SWEEP + "baseline: {optimizer: adam, learning_rate: 0.001}\n"
    base = build_sweep(parse_sweep_text(adam, "s.yaml")).baseline
    assert base["optimizer"] == "adam" and base["momentum"] == 0.0
    with pytest.raises(SweepError, match="baseline.optimizer"):
        build_sweep(parse_sweep_text("name: s\nbaseline: {optimizer: adam}\n", "s.yaml"))


def test_listed_configurations_name_adam_and_leave_sgd_implicit():
    listed = """
name: l
space:
  - {placement: hidden, hidden_rate: 0.5, optimizer: adam, learning_rate: 0.001}
  - {placement: hidden, hidden_rate: 0.5}
"""
    sweep = build_sweep(parse_sweep_text(listed, "s.yaml"))
    adam, sgd = sweep.configs
    assert adam == mlp_config("hidden", hidden_rate=0.5, optimizer="adam", learning_rate=0.001)
    assert sgd == mlp_config("hidden", hidden_rate=0.5)  # the baseline's lr and momentum
    assert space_of(sweep)["optimizer"] == Choices(("sgd", "adam"))
    with pytest.raises(SweepError, match="does not use momentum"):
        build_sweep(parse_sweep_text(listed.replace("learning_rate: 0.001",
                                                    "learning_rate: 0.001, momentum: 0.9"),
                                     "s.yaml"))


def test_every_family_uses_its_conditional_dimensions_at_an_implicit_baseline():
    """A configuration without an implicit dimension is at its baseline: what depends on it
    must be used there, or stored studies would lose a dimension they sampled."""
    from dropsweep.families import family, family_names

    for name in family_names():
        dims = family(name).dimensions
        for dim in dims:
            if dim.when is None:
                continue
            other = next(d for d in dims if d.name == dim.when[0])
            if other.implicit:
                assert other.baseline in dim.when[1], (name, dim.name)
