"""A search space declared as a table of dimensions, and everything derived from it.

A model family (:mod:`dropsweep.families`) declares its dimensions once: name, default
range, validation rule, the condition under which the dimension is sampled and its value
when it is not. From that one table come the validation of ``space``, ``baseline`` and
listed configurations, the Optuna walk (``suggest``, ``fixed_distributions``), grid points,
"is the baseline inside the space", an exported configuration and the 1-SE "simplest"
order. Nothing here knows what any dimension means.

A trial's configuration is a :class:`Config`: plain data keyed by dimension (every
dimension present, an unsampled one at its ``unused`` value, an ``implicit`` one only away
from its baseline), stored as a trial's ``config`` user attribute and interpreted only by
its family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Protocol, Sequence, Union

from dropsweep.sweep.checks import Checker, describe

if TYPE_CHECKING:  # optuna is imported where it is used: validation must not wait for it
    import optuna
    from optuna.distributions import BaseDistribution

    from dropsweep.sweep.sections import SearchConfig

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
Space = Mapping[str, Union[Param, None]]  # dimension -> what is searched; None = switched off


def values_of(param: Param | None) -> tuple[Any, ...]:
    """Every value a finite parameter takes (a range has no such list)."""
    if param is None:
        return (None,)
    if isinstance(param, Choices):
        return param.values
    if isinstance(param, Fixed):
        return (param.value,)
    raise ValueError("a range has no finite list of values")


def contains(param: Param | None, value: Any) -> bool:
    if param is None:
        return value is None
    if isinstance(param, Range):
        return value is not None and param.low <= value <= param.high
    return value in values_of(param)


def _one_or_choices(values: Sequence[Any]) -> Param:
    unique = tuple(dict.fromkeys(values))
    return Fixed(unique[0]) if len(unique) == 1 else Choices(unique)


# ----------------------------------------------------------------------------- dimensions


@dataclass(frozen=True)
class Dimension:
    """One hyperparameter of a family's space.

    ``choices`` makes it categorical (its order is also its simplicity order); otherwise it
    is a number checked by ``rule``. ``when = (other, values)``: sampled only when the
    dimension ``other`` took one of ``values``, else ``unused``. ``can_be_off``: ``None``
    ("off") is one of its values, and the space may switch it off altogether (``default``
    None = off unless the sweep turns it on). ``baseline``: the value of the baseline
    configuration; ``in_baseline``: the ``baseline`` section may change it.
    ``implicit``: a dimension added after studies were stored (the MLP's optimizer): at its
    ``baseline`` it is left out of a configuration, never asked of the sampler while the
    space fixes it there, and left out of the stored sweep, so those studies read, compare
    and resume as the same experiment (:func:`value_of` reads it back). A dimension whose
    condition names it must be used at its baseline (an absent one means that baseline).
    """

    name: str
    default: Param | None
    baseline: Any
    choices: tuple[Any, ...] = ()  # strings, or (False, True) for a switch
    rule: Callable[[float], str | None] | None = None
    log: bool = False  # a range of it is log-scaled unless the sweep says otherwise
    when: tuple[str, tuple[Any, ...]] | None = None
    unused: Any = None
    can_be_off: bool = False
    in_baseline: bool = False
    label: str = ""  # in words: "learning rate"
    # 1-SE order, simplest first: "order" (earlier choice), "sum" (smaller total of every
    # "sum" dimension), "off" (switched off first); None: plays no part
    simplicity: str | None = None
    implicit: bool = False

    def used(self, picked: Mapping[str, Any]) -> bool:
        # absent: an implicit dimension at its baseline, where its dependents are used
        return (self.when is None or self.when[0] not in picked
                or picked[self.when[0]] in self.when[1])

    def is_implicit(self, value: Any) -> bool:
        """Whether ``value`` of this dimension is left out of a configuration."""
        return self.implicit and value == self.baseline


def value_of(dim: Dimension, config: Mapping[str, Any]) -> Any:
    """``dim``'s value in ``config``: its baseline where an implicit dimension is left out."""
    return config.get(dim.name, dim.baseline if dim.implicit else None)


def _config(dimensions: Sequence[Dimension], picked: Mapping[str, Any]) -> Config:
    """A configuration from every dimension's value, implicit ones at baseline left out."""
    return Config({d.name: picked[d.name] for d in dimensions
                   if d.name in picked and not d.is_implicit(picked[d.name])})


class Config(Mapping[str, Any]):
    """One trial's configuration: an immutable, hashable mapping in its family's order."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any] | Sequence[tuple[str, Any]]) -> None:
        self._items = dict(items)

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))  # as equality: order plays no part

    def __repr__(self) -> str:
        return f"Config({self._items!r})"

    def to_dict(self) -> dict[str, Any]:
        """Plain data: what a trial stores as its ``config``."""
        return dict(self._items)


Pick = Callable[[Dimension, "Param"], Any]


def walk(dimensions: Sequence[Dimension], space: Space, pick: Pick) -> Config:
    """The one definition of a conditional space: each dimension in table order, asked of
    ``pick`` only when its condition holds and the space has it switched on."""
    picked: dict[str, Any] = {}
    for dim in dimensions:
        param = space.get(dim.name)
        if not dim.used(picked):
            value = dim.unused
        elif param is None:
            value = None
        elif dim.implicit and param == Fixed(dim.baseline):
            value = dim.baseline  # not a parameter: studies from before it have none
        else:
            value = pick(dim, param)
        picked[dim.name] = value if dim.choices or value is None else float(value)
    return _config(dimensions, picked)


def defaults(dimensions: Sequence[Dimension]) -> dict[str, Param | None]:
    return {d.name: d.default for d in dimensions}


def stored_space(dimensions: Sequence[Dimension], space: Space) -> dict[str, Any]:
    """``space`` as plain data, an implicit dimension fixed at its baseline left out."""
    implicit = {d.name for d in dimensions if d.implicit and space.get(d.name) == Fixed(d.baseline)}
    return {name: None if p is None else p.to_dict() for name, p in space.items()
            if name not in implicit}


def baseline(dimensions: Sequence[Dimension], **changes: Any) -> Config:
    """The baseline configuration, with ``changes`` to what the baseline section may set; a
    dimension its choices leave unused (momentum under Adam) at its ``unused`` value, as
    the sampler records it."""
    picked: dict[str, Any] = {}
    for d in dimensions:
        picked[d.name] = changes.get(d.name, d.baseline) if d.used(picked) else d.unused
    return _config(dimensions, picked)


# ----------------------------------------------------------------------------- validation


def _is_off(value: Any) -> bool:
    """``off``/``none``/``null``/``false`` all mean off (YAML reads ``off`` as False)."""
    return value is None or value is False or (
        isinstance(value, str) and value.lower() in ("off", "none", "null"))


def scalar(check: Checker, key: str, dim: Dimension, value: Any) -> Any:
    """One value of ``dim`` as written at ``key``."""
    if dim.choices and isinstance(dim.choices[0], bool):
        if not isinstance(value, bool):
            raise check.fail(key, f"must be true or false, got {describe(value)}")
        return value
    if dim.choices:
        return check.string(key, value, dim.choices)
    if dim.can_be_off and _is_off(value):
        return None
    number = check.number(key, value)
    problem = dim.rule(number) if dim.rule else None
    if problem:
        raise check.fail(key, problem)
    return number


def parse_param(check: Checker, key: str, dim: Dimension, value: Any) -> Param | None:
    """A range ``{low, high, log}``, a list of choices, or one fixed value.

    A range made only by ``--set`` (``--set space.learning_rate.low=0.05`` with no
    ``learning_rate`` in the file) changes the default range: the rest comes from it.
    """
    if dim.choices:
        values = value if isinstance(value, list) else [value]
        if not values:
            raise check.fail(key, "empty list of choices")
        for i, v in enumerate(values):
            scalar(check, f"{key}.{i}" if isinstance(value, list) else key, dim, v)
        return _one_or_choices(values)
    if isinstance(value, dict):
        check.unknown_keys(value, ("low", "high", "log"), key)
        if isinstance(dim.default, Range) and key in check.raw.created:
            value = {**dim.default.to_dict(), **value}
        for needed in ("low", "high"):
            if needed not in value:
                raise check.fail(f"{key}.{needed}", "a range needs both low and high")
        low = scalar(check, f"{key}.low", dim, value["low"])
        high = scalar(check, f"{key}.high", dim, value["high"])
        if low is None or high is None:
            raise check.fail(key, "a range cannot be off; use a list such as [off, 3, 4]")
        log = value.get("log", dim.log)
        if not isinstance(log, bool):
            raise check.fail(f"{key}.log", f"must be true or false, got {describe(log)}")
        if low > high:
            raise check.fail(key, f"low ({low:g}) is greater than high ({high:g})")
        if log and low <= 0:
            raise check.fail(f"{key}.low", f"a log range needs low > 0, got {low:g}")
        return Fixed(low) if low == high else Range(low, high, log)
    if isinstance(value, list):
        if not value:
            raise check.fail(key, "empty list of choices")
        values = [scalar(check, f"{key}.{i}", dim, v) for i, v in enumerate(value)]
        if dim.can_be_off and set(values) == {None}:
            return None
        return _one_or_choices(values)
    fixed = scalar(check, key, dim, value)
    return None if fixed is None else Fixed(fixed)


def parse_space(check: Checker, dimensions: Sequence[Dimension], raw: Mapping[str, Any]
                ) -> dict[str, Param | None]:
    """The ``space`` mapping: what the sweep writes, the family's default elsewhere."""
    check.unknown_keys(raw, tuple(d.name for d in dimensions), "space")
    space = defaults(dimensions)
    for dim in dimensions:
        if dim.name in raw:
            param = parse_param(check, f"space.{dim.name}", dim, raw[dim.name])
            if param is None and not dim.can_be_off:
                raise check.fail(f"space.{dim.name}", "must be given")
            space[dim.name] = param
    return space


def parse_baseline(check: Checker, dimensions: Sequence[Dimension], raw: Mapping[str, Any]
                   ) -> Config:
    """The ``baseline`` section: it may change only the family's ``in_baseline`` dimensions."""
    settable = [d for d in dimensions if d.in_baseline]
    check.unknown_keys(raw, tuple(d.name for d in settable), "baseline")
    return baseline(dimensions, **{d.name: scalar(check, f"baseline.{d.name}", d, raw[d.name])
                                   for d in settable if d.name in raw})


def parse_config(check: Checker, key: str, dimensions: Sequence[Dimension], value: Any,
                 base: Config) -> Config:
    """One configuration of a listed sweep: each conditional dimension given exactly where
    its condition holds; a dimension the baseline section sets, left out, is the baseline's.
    """
    if not isinstance(value, dict):
        raise check.fail(key, f"must be a mapping of fixed values, got {describe(value)}")
    check.unknown_keys(value, tuple(d.name for d in dimensions), key)
    picked: dict[str, Any] = {}
    for dim in dimensions:
        sub = f"{key}.{dim.name}"
        given = dim.name in value
        if given and isinstance(value[dim.name], (dict, list)):
            raise check.fail(sub, "a listed configuration takes single values")
        if dim.when is None:
            picked[dim.name] = scalar(check, sub, dim, value[dim.name]) if given \
                else value_of(dim, base)
            continue
        other = picked[dim.when[0]]
        number = scalar(check, sub, dim, value[dim.name]) if given else None
        if dim.used(picked):
            if not given and dim.in_baseline and dim.used(base):
                number = value_of(dim, base)  # the baseline's (the MLP's SGD momentum)
            elif not given:
                raise check.fail(sub, f"{dim.when[0]} '{other}' needs {dim.name}")
            picked[dim.name] = number
        else:
            if number:
                raise check.fail(sub, f"{dim.when[0]} '{other}' does not use {dim.name}")
            picked[dim.name] = dim.unused
    return _config(dimensions, picked)


def check_grid(check: Checker, dimensions: Sequence[Dimension], space: Space,
               written: Mapping[str, Any]) -> None:
    """A grid takes lists; it expands a dimension only where its condition can hold, so a
    range for a dimension none of the space's values uses is never read."""
    for dim in dimensions:
        param = space.get(dim.name)
        if not isinstance(param, Range):
            continue
        if dim.when is not None:
            other = space.get(dim.when[0])
            if not isinstance(other, Range) and not set(values_of(other)) & set(dim.when[1]):
                continue
        hint = "" if dim.name in written else (
            f" (the default is the range {param.low:g}..{param.high:g}; give a list)")
        raise check.fail(f"space.{dim.name}",
                         f"the grid sampler takes lists of values, not ranges{hint}")


def check_baseline_in_space(check: Checker, dimensions: Sequence[Dimension], base: Config,
                            space: Space, baseline_words: str) -> None:
    """The baseline is every study's first trial, recorded in the space's own distributions
    (Optuna refuses one parameter with two different distributions in a study), so it must
    lie inside the space."""
    for dim in dimensions:
        value, param = value_of(dim, base), space.get(dim.name)
        if not dim.used(base) or contains(param, value):
            continue
        if not dim.in_baseline:
            raise check.fail(f"space.{dim.name}", f"must include {value}: {baseline_words} "
                                                  "is every study's first trial")
        shown = _shown(value)
        allowed = ("off" if param is None else
                   f"{param.low:g}..{param.high:g}" if isinstance(param, Range) else
                   ", ".join(_shown(v) for v in values_of(param)))
        raise check.fail(f"baseline.{dim.name}", f"{shown} is outside space.{dim.name} "
                         f"({allowed}); the baseline is every study's first trial: change "
                         "one of them" + (f"; a list such as [off, 3, 4] allows {dim.name.replace('_', '-')} off"
                                          if dim.can_be_off and value is None else ""))


def _shown(value: Any) -> str:
    return "off" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


# ----------------------------------------------------------------------------- Optuna


def distribution(param: Param) -> BaseDistribution:
    """The Optuna distribution of one parameter of the space."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if isinstance(param, Range):
        return FloatDistribution(param.low, param.high, log=param.log)
    if isinstance(param, Choices):
        return CategoricalDistribution(param.values)
    if isinstance(param.value, (str, bool)):
        return CategoricalDistribution((param.value,))
    return FloatDistribution(param.value, param.value)


def suggest(trial: optuna.Trial, dimensions: Sequence[Dimension], space: Space) -> Config:
    """Ask the sampler for one configuration."""
    from optuna.distributions import CategoricalDistribution

    def pick(dim: Dimension, param: Param) -> Any:
        dist = distribution(param)
        if isinstance(dist, CategoricalDistribution):
            return trial.suggest_categorical(dim.name, dist.choices)
        return trial.suggest_float(dim.name, dist.low, dist.high, log=dist.log)

    return walk(dimensions, space, pick)


def fixed_distributions(config: Config, dimensions: Sequence[Dimension], space: Space
                        ) -> dict[str, BaseDistribution]:
    """Distributions for a configuration chosen in advance (``study.ask(fixed_...)``): the
    space's own, so that the sampler sees one consistent space (config validation keeps the
    baseline inside it; listed and grid configurations are inside by construction)."""
    out: dict[str, BaseDistribution] = {}

    def pick(dim: Dimension, param: Param) -> Any:
        out[dim.name] = distribution(param)
        return value_of(dim, config)

    walk(dimensions, space, pick)
    return out


def config_values(config: Config, dimensions: Sequence[Dimension], space: Space
                  ) -> dict[str, Any]:
    """The param values of ``config`` as the space would record them: only what is sampled."""
    out: dict[str, Any] = {}

    def pick(dim: Dimension, param: Param) -> Any:
        out[dim.name] = value_of(dim, config)
        return out[dim.name]

    walk(dimensions, space, pick)
    return out


def written(config: Config, dimensions: Sequence[Dimension]) -> dict[str, Any]:
    """``config`` as one entry of a listed sweep (``dropsweep export``): every dimension
    its conditions use, ``off`` spelled out."""
    return {d.name: "off" if config[d.name] is None else config[d.name]
            for d in dimensions if d.used(config) and d.name in config}


def listed_space(dimensions: Sequence[Dimension], every: Sequence[Config]
                 ) -> dict[str, Param | None]:
    """The space a list of configurations spans: the choices it lists."""
    space: dict[str, Param | None] = {}
    for dim in dimensions:
        values = [value_of(dim, c) for c in every if dim.used(c)] or [dim.unused]
        if dim.choices:
            values = [v for v in dim.choices if v in values]
        if dim.can_be_off and all(v is None for v in values):
            space[dim.name] = None
        else:
            space[dim.name] = _one_or_choices(values)
    return space


def grid_points(dimensions: Sequence[Dimension], space: Space) -> list[Config]:
    """Every point of a grid over lists, expanding a dimension only where it is used."""

    def expand(picked: dict[str, Any], rest: Sequence[Dimension]) -> Iterator[Config]:
        if not rest:
            yield walk(dimensions, space, lambda d, p: picked[d.name])
            return
        dim, rest = rest[0], rest[1:]
        options = values_of(space.get(dim.name)) if dim.used(picked) else (dim.unused,)
        for value in options:
            yield from expand({**picked, dim.name: value}, rest)

    return list(expand({}, list(dimensions)))


def simplicity(dimensions: Sequence[Dimension], params: Mapping[str, Any]) -> tuple:
    """Sort key, simplest first, from the table's ``simplicity`` marks: earlier choices,
    then the smaller total of the summed dimensions, then dimensions switched off."""
    order = tuple(d.choices.index(params[d.name]) if params.get(d.name) in d.choices
                  else len(d.choices) for d in dimensions if d.simplicity == "order")
    total = sum(float(params.get(d.name) or 0.0) for d in dimensions if d.simplicity == "sum")
    on = tuple(params.get(d.name) is not None for d in dimensions if d.simplicity == "off")
    return (*order, total, *on)


def unique(configs: Sequence[Config]) -> list[Config]:
    return list(dict.fromkeys(configs))



# ----------------------------------------------------------------------------- a sweep's plan


class Plan(Protocol):
    """What a sweep's plan is read from (a :class:`~dropsweep.sweep.config.Sweep` is one):
    its space or list of configurations, its baseline, its family's dimensions, its
    ``search`` section."""

    @property
    def space(self) -> Space | None: ...

    @property
    def configs(self) -> tuple[Config, ...] | None: ...

    @property
    def baseline(self) -> Config: ...

    @property
    def dimensions(self) -> tuple[Dimension, ...]: ...

    @property
    def search(self) -> SearchConfig: ...


def space_of(sweep: Plan) -> Space:
    """The space a sweep searches; a list of configurations becomes the choices it lists."""
    if sweep.space is not None:
        return sweep.space
    assert sweep.configs is not None
    return listed_space(sweep.dimensions, (sweep.baseline, *sweep.configs))


def planned_configs(sweep: Plan) -> list[Config]:
    """Configurations run before (or instead of) sampling: the baseline first, then the list
    or grid, each once."""
    planned = [sweep.baseline]
    if sweep.configs is not None:
        planned += list(sweep.configs)
    elif sweep.search.sampler == "grid":
        assert sweep.space is not None
        planned += grid_points(sweep.dimensions, sweep.space)
    return unique(planned)


def is_exhaustive(sweep: Plan) -> bool:
    """A list or grid sweep ends when every planned configuration has run."""
    return sweep.configs is not None or sweep.search.sampler == "grid"
