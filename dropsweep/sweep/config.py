"""The sweep configuration: the whole :class:`Sweep`, its defaults and its validation.

Every default lives here with the reason for it (the generic sections' in
:mod:`dropsweep.sweep.sections`). :func:`build_sweep` turns a
:class:`~dropsweep.sweep.file.RawSweep` into a :class:`Sweep` or raises one
:class:`~dropsweep.errors.SweepError` naming the file, line and dotted key at fault.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from dropsweep.data import registry
from dropsweep.sweep import space as spaces
from dropsweep.sweep.checks import Checker, describe
from dropsweep.families import DEFAULT_FAMILY, Family, Sections, family, family_names
from dropsweep.records import study_name_problem
from dropsweep.sweep.space import Config, Param, Space
from dropsweep.sweep.file import RawSweep, locate
# the generic sections live apart, so that what reads them (data, a family) needs no Sweep
from dropsweep.sweep.sections import (BALANCES, PROTOCOLS, PRUNERS, SAMPLERS, CVConfig,
                                      DataConfig, EvalConfig, SearchConfig, TrainConfig)

if TYPE_CHECKING:
    from dropsweep.data.dataset import Dataset

# ----------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class Sweep:
    """A whole validated sweep. ``configs`` is set for a fixed list of configurations."""

    name: str = "dropsweep"
    data: DataConfig = field(default_factory=DataConfig)
    # the family's own model section (MLP: hidden widths); its ``family`` names the family
    model: Any = field(default_factory=lambda: family(DEFAULT_FAMILY).default_model())
    train: TrainConfig = field(default_factory=TrainConfig)
    cv: CVConfig = field(default_factory=CVConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
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
        """The model's family bound to this model section (its dimensions may depend on it)."""
        return family(self.model.family).bound(self.model)

    @property
    def dimensions(self) -> tuple[spaces.Dimension, ...]:
        return self.family.dimensions

    @property
    def sections(self) -> Sections:
        """What its family reads of it (to train, to size a batch, to export)."""
        return Sections(model=self.model, train=self.train, baseline=self.baseline,
                        searched=spaces.space_of(self), where=self.where)

    @property
    def splits(self) -> int:
        """Models a trial trains: one per fold, or one (hold-out)."""
        return self.cv.folds if self.eval.protocol == "kfold" else 1

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
            "eval": asdict(self.eval),
            "baseline": {d.name: self.baseline[d.name] for d in self.dimensions
                         if d.in_baseline and d.name in self.baseline},  # implicit: left out
            "search": asdict(self.search),
        }
        if self.configs is not None:
            out["space"] = [c.to_dict() for c in self.configs]
        else:
            assert self.space is not None
            out["space"] = spaces.stored_space(self.dimensions, self.space)
        return out

    def where(self, key: str) -> dict[str, Any]:
        """Error location for a key validated later (e.g. against the data): the file line
        of the key or its nearest written ancestor, or the ``--set`` that changed it."""
        return locate(key, self.file, self.lines, self.overrides)


# ----------------------------------------------------------------------------- validation

# The generic sections' keys; ``model``, ``baseline`` and ``space`` are the family's.
_SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "name": (),
    "data": ("dataset", "csv", "target", "npz", "scale"),
    "model": (),
    "train": ("epochs", "batch_size", "eval_every"),
    "cv": ("folds", "seed"),
    "eval": ("protocol", "validation", "test"),
    "baseline": (),
    "search": ("trials", "sampler", "seed", "pruner", "balance"),
    "space": (),
}
# The built-in data sets: the names of dropsweep.data.registry's records, in its order
DATASETS = tuple(registry.DATASETS)
SCALES = ("unit", "standard", "none")


