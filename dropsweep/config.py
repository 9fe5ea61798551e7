"""The sweep configuration: frozen dataclasses, their defaults and their validation.

Every default lives here with the reason for it. :func:`build_sweep` turns a
:class:`~dropsweep.sweepfile.RawSweep` into a :class:`Sweep` or raises one
:class:`~dropsweep.errors.SweepError` naming the file, line and dotted key at fault.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Union

from dropsweep.errors import SweepError
from dropsweep.records import PLACEMENTS, study_name_problem
from dropsweep.sweepfile import RawSweep, locate

# ----------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Range:
    """A continuous range; ``log`` samples uniformly in log space."""

    low: float
    high: float
    log: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True)
class Choices:
    """A finite list of values (the only kind a grid sweep accepts)."""

    values: tuple[Any, ...]

    def to_dict(self) -> list[Any]:
        return list(self.values)


@dataclass(frozen=True)
class Fixed:
    """A single value: the parameter is not searched."""

    value: Any

    def to_dict(self) -> Any:
        return self.value


Param = Union[Range, Choices, Fixed]


def param_to_dict(param: Param) -> Any:
    return param.to_dict()


# ----------------------------------------------------------------------------- one trial


@dataclass(frozen=True)
class TrialConfig:
    """The hyperparameters of one trial, with every unused rate at 0 and max-norm off as None."""

    placement: str = "none"
    input_rate: float = 0.0
    hidden_rate: float = 0.0
    learning_rate: float = 0.01
    momentum: float = 0.8
    max_norm: float | None = None

    @property
    def uses_input(self) -> bool:
        return self.placement in ("input", "both")

    @property
    def uses_hidden(self) -> bool:
        return self.placement in ("hidden", "both")

    def to_params(self) -> dict[str, Any]:
        """Optuna params: only values that mean something for this placement."""
        params: dict[str, Any] = {"placement": self.placement}
        if self.uses_input:
            params["input_rate"] = self.input_rate
        if self.uses_hidden:
            params["hidden_rate"] = self.hidden_rate
        params["learning_rate"] = self.learning_rate
        params["momentum"] = self.momentum
        if self.max_norm is not None:
            params["max_norm"] = self.max_norm
        return params

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class DataConfig:
    """Where the rows come from: the built-in Sonar set, or any numeric CSV."""

    dataset: str | None = "sonar"  # Brownlee's experiment
    csv: str | None = None  # a path; relative paths are resolved against the sweep file
    target: str | int | None = None  # column name or index; None = last column


@dataclass(frozen=True)
class ModelConfig:
    hidden: tuple[int, ...] = (60, 30)  # Brownlee's 60 -> 60 -> 30 -> 1


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


SAMPLERS = ("tpe", "random", "grid", "cmaes", "qmc")
PRUNERS = ("median", "none")


@dataclass(frozen=True)
class SpaceConfig:
    """A search space; a rate is sampled only where the placement uses it."""

    placement: Param = Choices(PLACEMENTS)
    input_rate: Param = Range(0.0, 0.5)
    hidden_rate: Param = Range(0.0, 0.7)
    learning_rate: Param = Range(1e-3, 0.3, log=True)
    momentum: Param = Range(0.5, 0.99)
    max_norm: Param | None = None  # None = max-norm off everywhere

    def to_dict(self) -> dict[str, Any]:
        return {
            "placement": self.placement.to_dict(),
            "input_rate": self.input_rate.to_dict(),
            "hidden_rate": self.hidden_rate.to_dict(),
            "learning_rate": self.learning_rate.to_dict(),
            "momentum": self.momentum.to_dict(),
            "max_norm": None if self.max_norm is None else self.max_norm.to_dict(),
        }


@dataclass(frozen=True)
class Sweep:
    """A whole validated sweep. ``configs`` is set for a fixed list of configurations."""

    name: str = "dropsweep"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cv: CVConfig = field(default_factory=CVConfig)
    baseline: TrialConfig = field(default_factory=TrialConfig)  # Brownlee: lr .01, mom .8
    search: SearchConfig = field(default_factory=SearchConfig)
    space: SpaceConfig | None = field(default_factory=SpaceConfig)
    configs: tuple[TrialConfig, ...] | None = None
    # Where the sweep was written: for error messages and relative data.csv paths only. Two
    # sweeps are equal when they run the same experiment (what to_dict() stores), wherever
    # they were read from.
    file: str = field(default="", compare=False)
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    overrides: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain data: stored in the study and compared on resume."""
        out: dict[str, Any] = {
            "name": self.name,
            "data": asdict(self.data),
            "model": {"hidden": list(self.model.hidden)},
            "train": asdict(self.train),
            "cv": asdict(self.cv),
            "baseline": {
                "learning_rate": self.baseline.learning_rate,
                "momentum": self.baseline.momentum,
                "max_norm": self.baseline.max_norm,
            },
            "search": asdict(self.search),
        }
        if self.configs is not None:
            out["space"] = [c.to_dict() for c in self.configs]
        else:
            assert self.space is not None
            out["space"] = self.space.to_dict()
        return out

    def where(self, key: str) -> dict[str, Any]:
        """Error location for a key validated later (e.g. against the data): the file line
        of the key or its nearest written ancestor, or the ``--set`` that changed it."""
        return locate(key, self.file, self.lines, self.overrides)


