"""The sweep configuration: frozen dataclasses, their defaults and their validation.

Every default lives here with the reason for it. :func:`build_sweep` turns a
:class:`~dropsweep.sweepfile.RawSweep` into a :class:`Sweep` or raises one
:class:`~dropsweep.errors.SweepError` naming the file, line and dotted key at fault.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from dropsweep import space as spaces
from dropsweep.checks import Checker, describe
from dropsweep.families import DEFAULT_FAMILY, Family, family, family_names
from dropsweep.records import study_name_problem
from dropsweep.space import Config, Param, Space
from dropsweep.sweepfile import RawSweep, locate

# ----------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class DataConfig:
    """Where the rows come from: the built-in Sonar set, or any numeric CSV."""

    dataset: str | None = "sonar"  # Brownlee's experiment
    csv: str | None = None  # a path; relative paths are resolved against the sweep file
    target: str | int | None = None  # column name or index; None = last column


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 300  # Brownlee
    batch_size: int = 16  # Brownlee
    eval_every: int = 10  # epochs between held-out checkpoints: pruning and learning curves


@dataclass(frozen=True)
class CVConfig:
    folds: int = 10  # Brownlee: 10-fold stratified
    seed: int = 7  # Brownlee's seed; the fold split depends only on it


@dataclass(frozen=True)
class SearchConfig:
    trials: int = 100  # total finished trials in the study, baseline included
    sampler: str = "tpe"  # multivariate TPE handles the conditional space
    seed: int = 0
    pruner: str = "median"
    # "placement": every placement an equal share of the trials, each searched on its own
    # (dropsweep.balance); "none": the sampler spends them where it likes
    balance: str = "none"


SAMPLERS = ("tpe", "random", "grid", "cmaes", "qmc")
PRUNERS = ("median", "none")
BALANCES = ("none", "placement")


@dataclass(frozen=True)
class Sweep:
    """A whole validated sweep. ``configs`` is set for a fixed list of configurations."""

    name: str = "dropsweep"
    data: DataConfig = field(default_factory=DataConfig)
    # the family's own model section (MLP: hidden widths); its ``family`` names the family
    model: Any = field(default_factory=lambda: family(DEFAULT_FAMILY).default_model())
    train: TrainConfig = field(default_factory=TrainConfig)
    cv: CVConfig = field(default_factory=CVConfig)
    baseline: Config = field(  # the family's no-dropout configuration; Brownlee: lr .01, mom .8
        default_factory=lambda: spaces.baseline(family(DEFAULT_FAMILY).dimensions))
    search: SearchConfig = field(default_factory=SearchConfig)
    space: Space | None = field(
        default_factory=lambda: spaces.defaults(family(DEFAULT_FAMILY).dimensions))
    configs: tuple[Config, ...] | None = None
    # Where the sweep was written: for error messages and relative data.csv paths only. Two
    # sweeps are equal when they run the same experiment (what to_dict() stores), wherever
    # they were read from.
    file: str = field(default="", compare=False)
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    overrides: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def family(self) -> Family:
        return family(self.model.family)

    @property
    def dimensions(self) -> tuple[spaces.Dimension, ...]:
        return self.family.dimensions

    @property
    def balanced(self) -> bool:
        """Whether its placements share the trials equally: ``search.balance: placement`` in
        a sampled search (a list or a grid runs each configuration once: nothing to share)."""
        return self.search.balance == "placement" and self.configs is None \
            and self.search.sampler != "grid"

    def to_dict(self) -> dict[str, Any]:
        """Plain data: stored in the study and compared on resume."""
        out: dict[str, Any] = {
            "name": self.name,
            "data": asdict(self.data),
            "model": self.model.to_dict(),
            "train": asdict(self.train),
            "cv": asdict(self.cv),
            "baseline": {d.name: self.baseline[d.name] for d in self.dimensions
                         if d.in_baseline},
            "search": asdict(self.search),
        }
        if self.configs is not None:
            out["space"] = [c.to_dict() for c in self.configs]
        else:
            assert self.space is not None
            out["space"] = {name: None if p is None else p.to_dict()
                            for name, p in self.space.items()}
        return out

    def where(self, key: str) -> dict[str, Any]:
        """Error location for a key validated later (e.g. against the data): the file line
        of the key or its nearest written ancestor, or the ``--set`` that changed it."""
        return locate(key, self.file, self.lines, self.overrides)


# ----------------------------------------------------------------------------- validation

# The generic sections' keys; ``model``, ``baseline`` and ``space`` are the family's.
_SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "name": (),
    "data": ("dataset", "csv", "target"),
    "model": (),
    "train": ("epochs", "batch_size", "eval_every"),
    "cv": ("folds", "seed"),
    "baseline": (),
    "search": ("trials", "sampler", "seed", "pruner", "balance"),
    "space": (),
}
DATASETS = ("sonar",)


def build_sweep(raw: RawSweep) -> Sweep:
    """Validate a raw sweep completely; nothing is touched before this returns."""
    check = Checker(raw)
    check.unknown_keys(raw.data, tuple(_SECTION_KEYS), "")
    name, data = _name(check), _data(check)  # in the file's order: the first mistake is named
    fam, model = _model(check)
    train, cv = _train(check), _cv(check)
    baseline = spaces.parse_baseline(check, fam.dimensions, check.section("baseline"))
    search = _search(check)
    space, configs = _space(check, fam, baseline, search)
    return Sweep(name=name, data=data, model=model, train=train, cv=cv, baseline=baseline,
                 search=search, space=space, configs=configs, file=raw.file,
                 lines=dict(raw.lines), overrides=dict(raw.overrides))


def _name(check: Checker) -> str:
    name = check.raw.data.get("name", Sweep.name)
    if not isinstance(name, str) or not name.strip():
        raise check.fail("name", f"must be a non-empty string, got {describe(name)}")
    problem = study_name_problem(name)
    if problem:
        raise check.fail("name", problem)
    return name.strip()


def _data(check: Checker) -> DataConfig:
    """The built-in set by name, or a CSV file with an optional target column."""
    d = check.section("data")
    check.unknown_keys(d, _SECTION_KEYS["data"], "data")
    csv = d.get("csv")
    if csv is not None:
        csv = check.string("data.csv", csv)
        if not csv.strip():
            raise check.fail("data.csv", "must be a path to a CSV file, got an empty string")
        if "dataset" in d and d["dataset"] is not None:
            raise check.fail("data.dataset", "give either data.dataset or data.csv, not both")
        dataset = None
    else:
        dataset = check.string("data.dataset", d.get("dataset", "sonar"), DATASETS)
    target = d.get("target")
    if target is not None:
        if isinstance(target, bool) or not isinstance(target, (str, int)):
            raise check.fail("data.target", f"must be a column name or index, got {describe(target)}")
        if dataset is not None:
            raise check.fail("data.target", "only a data.csv file takes a target column")
    return DataConfig(dataset=dataset, csv=csv, target=target)


def _model(check: Checker) -> tuple[Family, Any]:
    """``model.family`` picks the family; the rest of the section is the family's to read."""
    m = check.section("model")
    fam = family(check.string("model.family", m.get("family", DEFAULT_FAMILY), family_names()))
    check.unknown_keys(m, ("family", *fam.model_keys), "model")
    return fam, fam.parse_model(check, m)


