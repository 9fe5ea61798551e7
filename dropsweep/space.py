"""From the sweep's ``space`` to Optuna suggestions, define-by-run.

A rate is suggested only where the placement uses it and ``max_norm`` only where the space
turns it on, so a trial's params never carry meaningless values. One walk over the space
serves both the sampler (``suggest``) and the configurations fixed in advance (baseline,
listed configurations, grid points), so both record the same distributions.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
)

from dropsweep.config import Choices, Fixed, Param, Range, SpaceConfig, Sweep, TrialConfig
from dropsweep.records import PLACEMENTS

Pick = Callable[[str, Param], Any]


def _walk(space: SpaceConfig, pick: Pick) -> TrialConfig:
    """The one definition of the conditional space: placement first, then what it uses."""
    placement = pick("placement", space.placement)
    uses_input = placement in ("input", "both")
    uses_hidden = placement in ("hidden", "both")
    input_rate = pick("input_rate", space.input_rate) if uses_input else 0.0
    hidden_rate = pick("hidden_rate", space.hidden_rate) if uses_hidden else 0.0
    learning_rate = pick("learning_rate", space.learning_rate)
    momentum = pick("momentum", space.momentum)
    max_norm = pick("max_norm", space.max_norm) if space.max_norm is not None else None
    return TrialConfig(
        placement=placement,
        input_rate=float(input_rate),
        hidden_rate=float(hidden_rate),
        learning_rate=float(learning_rate),
        momentum=float(momentum),
        max_norm=None if max_norm is None else float(max_norm),
    )


def distribution(param: Param) -> BaseDistribution:
    """The Optuna distribution of one parameter of the space."""
    if isinstance(param, Range):
        return FloatDistribution(param.low, param.high, log=param.log)
    if isinstance(param, Choices):
        return CategoricalDistribution(param.values)
    if isinstance(param.value, str):
        return CategoricalDistribution((param.value,))
    return FloatDistribution(param.value, param.value)


def suggest(trial: optuna.Trial, space: SpaceConfig) -> TrialConfig:
    """Ask the sampler for one configuration."""

    def pick(name: str, param: Param) -> Any:
        dist = distribution(param)
        if isinstance(dist, CategoricalDistribution):
            return trial.suggest_categorical(name, dist.choices)
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log)

    return _walk(space, pick)


def fixed_distributions(config: TrialConfig, space: SpaceConfig) -> dict[str, BaseDistribution]:
    """Distributions for a configuration chosen in advance (``study.ask(fixed_...)``): the
    space's own, so that the sampler sees one consistent space (config validation keeps the
    baseline inside it; listed and grid configurations are inside by construction)."""
    out: dict[str, BaseDistribution] = {}
    wanted = config_values(config, space)

    def pick(name: str, param: Param) -> Any:
        out[name] = distribution(param)
        return wanted[name]

    _walk(space, pick)
    return out


def config_values(config: TrialConfig, space: SpaceConfig) -> dict[str, Any]:
    """The param values of ``config`` as the space would record them."""
    values = config.to_params()
    if space.max_norm is None:
        values.pop("max_norm", None)  # max-norm is not a parameter of this space
    elif "max_norm" not in values:
        values["max_norm"] = None  # "off" is one of the space's choices
    return values


def space_of(sweep: Sweep) -> SpaceConfig:
    """The space a sweep searches; a list of configurations becomes the choices it lists."""
    if sweep.space is not None:
        return sweep.space
    assert sweep.configs is not None
    every = (sweep.baseline, *sweep.configs)

    def choices(values: list[Any]) -> Param:
        unique = tuple(dict.fromkeys(values))
        return Fixed(unique[0]) if len(unique) == 1 else Choices(unique)

    def used(attr: str, flag: str) -> list[Any]:
        vals = [getattr(c, attr) for c in every if getattr(c, flag)]
        return vals or [0.0]

    norms = [c.max_norm for c in every]
    placements = [p for p in PLACEMENTS if p in {c.placement for c in every}]
    return SpaceConfig(
        placement=choices(placements),
        input_rate=choices(used("input_rate", "uses_input")),
        hidden_rate=choices(used("hidden_rate", "uses_hidden")),
        learning_rate=choices([c.learning_rate for c in every]),
        momentum=choices([c.momentum for c in every]),
        max_norm=None if all(n is None for n in norms) else choices(norms),
    )


def grid_points(space: SpaceConfig) -> list[TrialConfig]:
    """Every point of a grid over lists, expanding each rate only where a placement uses it."""

    def values(param: Param | None) -> list[Any]:
        if param is None:
            return [None]
        if isinstance(param, Choices):
            return list(param.values)
        if isinstance(param, Fixed):
            return [param.value]
        raise ValueError("a grid needs lists, not ranges")  # config validation prevents this

    points = []
    for placement in values(space.placement):
        ins = values(space.input_rate) if placement in ("input", "both") else [0.0]
        hids = values(space.hidden_rate) if placement in ("hidden", "both") else [0.0]
        for i, h, lr, m, c in itertools.product(ins, hids, values(space.learning_rate),
                                               values(space.momentum), values(space.max_norm)):
            points.append(TrialConfig(placement, float(i), float(h), float(lr), float(m),
                                      None if c is None else float(c)))
    return points


def planned_configs(sweep: Sweep) -> list[TrialConfig]:
    """Configurations run before (or instead of) sampling: the baseline first, then the list
    or grid, each once."""
    planned = [sweep.baseline]
    if sweep.configs is not None:
        planned += list(sweep.configs)
    elif sweep.search.sampler == "grid":
        assert sweep.space is not None
        planned += grid_points(sweep.space)
    return list(dict.fromkeys(planned))


def is_exhaustive(sweep: Sweep) -> bool:
    """A list or grid sweep ends when every planned configuration has run."""
    return sweep.configs is not None or sweep.search.sampler == "grid"