def build_sweep(raw: RawSweep) -> Sweep:
    """Validate a raw sweep completely; nothing is touched before this returns."""
    check = Checker(raw)
    check.unknown_keys(raw.data, tuple(_SECTION_KEYS), "")
    name, data = _name(check), _data(check)  # in the file's order: the first mistake is named
    fam, model = _model(check)
    train, cv, evaluation = _train(check), _cv(check), _eval(check)
    baseline = spaces.parse_baseline(check, fam.dimensions, check.section("baseline"))
    search = _search(check)
    space, configs = _space(check, fam, baseline, search)
    return Sweep(name=name, data=data, model=model, train=train, cv=cv, eval=evaluation,
                 baseline=baseline,
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
    """A built-in set by name, a CSV file with an optional target column, or an npz file."""
    d = check.section("data")
    check.unknown_keys(d, _SECTION_KEYS["data"], "data")
    files = {key: d.get(key) for key in ("csv", "npz") if d.get(key) is not None}
    if len(files) > 1:
        raise check.fail("data.npz", "give one of data.dataset, data.csv or data.npz")
    paths = {}
    for key, value in files.items():
        text = check.string(f"data.{key}", value)
        if not text.strip():
            raise check.fail(f"data.{key}", f"must be a path to a{'n' if key == 'npz' else ''} "
                                            f"{key.upper()} file, got an empty string")
        if "dataset" in d and d["dataset"] is not None:
            raise check.fail("data.dataset", f"give either data.dataset or data.{key}, not both")
        paths[key] = text
    dataset = None if paths else check.string("data.dataset", d.get("dataset", "sonar"),
                                              tuple(registry.DATASETS))
    target = d.get("target")
    if target is not None:
        if isinstance(target, bool) or not isinstance(target, (str, int)):
            raise check.fail("data.target", f"must be a column name or index, got {describe(target)}")
        if "csv" not in paths:
            raise check.fail("data.target", "only a data.csv file takes a target column")
    scale = d.get("scale")
    if scale is not None:
        scale = check.string("data.scale", "none" if scale is False else scale, SCALES)
    return DataConfig(dataset=dataset, csv=paths.get("csv"), target=target,
                      npz=paths.get("npz"), scale=scale)


def _model(check: Checker) -> tuple[Family, Any]:
    """``model.family`` picks the family; the rest of the section is the family's to read."""
    m = check.section("model")
    fam = family(check.string("model.family", m.get("family", DEFAULT_FAMILY), family_names()))
    check.unknown_keys(m, ("family", *fam.model_keys), "model")
    model = fam.resolve_model(check, fam.parse_model(check, m), lambda: _dataset(check))
    return fam.bound(model), model


def _dataset(check: Checker) -> Dataset:
    """The sweep's data, read for a family whose ``model`` section is checked against it
    (its ``data`` and ``eval`` sections validated first, so their mistakes are named as
    ever)."""
    from dropsweep.data.dataset import load_dataset

    raw = check.raw
    return load_dataset(Sweep(data=_data(check), eval=_eval(check), file=raw.file,
                              lines=dict(raw.lines), overrides=dict(raw.overrides)))


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


def _eval(check: Checker) -> EvalConfig:
    e = check.section("eval")
    check.unknown_keys(e, _SECTION_KEYS["eval"], "eval")
    protocol = check.string("eval.protocol", e.get("protocol", EvalConfig.protocol), PROTOCOLS)
    validation = check.number("eval.validation", e.get("validation", EvalConfig.validation))
    if not 0.0 < validation < 1.0:
        raise check.fail("eval.validation", f"must be a fraction in (0, 1), got {validation:g}")
    test = "none" if e.get("test") is False else e.get("test")  # YAML reads `off` as False
    fraction = isinstance(test, (int, float)) and not isinstance(test, bool) and 0 < test < 1
    if test is not None and test not in ("official", "none") and not fraction:
        raise check.fail("eval.test", "must be official, none, or a fraction in (0, 1) to hold "
                                      f"back, got {describe(e.get('test'))}")
    test = float(test) if fraction else test
    return EvalConfig(protocol=protocol, validation=validation, test=test)


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