# ----------------------------------------------------------------------------- validation

_SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "name": (),
    "data": ("dataset", "csv", "target"),
    "model": ("hidden",),
    "train": ("epochs", "batch_size", "eval_every"),
    "cv": ("folds", "seed"),
    "baseline": ("learning_rate", "momentum", "max_norm"),
    "search": ("trials", "sampler", "seed", "pruner"),
    "space": ("placement", "input_rate", "hidden_rate", "learning_rate", "momentum", "max_norm"),
}
_RANGE_KEYS = ("low", "high", "log")
_CONFIG_KEYS = ("placement", "input_rate", "hidden_rate", "learning_rate", "momentum", "max_norm")
DATASETS = ("sonar",)


class _Checker:
    """Validation helpers that know where each key was written."""

    def __init__(self, raw: RawSweep) -> None:
        self.raw = raw

    def fail(self, key: str, message: str) -> SweepError:
        return SweepError(message, **self.raw.where(key))

    def unknown_keys(self, mapping: dict[str, Any], allowed: tuple[str, ...], prefix: str) -> None:
        for key in mapping:
            if key not in allowed:
                name = str(key)
                close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.5)
                hint = f"; did you mean '{close[0]}'?" if close else (
                    f"; valid keys: {', '.join(allowed)}" if allowed else "")
                where = self.raw.where(f"{prefix}.{name}" if prefix else name)
                # An empty key or one with spaces would vanish from the one-line message.
                if not name or name != "".join(name.split()):
                    where["key"] = f"{prefix}.{name!r}" if prefix else repr(name)
                raise SweepError(f"unknown key{hint}", **where)

    def section(self, name: str) -> dict[str, Any]:
        value = self.raw.data.get(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(name, f"must be a mapping of keys, got {_describe(value)}")
        return value

    def integer(self, key: str, value: Any, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be an integer, got {_describe(value)}")
        if minimum is not None and value < minimum:
            raise self.fail(key, f"must be at least {minimum}, got {value}")
        return value

    def number(self, key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"must be a number, got {_describe(value)}")
        try:
            number = float(value)  # an int too large for a float overflows
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise self.fail(key, f"must be a finite number, got {_describe(value)}")
        return number

    def string(self, key: str, value: Any, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, got {_describe(value)}")
        if choices is not None and value not in choices:
            close = difflib.get_close_matches(value, choices, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise self.fail(key, f"must be one of {', '.join(choices)}, got '{value}'{hint}")
        return value


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string '{_shorten(value)}'"
    try:
        shown = repr(value)
    except ValueError:  # an int with more digits than Python will print
        shown = "(too large to show)"
    return f"{type(value).__name__} {_shorten(shown)}"


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# What each hyperparameter may be: (check(value) -> error text or None, log-by-default).
def _rate(v: float) -> str | None:
    return None if 0.0 <= v < 1.0 else f"must be in [0, 1), got {v:g}"


def _positive(v: float) -> str | None:
    return None if v > 0.0 else f"must be > 0, got {v:g}"


_RULES: dict[str, tuple[Callable[[float], str | None], bool]] = {
    "input_rate": (_rate, False),
    "hidden_rate": (_rate, False),
    "learning_rate": (_positive, True),
    "momentum": (_rate, False),
    "max_norm": (_positive, False),
}


def _is_off(value: Any) -> bool:
    """``off``/``none``/``null``/``false`` all mean max-norm off (YAML reads ``off`` as False)."""
    return value is None or value is False or (
        isinstance(value, str) and value.lower() in ("off", "none", "null"))


def _scalar(check: _Checker, key: str, name: str, value: Any) -> float | None:
    if name == "max_norm" and _is_off(value):
        return None
    number = check.number(key, value)
    problem = _RULES[name][0](number)
    if problem:
        raise check.fail(key, problem)
    return number


def _param(check: _Checker, key: str, name: str, value: Any,
           default: Param | None = None) -> Param | None:
    """A range ``{low, high, log}``, a list of choices, or one fixed value.

    A range made only by ``--set`` (``--set space.learning_rate.low=0.05`` with no
    ``learning_rate`` in the file) changes the default range: the rest comes from it.
    """
    if isinstance(value, dict):
        check.unknown_keys(value, _RANGE_KEYS, key)
        if isinstance(default, Range) and key in check.raw.created:
            value = {**default.to_dict(), **value}
        for needed in ("low", "high"):
            if needed not in value:
                raise check.fail(f"{key}.{needed}", "a range needs both low and high")
        low = _scalar(check, f"{key}.low", name, value["low"])
        high = _scalar(check, f"{key}.high", name, value["high"])
        if low is None or high is None:
            raise check.fail(key, "a range cannot be off; use a list such as [off, 3, 4]")
        log = value.get("log", _RULES[name][1])
        if not isinstance(log, bool):
            raise check.fail(f"{key}.log", f"must be true or false, got {_describe(log)}")
        if low > high:
            raise check.fail(key, f"low ({low:g}) is greater than high ({high:g})")
        if log and low <= 0:
            raise check.fail(f"{key}.low", f"a log range needs low > 0, got {low:g}")
        return Fixed(low) if low == high else Range(low, high, log)
    if isinstance(value, list):
        if not value:
            raise check.fail(key, "empty list of choices")
        values = tuple(_scalar(check, f"{key}.{i}", name, v) for i, v in enumerate(value))
        unique = tuple(dict.fromkeys(values))
        if name == "max_norm" and unique == (None,):
            return None
        return Fixed(unique[0]) if len(unique) == 1 else Choices(unique)
    fixed = _scalar(check, key, name, value)
    if fixed is None:
        return None
    return Fixed(fixed)


def _placement(check: _Checker, key: str, value: Any) -> Param:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise check.fail(key, "empty list of choices")
    for i, v in enumerate(values):
        sub = f"{key}.{i}" if isinstance(value, list) else key
        check.string(sub, v, PLACEMENTS)
    unique = tuple(dict.fromkeys(values))
    return Fixed(unique[0]) if len(unique) == 1 else Choices(unique)


def _space(check: _Checker, raw_space: dict[str, Any]) -> SpaceConfig:
    check.unknown_keys(raw_space, _SECTION_KEYS["space"], "space")
    default = SpaceConfig()
    kwargs: dict[str, Any] = {}
    if "placement" in raw_space:
        kwargs["placement"] = _placement(check, "space.placement", raw_space["placement"])
    for name in ("input_rate", "hidden_rate", "learning_rate", "momentum", "max_norm"):
        if name in raw_space:
            param = _param(check, f"space.{name}", name, raw_space[name], getattr(default, name))
            if param is None and name != "max_norm":
                raise check.fail(f"space.{name}", "must be given")
            kwargs[name] = param
    space = SpaceConfig(**{**default.__dict__, **kwargs})
    return space


def _trial_config(check: _Checker, key: str, value: Any, defaults: TrialConfig) -> TrialConfig:
    """One fixed configuration of a list sweep; rates must match the placement.

    Learning rate, momentum and max-norm left out are the baseline's.
    """
    if not isinstance(value, dict):
        raise check.fail(key, f"must be a mapping of fixed values, got {_describe(value)}")
    check.unknown_keys(value, _CONFIG_KEYS, key)
    placement = check.string(f"{key}.placement", value.get("placement", "none"), PLACEMENTS)
    numbers: dict[str, Any] = {}
    for name in ("input_rate", "hidden_rate", "learning_rate", "momentum", "max_norm"):
        if name in value:
            if isinstance(value[name], (dict, list)):
                raise check.fail(f"{key}.{name}", "a listed configuration takes single values")
            numbers[name] = _scalar(check, f"{key}.{name}", name, value[name])
    uses = {"input_rate": placement in ("input", "both"),
            "hidden_rate": placement in ("hidden", "both")}
    for name, used in uses.items():
        if used and name not in numbers:
            raise check.fail(f"{key}.{name}", f"placement '{placement}' needs {name}")
        if not used and numbers.get(name):
            raise check.fail(f"{key}.{name}", f"placement '{placement}' does not use {name}")
    return TrialConfig(
        placement=placement,
        input_rate=numbers.get("input_rate", 0.0) or 0.0,
        hidden_rate=numbers.get("hidden_rate", 0.0) or 0.0,
        learning_rate=numbers.get("learning_rate", defaults.learning_rate),
        momentum=numbers.get("momentum", defaults.momentum),
        max_norm=numbers.get("max_norm", defaults.max_norm),
    )


def _contains(param: Param | None, value: Any) -> bool:
    if param is None:
        return value is None
    if isinstance(param, Range):
        return value is not None and param.low <= value <= param.high
    if isinstance(param, Choices):
        return value in param.values
    return value == param.value


def _check_baseline_in_space(check: _Checker, baseline: TrialConfig, space: SpaceConfig) -> None:
    """The baseline is every study's first trial, recorded in the space's own distributions
    (Optuna refuses one parameter with two different distributions in a study), so it must
    lie inside the space."""
    if not _contains(space.placement, "none"):
        raise check.fail("space.placement", "must include none: the no-dropout baseline is "
                                            "every study's first trial")
    for name in ("learning_rate", "momentum", "max_norm"):
        value, param = getattr(baseline, name), getattr(space, name)
        if not _contains(param, value):
            shown = "off" if value is None else f"{value:g}"
            allowed = ("off" if param is None else
                       f"{param.low:g}..{param.high:g}" if isinstance(param, Range) else
                       ", ".join("off" if v is None else f"{v:g}" for v in
                                 (param.values if isinstance(param, Choices) else [param.value])))
            raise check.fail(f"baseline.{name}", f"{shown} is outside space.{name} ({allowed}); "
                             "the baseline is every study's first trial: change one of them"
                             + ("; a list such as [off, 3, 4] allows max-norm off"
                                if name == "max_norm" and value is None else ""))


def build_sweep(raw: RawSweep) -> Sweep:
    """Validate a raw sweep completely; nothing is touched before this returns."""
    check = _Checker(raw)
    check.unknown_keys(raw.data, tuple(_SECTION_KEYS), "")

    name = raw.data.get("name", Sweep.name)
    if not isinstance(name, str) or not name.strip():
        raise check.fail("name", f"must be a non-empty string, got {_describe(name)}")
    problem = study_name_problem(name)
    if problem:
        raise check.fail("name", problem)

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
            raise check.fail("data.target", f"must be a column name or index, got {_describe(target)}")
        if dataset is not None:
            raise check.fail("data.target", "only a data.csv file takes a target column")
    data = DataConfig(dataset=dataset, csv=csv, target=target)

    m = check.section("model")
    check.unknown_keys(m, _SECTION_KEYS["model"], "model")
    hidden_raw = m.get("hidden", list(ModelConfig.hidden))
    if isinstance(hidden_raw, int) and not isinstance(hidden_raw, bool):
        hidden_raw = [hidden_raw]
    if not isinstance(hidden_raw, list) or not hidden_raw:
        raise check.fail("model.hidden", f"must be a list of layer widths, got {_describe(hidden_raw)}")
    hidden = tuple(check.integer(f"model.hidden.{i}", w, 1) for i, w in enumerate(hidden_raw))
    model = ModelConfig(hidden=hidden)

    t = check.section("train")
    check.unknown_keys(t, _SECTION_KEYS["train"], "train")
    train = TrainConfig(
        epochs=check.integer("train.epochs", t.get("epochs", TrainConfig.epochs), 1),
        batch_size=check.integer("train.batch_size", t.get("batch_size", TrainConfig.batch_size), 1),
        eval_every=check.integer("train.eval_every", t.get("eval_every", TrainConfig.eval_every), 1),
    )

    c = check.section("cv")
    check.unknown_keys(c, _SECTION_KEYS["cv"], "cv")
    cv = CVConfig(
        folds=check.integer("cv.folds", c.get("folds", CVConfig.folds), 2),
        seed=check.integer("cv.seed", c.get("seed", CVConfig.seed), 0),
    )

    b = check.section("baseline")
    check.unknown_keys(b, _SECTION_KEYS["baseline"], "baseline")
    default_baseline = TrialConfig()
    baseline = TrialConfig(
        placement="none",
        learning_rate=_scalar(check, "baseline.learning_rate", "learning_rate",
                              b.get("learning_rate", default_baseline.learning_rate)),
        momentum=_scalar(check, "baseline.momentum", "momentum",
                         b.get("momentum", default_baseline.momentum)),
        max_norm=_scalar(check, "baseline.max_norm", "max_norm", b.get("max_norm")),
    )

    s = check.section("search")
    check.unknown_keys(s, _SECTION_KEYS["search"], "search")
    search = SearchConfig(
        trials=check.integer("search.trials", s.get("trials", SearchConfig.trials), 1),
        sampler=check.string("search.sampler", s.get("sampler", SearchConfig.sampler), SAMPLERS),
        seed=check.integer("search.seed", s.get("seed", SearchConfig.seed), 0),
        pruner=check.string("search.pruner", s.get("pruner", SearchConfig.pruner), PRUNERS),
    )

    raw_space = raw.data.get("space")
    space: SpaceConfig | None = None
    configs: tuple[TrialConfig, ...] | None = None
    if isinstance(raw_space, list):
        if not raw_space:
            raise check.fail("space", "empty list of configurations")
        listed = [_trial_config(check, f"space.{i}", v, baseline) for i, v in enumerate(raw_space)]
        configs = tuple(dict.fromkeys(listed))
    elif raw_space is None or isinstance(raw_space, dict):
        space = _space(check, raw_space or {})
        if search.sampler == "grid":
            # A grid expands a rate only where a placement uses it (space.grid_points), so
            # a range for a rate none of its placements uses is never read.
            placements = (space.placement.values if isinstance(space.placement, Choices)
                          else (space.placement.value,))
            unused = {"input_rate": not {"input", "both"} & set(placements),
                      "hidden_rate": not {"hidden", "both"} & set(placements)}
            for key, param in space.__dict__.items():  # not ``name``: that is the sweep's
                if isinstance(param, Range) and not unused.get(key, False):
                    hint = "" if key in (raw_space or {}) else (
                        f" (the default is the range {param.low:g}..{param.high:g}; give a list)")
                    raise check.fail(f"space.{key}",
                                     f"the grid sampler takes lists of values, not ranges{hint}")
        _check_baseline_in_space(check, baseline, space)
    else:
        raise check.fail("space", f"must be a mapping (a search space) or a list of "
                                  f"configurations, got {_describe(raw_space)}")

    return Sweep(name=name.strip(), data=data, model=model, train=train, cv=cv,
                 baseline=baseline, search=search, space=space, configs=configs,
                 file=raw.file, lines=dict(raw.lines), overrides=dict(raw.overrides))