def _train(check: Checker) -> TrainConfig:
    t = check.section("train")
    check.unknown_keys(t, _SECTION_KEYS["train"], "train")
    return TrainConfig(
        epochs=check.integer("train.epochs", t.get("epochs", TrainConfig.epochs), 1),
        batch_size=check.integer("train.batch_size", t.get("batch_size", TrainConfig.batch_size), 1),
        eval_every=check.integer("train.eval_every", t.get("eval_every", TrainConfig.eval_every), 1),
    )


def _cv(check: Checker) -> CVConfig:
    c = check.section("cv")
    check.unknown_keys(c, _SECTION_KEYS["cv"], "cv")
    return CVConfig(
        folds=check.integer("cv.folds", c.get("folds", CVConfig.folds), 2),
        seed=check.integer("cv.seed", c.get("seed", CVConfig.seed), 0),
    )


def _search(check: Checker) -> SearchConfig:
    s = check.section("search")
    check.unknown_keys(s, _SECTION_KEYS["search"], "search")
    return SearchConfig(
        trials=check.integer("search.trials", s.get("trials", SearchConfig.trials), 1),
        sampler=check.string("search.sampler", s.get("sampler", SearchConfig.sampler), SAMPLERS),
        seed=check.integer("search.seed", s.get("seed", SearchConfig.seed), 0),
        pruner=check.string("search.pruner", s.get("pruner", SearchConfig.pruner), PRUNERS),
        balance=check.string("search.balance", _off_is_none(s.get("balance", SearchConfig.balance)),
                             BALANCES),
    )


def _off_is_none(value: Any) -> Any:
    """YAML reads ``off``/``no``/``false`` as False and ``null`` as None: all mean none."""
    return "none" if value is None or value is False else value


def _space(check: Checker, fam: Family, baseline: Config, search: SearchConfig
           ) -> tuple[dict[str, Param | None] | None, tuple[Config, ...] | None]:
    """A search space (a mapping) or a list of configurations, checked against the family's
    dimension table; the baseline must lie inside a space."""
    raw_space, dims = check.raw.data.get("space"), fam.dimensions
    if isinstance(raw_space, list):
        if not raw_space:
            raise check.fail("space", "empty list of configurations")
        listed = [spaces.parse_config(check, f"space.{i}", dims, v, baseline)
                  for i, v in enumerate(raw_space)]
        return None, tuple(spaces.unique(listed))
    if raw_space is None or isinstance(raw_space, dict):
        space = spaces.parse_space(check, dims, raw_space or {})
        if search.sampler == "grid":
            spaces.check_grid(check, dims, space, raw_space or {})
        spaces.check_baseline_in_space(check, dims, baseline, space, fam.baseline_words)
        return space, None
    raise check.fail("space", f"must be a mapping (a search space) or a list of "
                              f"configurations, got {describe(raw_space)}")
